import { ElemType } from './elem-type.js';
import type { Fixture } from './fixture.js';
import { GraphBuilder } from './graph-builder.js';
import { mulberry32, type Rng } from './prng.js';

/** Options for {@link cnnModel}. */
export interface CnnOptions {
  /** Side of the square single-channel image. Default 12. */
  readonly size?: number;
  /** Channels of the two 3×3 convolutions. Default [8, 16]. */
  readonly channels?: readonly [number, number];
  /** Width of the hidden fully connected layer. Default 128. */
  readonly hidden?: number;
  /** Classes (width of `logits`). Default 10. */
  readonly classes?: number;
  readonly seed?: number;
}

function glorot(rng: Rng, count: number, fanIn: number, fanOut: number): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  return Float32Array.from({ length: count }, () => rng.uniform(-limit, limit));
}

/**
 * A small image classifier: `image` float32 [batch, 1, size, size] → Conv 3×3
 * → Relu → Conv 3×3 → Relu → Flatten → Gemm (hidden) → Relu → Gemm →
 * `logits` float32 [batch, classes]. Most weights sit in the first Gemm, as
 * in the classifiers quantization pays off on. Seeded Glorot weights.
 */
export function cnnModel(o: CnnOptions = {}): Fixture {
  const { size = 12, channels = [8, 16], hidden = 128, classes = 10, seed = 7 } = o;
  const rng = mulberry32(seed);
  const [c1, c2] = channels;
  const side = size - 4;
  const flat = c2 * side * side;
  const g = new GraphBuilder('cnn')
    .input('image', ElemType.FLOAT, ['batch', 1, size, size])
    .output('logits', ElemType.FLOAT, ['batch', classes])
    .initializer('conv1_w', ElemType.FLOAT, [c1, 1, 3, 3], glorot(rng, c1 * 9, 9, c1 * 9))
    .initializer('conv1_b', ElemType.FLOAT, [c1], Float32Array.from({ length: c1 }, () => rng.uniform(-0.05, 0.05)))
    .initializer('conv2_w', ElemType.FLOAT, [c2, c1, 3, 3], glorot(rng, c2 * c1 * 9, c1 * 9, c2 * 9))
    .initializer('conv2_b', ElemType.FLOAT, [c2], Float32Array.from({ length: c2 }, () => rng.uniform(-0.05, 0.05)))
    // Gemm with transB = 1: weights stored [out, in], as PyTorch exports Linear layers.
    .initializer('fc1_w', ElemType.FLOAT, [hidden, flat], glorot(rng, hidden * flat, flat, hidden))
    .initializer('fc1_b', ElemType.FLOAT, [hidden], Float32Array.from({ length: hidden }, () => rng.uniform(-0.05, 0.05)))
    .initializer('fc2_w', ElemType.FLOAT, [classes, hidden], glorot(rng, classes * hidden, hidden, classes))
    .initializer('fc2_b', ElemType.FLOAT, [classes], Float32Array.from({ length: classes }, () => rng.uniform(-0.05, 0.05)))
    .node('Conv', ['image', 'conv1_w', 'conv1_b'], ['c1'], { kernel_shape: { ints: [3, 3] } })
    .node('Relu', ['c1'], ['r1'])
    .node('Conv', ['r1', 'conv2_w', 'conv2_b'], ['c2'], { kernel_shape: { ints: [3, 3] } })
    .node('Relu', ['c2'], ['r2'])
    .node('Flatten', ['r2'], ['flat'], { axis: { int: 1 } })
    .node('Gemm', ['flat', 'fc1_w', 'fc1_b'], ['h'], { transB: { int: 1 } })
    .node('Relu', ['h'], ['hr'])
    .node('Gemm', ['hr', 'fc2_w', 'fc2_b'], ['logits'], { transB: { int: 1 } });
  return {
    bytes: g.toModel(),
    inputs: [{ name: 'image', elemType: ElemType.FLOAT, dims: ['batch', 1, size, size] }],
    outputs: [{ name: 'logits', elemType: ElemType.FLOAT, dims: ['batch', classes] }],
  };
}
