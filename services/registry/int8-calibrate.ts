/**
 * int8 with calibration, for `optimize --method int8`: the gate's rows run
 * through the original model once, which gives (1) each quantized node's
 * input statistics (XᵀX), so weights are rounded GPTQ-style, and (2) the
 * original's decisions and their margins. Then the plan: every node
 * quantizes its activations per call (dynamic int8, the fast kernels) unless
 * the expected disagreement of the candidate on those rows is above the
 * budget; nodes then move, the most sensitive first, to int8 weights
 * dequantized at load (float arithmetic, no activation error) until it is
 * within. The head stays float when small, as in the data-free default.
 *
 * The expected disagreement is smooth, not a count of flipped rows: the
 * candidate's change of each row's decision margin (top-1 minus runner-up,
 * or score minus threshold) has an RMS σ over the rows, and a row with
 * margin m flips with probability Φ(−|m|/σ); their mean. On 600 rows a
 * count moves by whole rows from draw to draw, this does not.
 */
import * as ort from 'onnxruntime-node';
import { defaultInt8Plan, inputGram, int8Sites, quantizeInt8, type Int8Mode, type Int8Site, type TransformResult } from '../../libs/onnx-builder/index.js';
import { onnx } from '../../libs/proto/index.js';

/** What {@link calibratedInt8} chose. */
export interface CalibratedInt8 extends TransformResult {
  /** Mode of each quantized node's weight (by weight name), in graph order. */
  readonly modes: [string, Int8Mode][];
  /** The chosen candidate's expected disagreement on the calibration rows (0–1). */
  readonly expectedDisagreement: number;
  readonly calibrationRows: number;
}

const SESSION: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' };

/** Φ(x), the standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7). */
function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return x >= 0 ? (1 + erf) / 2 : (1 - erf) / 2;
}

/** Per row: the original's decision pair (top-1 and runner-up class, or -1 for a threshold) and margin. */
interface Margins {
  rows: number;
  threshold: number;
  width: number;
  top: Int32Array;
  second: Int32Array;
  margin: Float64Array;
}

function marginsOf(values: Float32Array, rows: number, threshold: number): Margins {
  const width = values.length / rows;
  const top = new Int32Array(rows);
  const second = new Int32Array(rows);
  const margin = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    if (width === 1) {
      top[r] = -1;
      margin[r] = values[r]! - threshold;
      continue;
    }
    let a = 0;
    for (let j = 1; j < width; j++) if (values[r * width + j]! > values[r * width + a]!) a = j;
    let b = a === 0 ? 1 : 0;
    for (let j = 0; j < width; j++) if (j !== a && values[r * width + j]! > values[r * width + b]!) b = j;
    top[r] = a;
    second[r] = b;
    margin[r] = values[r * width + a]! - values[r * width + b]!;
  }
  return { rows, threshold, width, top, second, margin };
}

/** Mean over rows of Φ(−|m|/σ), σ the RMS change of the margins from the original's to the candidate's. */
function expectedDisagreement(m: Margins, candidate: Float32Array): number {
  let sq = 0;
  for (let r = 0; r < m.rows; r++) {
    const c = m.width === 1 ? candidate[r]! - m.threshold : candidate[r * m.width + m.top[r]!]! - candidate[r * m.width + m.second[r]!]!;
    const d = c - m.margin[r]!;
    sq += d * d;
  }
  const sigma = Math.sqrt(sq / m.rows);
  if (sigma === 0) return 0;
  let p = 0;
  for (let r = 0; r < m.rows; r++) p += normalCdf(-Math.abs(m.margin[r]!) / sigma);
  return p / m.rows;
}

/**
 * int8 of `model` calibrated on `batches` (feeds of the model's inputs; the
 * gate's rows), decided on output `output` by `threshold` (one score) or
 * argmax, within `budget` expected disagreement where the plan allows.
 */
export async function calibratedInt8(model: onnx.ModelProto, batches: Record<string, ort.Tensor>[], output: string, threshold: number, budget: number): Promise<CalibratedInt8> {
  const sites = int8Sites(model);
  if (sites.length === 0) return { ...quantizeInt8(model), modes: [], expectedDisagreement: 0, calibrationRows: 0 };
  // The original, with every quantized node's input as an extra output.
  const exposed = onnx.ModelProto.decode(onnx.ModelProto.encode(model).finish());
  const g = exposed.graph!;
  const have = new Set(g.output.map((o) => o.name));
  const names = [...new Set(sites.map((s) => s.node.input[0]!))];
  for (const name of names) {
    if (!have.has(name)) g.output.push(onnx.ValueInfoProto.fromPartial({ name, type: { value: { $case: 'tensorType', value: { elemType: onnx.TensorProto_DataType.FLOAT } } } }));
  }
  const gram = new Map<string, Float64Array>();
  const originalOut: Float32Array[] = [];
  const session = await ort.InferenceSession.create(Buffer.from(onnx.ModelProto.encode(exposed).finish()), SESSION);
  try {
    for (const feeds of batches) {
      const out = await session.run(feeds);
      originalOut.push(Float32Array.from(out[output]!.data as ArrayLike<number>, Number));
      for (const name of names) {
        const t = out[name]!;
        const k = t.dims[t.dims.length - 1]!;
        gram.set(name, inputGram(t.data as Float32Array, k, gram.get(name)));
      }
    }
  } finally {
    await session.release();
  }
  const rows = batches.reduce((n, f) => n + Number(Object.values(f)[0]!.dims[0]), 0);
  const margins = marginsOf(concat(originalOut), rows, threshold);
  const cache = new Map<string, Int8Array>();
  const build = (mode: (site: Int8Site) => Int8Mode) => quantizeInt8(model, { plan: mode, gram, cache });
  const score = async (r: TransformResult): Promise<number> => {
    const s = await ort.InferenceSession.create(Buffer.from(onnx.ModelProto.encode(r.model).finish()), SESSION);
    try {
      const outs: Float32Array[] = [];
      for (const feeds of batches) outs.push(Float32Array.from((await s.run(feeds))[output]!.data as ArrayLike<number>, Number));
      return expectedDisagreement(margins, concat(outs));
    } finally {
      await s.release();
    }
  };
  // Nodes that may quantize their activations: all but the head (see defaultInt8Plan).
  const dynamic = new Set(sites.map((_, i) => i).filter((i) => i < sites.length - 1));
  const planOf = (site: Int8Site): Int8Mode => (dynamic.has(site.index) ? 'dynamic' : defaultInt8Plan(site) === 'float' ? 'float' : 'weight');
  let best = build(planOf);
  let expected = await score(best);
  if (expected > budget && dynamic.size > 0) {
    // Sensitivity of each: only it dynamic.
    const all = [...dynamic];
    const alone = new Map<number, number>();
    for (const i of all) {
      dynamic.clear();
      dynamic.add(i);
      alone.set(i, await score(build(planOf)));
    }
    dynamic.clear();
    for (const i of all) dynamic.add(i);
    for (const i of all.sort((a, b) => alone.get(b)! - alone.get(a)!)) {
      dynamic.delete(i);
      best = build(planOf);
      expected = await score(best);
      if (expected <= budget) break;
    }
  }
  const modes: [string, Int8Mode][] = sites.map((s, i) => [s.node.input[1]!, planOf({ node: s.node, index: i, count: sites.length, values: s.values, total: sites.reduce((t, x) => t + x.values, 0) })]);
  return { ...best, modes, expectedDisagreement: expected, calibrationRows: rows };
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
