/**
 * The one request `infermesh tune` sends under load: from `--input` (the
 * object or tensor JSON forms of `infermesh infer`), or, without it, one row
 * of zeros shaped by the model's input metadata.
 */
import type { InputTensor } from '../../../libs/client/index.js';
import { datatype, elementCount } from '../../../libs/tensor/index.js';
import { inputText, parseInput, tensorsFromObject, type InputMetadata, type ParsedInput } from '../infer-input.js';
import { UsageError } from '../output.js';

/** Reads `--input` (JSON text, or `@path` like `infer`) and parses it; undefined when not given. */
export async function readTuneInput(input: string | undefined): Promise<ParsedInput | undefined> {
  if (input === undefined) return undefined;
  return parseInput(await inputText(input));
}

/** The request's tensors: the parsed `--input`, or zeros for every input of the model. */
export function requestTensors(parsed: ParsedInput | undefined, inputs: readonly InputMetadata[]): InputTensor[] {
  if (parsed?.form === 'tensors') return parsed.tensors;
  if (parsed?.form === 'object') return tensorsFromObject(parsed.values, inputs);
  return zeroTensors(inputs);
}

/** One row of zeros per input: every dynamic dimension (-1) becomes 1. */
export function zeroTensors(inputs: readonly InputMetadata[]): InputTensor[] {
  if (inputs.length === 0) throw new UsageError('the model declares no inputs; pass --input');
  return inputs.map((i) => {
    const dt = datatype(i.datatype);
    if (!dt) throw new UsageError(`input ${i.name} has datatype ${i.datatype}, for which no zeros can be made; pass --input`);
    const shape = i.shape.map((d) => (d < 0 ? 1 : d));
    const zero = dt.oip === 'BOOL' ? false : 0;
    return { name: i.name, datatype: i.datatype, shape, data: new Array<number | boolean>(elementCount(shape)).fill(zero) };
  });
}

/** Rows in one request: the leading dimension of the first input (1 for a scalar). */
export function rowsPerRequest(tensors: readonly InputTensor[]): number {
  return tensors[0]?.shape[0] ?? 1;
}
