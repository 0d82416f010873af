import { ElemType } from './elem-type.js';
import type { Fixture } from './fixture.js';
import { GraphBuilder } from './graph-builder.js';

/**
 * Side of the square matrices in the chain: big enough that the MatMul, not
 * per-node overhead, dominates (128 spent a third of its time in overhead and
 * needed 8× the nodes, which slows session creation).
 */
const SIDE = 256;

/**
 * Measured cost of one 256×256 MatMul in this chain on one ONNX Runtime
 * thread (intraOpNumThreads 1, onnxruntime-node 1.30, 2-core AMD EPYC VM):
 * about 0.4 ms, i.e. ~85 GFLOP/s. A faster or busier host changes the real duration;
 * the model is only meant to be "slow", not a clock; a test that needs a duration passes
 * `msPerMatmul` measured on its own host (test/harness/slow-model.ts).
 */
const MS_PER_MATMUL = 0.4;

/** What {@link slowModel} returns: y = x + 1, computed the long way. */
export interface SlowModel extends Fixture {
  /** MatMuls in the chain; run time grows linearly with it. */
  readonly matmuls: number;
}

/**
 * A model that takes roughly `millis` ms per run on one thread, for tests of
 * deadlines, cancellation and queueing. Input `x` float32 [batch, 1], output
 * `y` float32 [batch, 1] = x + 1.
 *
 * The time goes into a chain of `millis / 0.4` MatMuls on a fixed 256×256
 * tensor, so it does not grow with the batch. The chain is seeded from the
 * input (a mean of `x`) so ONNX Runtime cannot constant-fold it at load, and
 * its result is added to `y` multiplied by zero so `y` stays exactly x + 1
 * (NaN only if `x` holds Inf/NaN).
 */
export function slowModel({ millis = 100, msPerMatmul = MS_PER_MATMUL }: { millis?: number; msPerMatmul?: number } = {}): SlowModel {
  const matmuls = Math.max(1, Math.round(millis / msPerMatmul));
  // Every entry 1/256: a power of two, so the chain's values stay exact.
  const square = new Float32Array(SIDE * SIDE).fill(1 / SIDE);
  const g = new GraphBuilder('slow')
    .input('x', ElemType.FLOAT, ['batch', 1])
    .output('y', ElemType.FLOAT, ['batch', 1])
    .initializer('square', ElemType.FLOAT, [SIDE, SIDE], square)
    .initializer('zero', ElemType.FLOAT, [], new Float32Array([0]))
    .initializer('one', ElemType.FLOAT, [], new Float32Array([1]))
    .node('ReduceMean', ['x'], ['seed'], { keepdims: { int: 0 } })
    .node('Mul', ['square', 'seed'], ['h0']);
  for (let i = 0; i < matmuls; i++) g.node('MatMul', [`h${i}`, 'square'], [`h${i + 1}`]);
  g.node('ReduceMax', [`h${matmuls}`], ['peak'], { keepdims: { int: 0 } })
    .node('Mul', ['peak', 'zero'], ['nothing'])
    .node('Add', ['one', 'nothing'], ['offset'])
    .node('Add', ['x', 'offset'], ['y']);
  return {
    bytes: g.toModel(),
    inputs: [{ name: 'x', elemType: ElemType.FLOAT, dims: ['batch', 1] }],
    outputs: [{ name: 'y', elemType: ElemType.FLOAT, dims: ['batch', 1] }],
    matmuls,
  };
}
