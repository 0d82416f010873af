/**
 * Runs reference rows through a model in ONNX Runtime (inside the disposable
 * validation child) and collects the output values the routers would
 * summarize: the flattened first-row values of the outputs in declaration
 * order, at most 32 per row.
 */
import * as ort from 'onnxruntime-node';
import type { TensorSpec } from '../../libs/proto/index.js';
import { datatype } from '../../libs/tensor/index.js';
import { MAX_FEATURES, type ReferenceLayout } from './reference-parse.js';

/** Reference rows run through the model for the output profile. */
export const MODEL_RUN_ROWS = 20_000;
/** Rows per ONNX Runtime run for a batchable model. */
const RUN_BATCH = 512;

export interface OutputColumns {
  /** `<output>[<i>]` per column. */
  names: string[];
  /** Column j's value for each run row (NaN where a run gave none). */
  columns: Float64Array[];
}

/**
 * Runs `rows` (full-width rows of `layout`) through `session`, in batches
 * when the model is batchable, else one row per run. Throws ONNX Runtime's
 * error when a run fails.
 */
export async function runReference(
  session: ort.InferenceSession,
  layout: ReferenceLayout,
  outputs: readonly TensorSpec[],
  rows: readonly Float64Array[],
  batchable: boolean,
): Promise<OutputColumns> {
  const step = batchable ? RUN_BATCH : 1;
  let plan: { name: string; take: number }[] | null = null;
  let columns: Float64Array[] = [];
  for (let start = 0; start < rows.length; start += step) {
    const batch = rows.slice(start, start + step);
    const feeds: Record<string, ort.Tensor> = {};
    for (const s of layout.inputs) feeds[s.name] = inputTensor(s.datatype, batch, s.offset, s.perRow, [batch.length, ...s.rowDims]);
    const result = await session.run(feeds);
    if (!plan) {
      plan = planColumns(outputs, result);
      columns = Array.from({ length: plan.reduce((a, p) => a + p.take, 0) }, () => new Float64Array(rows.length).fill(NaN));
    }
    let col = 0;
    for (const p of plan) {
      const t = result[p.name]!;
      const perRow = t.dims.length > 1 ? t.dims.slice(1).reduce((a, b) => a * b, 1) : 1;
      const data = t.data as ArrayLike<number | bigint | boolean>;
      for (let r = 0; r < batch.length; r++) {
        for (let j = 0; j < p.take && j < perRow; j++) {
          const v = data[r * perRow + j];
          if (v !== undefined) columns[col + j]![start + r] = Number(v);
        }
      }
      col += p.take;
    }
  }
  const names = (plan ?? []).flatMap((p) => Array.from({ length: p.take }, (_, i) => `${p.name}[${i}]`));
  return { names, columns };
}

/** Which output values make the summary: per output, how many of its first-row values (32 in all at most). */
function planColumns(outputs: readonly TensorSpec[], result: ort.InferenceSession.OnnxValueMapType): { name: string; take: number }[] {
  const plan: { name: string; take: number }[] = [];
  let total = 0;
  for (const o of outputs) {
    const t = result[o.name];
    if (!t || !datatype(o.datatype)) continue;
    const perRow = t.dims.length > 1 ? t.dims.slice(1).reduce((a, b) => a * b, 1) : 1;
    const take = Math.min(perRow, MAX_FEATURES - total);
    if (take <= 0) break;
    plan.push({ name: o.name, take });
    total += take;
  }
  return plan;
}

export function inputTensor(oipType: string, rows: readonly Float64Array[], offset: number, perRow: number, dims: number[]): ort.Tensor {
  const n = rows.length * perRow;
  const fill = <T extends { [i: number]: number | bigint }>(a: T, conv: (v: number) => number | bigint): T => {
    rows.forEach((row, r) => {
      for (let j = 0; j < perRow; j++) a[r * perRow + j] = conv(row[offset + j]!);
    });
    return a;
  };
  const num = (v: number) => v;
  switch (oipType) {
    case 'FP32':
      return new ort.Tensor('float32', fill(new Float32Array(n), num), dims);
    case 'FP64':
      return new ort.Tensor('float64', fill(new Float64Array(n), num), dims);
    case 'INT64':
      return new ort.Tensor('int64', fill(new BigInt64Array(n), BigInt), dims);
    case 'UINT64':
      return new ort.Tensor('uint64', fill(new BigUint64Array(n), BigInt), dims);
    case 'BOOL':
      return new ort.Tensor('bool', fill(new Uint8Array(n), num), dims);
    default: {
      const dt = datatype(oipType);
      if (!dt) throw new Error(`input datatype ${oipType} cannot be fed`);
      const Ctor = dt.array as unknown as new (n: number) => { [i: number]: number };
      return new ort.Tensor(dt.ort, fill(new Ctor(n), num) as unknown as Int32Array, dims);
    }
  }
}
