import { ElemType } from './elem-type.js';
import type { Fixture } from './fixture.js';
import { GraphBuilder } from './graph-builder.js';

/**
 * A feature standardizer, the first step of a pipeline:
 * `features` float32 [batch, width] → (features − mean) / std → `output`
 * float32 [batch, width] (input and output names as given).
 */
export function standardizerModel(mean: Float32Array, std: Float32Array, names: { input?: string; output?: string } = {}): Fixture {
  if (mean.length !== std.length) throw new RangeError('onnx-builder: mean and std must have the same width');
  const width = mean.length;
  const input = names.input ?? 'features';
  const output = names.output ?? 'standardized';
  const g = new GraphBuilder('standardizer')
    .input(input, ElemType.FLOAT, ['batch', width])
    .output(output, ElemType.FLOAT, ['batch', width])
    .initializer('mean', ElemType.FLOAT, [width], mean)
    .initializer('std', ElemType.FLOAT, [width], std)
    .node('Sub', [input, 'mean'], ['centered'])
    .node('Div', ['centered', 'std'], [output]);
  return {
    bytes: g.toModel(),
    inputs: [{ name: input, elemType: ElemType.FLOAT, dims: ['batch', width] }],
    outputs: [{ name: output, elemType: ElemType.FLOAT, dims: ['batch', width] }],
  };
}
