/**
 * A slow model whose run time is measured on this host, for tests whose
 * logic depends on how long one run takes (deadlines, queue admission).
 * slowModel's built-in cost per MatMul was measured on one CPU; another
 * CPU kind runs the same chain two or three times faster, and then
 * "12 runs cannot fit in 1.5 s" no longer holds.
 */
import * as ort from 'onnxruntime-node';
import { slowModel, type SlowModel } from '../../libs/onnx-builder/index.js';

/**
 * A slowModel sized so that one run takes about `millis` ms on one ONNX
 * Runtime thread here. The cost per MatMul is the fastest of a few timed runs
 * of a probe model: the fastest is the least disturbed by other load, so the
 * real runs take at least about `millis`.
 */
export async function calibratedSlowModel(millis: number): Promise<SlowModel> {
  const probe = slowModel({ millis: 40 });
  const session = await ort.InferenceSession.create(probe.bytes, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' });
  try {
    const feeds = { x: new ort.Tensor('float32', new Float32Array([3]), [1, 1]) };
    await session.run(feeds);
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await session.run(feeds);
      best = Math.min(best, performance.now() - t0);
    }
    return slowModel({ millis, msPerMatmul: best / probe.matmuls });
  } finally {
    await session.release();
  }
}
