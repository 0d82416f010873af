import { ElemType } from './elem-type.js';
import type { Fixture } from './fixture.js';
import { GraphBuilder } from './graph-builder.js';
import { mulberry32 } from './prng.js';

/** One dense layer: y = x · weight + bias, weight row-major [inDim, outDim]. */
export interface DenseLayer {
  readonly inDim: number;
  readonly outDim: number;
  readonly weight: Float32Array;
  readonly bias: Float32Array;
}

/** Options for {@link mlpModel}. */
export interface MlpOptions {
  /** Width of `features`. Default 8. */
  readonly inputs?: number;
  /** Widths of the Relu layers. Default [16]. */
  readonly hidden?: readonly number[];
  /** Width of `score`. Default 1. */
  readonly outputs?: number;
  /** PRNG seed for the weights. Default 1. */
  readonly seed?: number;
  /** Sigmoid on the last layer. Default true. */
  readonly sigmoid?: boolean;
}

/** What {@link mlpModel} returns: the bytes plus the weights inside them. */
export interface MlpModel extends Fixture {
  readonly layers: readonly DenseLayer[];
  readonly sigmoid: boolean;
  /**
   * The same network in plain JS (float64 arithmetic on the float32 weights):
   * `features` is row-major [batch, inputs]; returns row-major [batch, outputs].
   */
  forward(features: ArrayLike<number>): Float64Array;
}

function denseForward(layer: DenseLayer, x: Float64Array, relu: boolean): Float64Array {
  const batch = x.length / layer.inDim;
  const y = new Float64Array(batch * layer.outDim);
  for (let r = 0; r < batch; r++) {
    for (let o = 0; o < layer.outDim; o++) {
      let acc = layer.bias[o]!;
      for (let i = 0; i < layer.inDim; i++) acc += x[r * layer.inDim + i]! * layer.weight[i * layer.outDim + o]!;
      y[r * layer.outDim + o] = relu && acc < 0 ? 0 : acc;
    }
  }
  return y;
}

/**
 * A multilayer perceptron with seeded weights: input `features` float32
 * [batch, inputs] → (MatMul + Add + Relu) per hidden layer → MatMul + Add
 * (+ Sigmoid) → output `score` float32 [batch, outputs]. Weights are
 * Glorot-uniform from mulberry32(seed), so the same options give the same bytes.
 */
export function mlpModel(options: MlpOptions = {}): MlpModel {
  const { inputs = 8, hidden = [16], outputs = 1, seed = 1, sigmoid = true } = options;
  const rng = mulberry32(seed);
  const widths = [inputs, ...hidden, outputs];
  const g = new GraphBuilder('mlp')
    .input('features', ElemType.FLOAT, ['batch', inputs])
    .output('score', ElemType.FLOAT, ['batch', outputs]);
  const layers: DenseLayer[] = [];
  let current = 'features';
  for (let l = 0; l + 1 < widths.length; l++) {
    const inDim = widths[l]!;
    const outDim = widths[l + 1]!;
    const limit = Math.sqrt(6 / (inDim + outDim));
    const weight = Float32Array.from({ length: inDim * outDim }, () => rng.uniform(-limit, limit));
    const bias = Float32Array.from({ length: outDim }, () => rng.uniform(-0.1, 0.1));
    layers.push({ inDim, outDim, weight, bias });
    const last = l + 2 === widths.length;
    const pre = last && !sigmoid ? 'score' : `pre${l}`;
    g.initializer(`w${l}`, ElemType.FLOAT, [inDim, outDim], weight)
      .initializer(`b${l}`, ElemType.FLOAT, [outDim], bias)
      .node('MatMul', [current, `w${l}`], [`mm${l}`])
      .node('Add', [`mm${l}`, `b${l}`], [pre]);
    if (!last) g.node('Relu', [pre], [`h${l}`]);
    else if (sigmoid) g.node('Sigmoid', [pre], ['score']);
    current = `h${l}`;
  }
  return {
    bytes: g.toModel(),
    inputs: [{ name: 'features', elemType: ElemType.FLOAT, dims: ['batch', inputs] }],
    outputs: [{ name: 'score', elemType: ElemType.FLOAT, dims: ['batch', outputs] }],
    layers,
    sigmoid,
    forward(features) {
      let x: Float64Array = Float64Array.from(features);
      layers.forEach((layer, l) => {
        x = denseForward(layer, x, l + 1 < layers.length);
      });
      return sigmoid ? x.map((v) => 1 / (1 + Math.exp(-v))) : x;
    },
  };
}

/**
 * A compute-bound MLP for batching benchmarks: `features` float32
 * [batch, 256] → 1024 → 1024 → `score` float32 [batch, 1] with Sigmoid
 * (~1.3 M weights, ~2.6 MFLOP per row).
 */
export function wideMlpModel({ seed = 1 }: { seed?: number } = {}): MlpModel {
  return mlpModel({ inputs: 256, hidden: [1024, 1024], outputs: 1, seed, sigmoid: true });
}
