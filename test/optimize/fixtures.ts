/** Models and reference rows shared by the optimize tests. */
import * as ort from 'onnxruntime-node';
import { mulberry32, type Fixture } from '../../libs/onnx-builder/index.js';

/** Values per row of a fixture's single input. */
export function widthOf(f: Fixture): number {
  return f.inputs[0]!.dims.slice(1).reduce<number>((a, b) => a * Number(b), 1);
}

/** `rows` rows of standard-normal values (seeded), row-major. */
export function normalRows(rows: number, width: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: rows * width }, () => rng.normal());
}

/** The rows as a reference CSV (header f0…fN). */
export function csvOf(values: Float32Array, width: number): Buffer {
  const lines = [Array.from({ length: width }, (_, i) => `f${i}`).join(',')];
  for (let r = 0; r < values.length / width; r++) lines.push(Array.from(values.subarray(r * width, (r + 1) * width), (v) => v.toPrecision(7)).join(','));
  return Buffer.from(`${lines.join('\n')}\n`);
}

/** Runs `bytes` in-process (what a replica's ONNX Runtime computes) on rows of the fixture's single input; the first output's values. */
export async function runInProcess(bytes: Uint8Array, f: Fixture, values: Float32Array): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(Buffer.from(bytes), { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
  try {
    const width = widthOf(f);
    const dims = [values.length / width, ...f.inputs[0]!.dims.slice(1).map(Number)];
    const out = await s.run({ [f.inputs[0]!.name]: new ort.Tensor('float32', values, dims) });
    return out[f.outputs[0]!.name]!.data as Float32Array;
  } finally {
    await s.release();
  }
}
