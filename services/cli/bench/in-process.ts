import * as ort from 'onnxruntime-node';

export interface InProcessResult {
  calls: number;
  rps: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
}

/**
 * ONNX Runtime called in-process, one call at a time on this thread: the
 * floor under any serving system for this model and input.
 */
export async function benchInProcess(model: Uint8Array, feeds: Record<string, ort.Tensor>, calls: number): Promise<InProcessResult> {
  const s = await ort.InferenceSession.create(Buffer.from(model), { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
  for (let i = 0; i < Math.min(1000, calls); i++) await s.run(feeds);
  const lat = new Float64Array(calls);
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) {
    const a = performance.now();
    await s.run(feeds);
    lat[i] = (performance.now() - a) * 1000;
  }
  const seconds = (performance.now() - t0) / 1000;
  await s.release();
  lat.sort();
  const q = (p: number) => Math.round(lat[Math.min(calls - 1, Math.floor(p * calls))]!);
  return { calls, rps: calls / seconds, p50Us: q(0.5), p99Us: q(0.99), p999Us: q(0.999) };
}
