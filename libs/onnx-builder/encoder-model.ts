import { ElemType } from './elem-type.js';
import type { Fixture } from './fixture.js';
import { GraphBuilder } from './graph-builder.js';
import { mulberry32 } from './prng.js';

/** Options for {@link encoderModel}. */
export interface EncoderOptions {
  /** Tokens per row. Default 8. */
  readonly seq?: number;
  /** Model width. Default 64. */
  readonly dim?: number;
  /** Feed-forward width. Default 4 × dim. */
  readonly ffn?: number;
  /** Classes (width of `logits`). Default 4. */
  readonly classes?: number;
  readonly seed?: number;
}

/**
 * One transformer encoder block with a classifier head:
 * `tokens` float32 [batch, seq, dim] → single-head self-attention
 * (MatMul Q/K/V, MatMul Q·Kᵀ scaled, Softmax, MatMul ·V, output MatMul) →
 * residual Add → LayerNormalization → feed-forward (MatMul, Relu, MatMul) →
 * residual Add → LayerNormalization → ReduceMean over the tokens → MatMul →
 * `logits` float32 [batch, classes]. Seeded weights (opset 17).
 */
export function encoderModel(o: EncoderOptions = {}): Fixture {
  const { seq = 8, dim = 64, classes = 4, seed = 11 } = o;
  const ffn = o.ffn ?? 4 * dim;
  const rng = mulberry32(seed);
  const mat = (rows: number, cols: number, gain = 1) => {
    const limit = gain * Math.sqrt(6 / (rows + cols));
    return Float32Array.from({ length: rows * cols }, () => rng.uniform(-limit, limit));
  };
  const vec = (n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => rng.uniform(lo, hi));
  const g = new GraphBuilder('encoder')
    .input('tokens', ElemType.FLOAT, ['batch', seq, dim])
    .output('logits', ElemType.FLOAT, ['batch', classes])
    .initializer('wq', ElemType.FLOAT, [dim, dim], mat(dim, dim))
    .initializer('wk', ElemType.FLOAT, [dim, dim], mat(dim, dim))
    .initializer('wv', ElemType.FLOAT, [dim, dim], mat(dim, dim))
    .initializer('wo', ElemType.FLOAT, [dim, dim], mat(dim, dim))
    .initializer('scale', ElemType.FLOAT, [], new Float32Array([1 / Math.sqrt(dim)]))
    .initializer('ln1_g', ElemType.FLOAT, [dim], vec(dim, 0.9, 1.1))
    .initializer('ln1_b', ElemType.FLOAT, [dim], vec(dim, -0.05, 0.05))
    .initializer('w1', ElemType.FLOAT, [dim, ffn], mat(dim, ffn))
    .initializer('b1', ElemType.FLOAT, [ffn], vec(ffn, -0.05, 0.05))
    .initializer('w2', ElemType.FLOAT, [ffn, dim], mat(ffn, dim))
    .initializer('b2', ElemType.FLOAT, [dim], vec(dim, -0.05, 0.05))
    .initializer('ln2_g', ElemType.FLOAT, [dim], vec(dim, 0.9, 1.1))
    .initializer('ln2_b', ElemType.FLOAT, [dim], vec(dim, -0.05, 0.05))
    // A head with a larger gain keeps the classes apart, as a trained head would.
    .initializer('wc', ElemType.FLOAT, [dim, classes], mat(dim, classes, 4))
    .initializer('bc', ElemType.FLOAT, [classes], vec(classes, -0.1, 0.1))
    .node('MatMul', ['tokens', 'wq'], ['q'])
    .node('MatMul', ['tokens', 'wk'], ['k'])
    .node('MatMul', ['tokens', 'wv'], ['v'])
    .node('Transpose', ['k'], ['kt'], { perm: { ints: [0, 2, 1] } })
    .node('MatMul', ['q', 'kt'], ['qk'])
    .node('Mul', ['qk', 'scale'], ['qk_scaled'])
    .node('Softmax', ['qk_scaled'], ['attn'], { axis: { int: -1 } })
    .node('MatMul', ['attn', 'v'], ['ctx'])
    .node('MatMul', ['ctx', 'wo'], ['attn_out'])
    .node('Add', ['tokens', 'attn_out'], ['res1'])
    .node('LayerNormalization', ['res1', 'ln1_g', 'ln1_b'], ['n1'], { axis: { int: -1 }, epsilon: { float: 1e-5 } })
    .node('MatMul', ['n1', 'w1'], ['f1'])
    .node('Add', ['f1', 'b1'], ['f1b'])
    .node('Relu', ['f1b'], ['f1r'])
    .node('MatMul', ['f1r', 'w2'], ['f2'])
    .node('Add', ['f2', 'b2'], ['f2b'])
    .node('Add', ['n1', 'f2b'], ['res2'])
    .node('LayerNormalization', ['res2', 'ln2_g', 'ln2_b'], ['n2'], { axis: { int: -1 }, epsilon: { float: 1e-5 } })
    .node('ReduceMean', ['n2'], ['pooled'], { axes: { ints: [1] }, keepdims: { int: 0 } })
    .node('MatMul', ['pooled', 'wc'], ['lc'])
    .node('Add', ['lc', 'bc'], ['logits']);
  // ReduceMean takes its axes as an input only from opset 18: keep the attribute form for opset 17.
  return {
    bytes: g.toModel({ opset: 17 }),
    inputs: [{ name: 'tokens', elemType: ElemType.FLOAT, dims: ['batch', seq, dim] }],
    outputs: [{ name: 'logits', elemType: ElemType.FLOAT, dims: ['batch', classes] }],
  };
}
