/**
 * Runs in a disposable child process (as validation does): makes an
 * optimized candidate of a model (int8, fp16, prune over the ONNX protobuf;
 * graph through ONNX Runtime's own optimizer), runs original and candidate
 * on the same rows and measures their latency; or composes several models
 * into one graph. A model that crashes ONNX Runtime or exhausts memory kills
 * only this process.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import * as ort from 'onnxruntime-node';
import { splitCsvLine } from '../../libs/csv/index.js';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import { composeEnsemble, composePipeline, pruneWeights, weightsToFp16, type ComposePart } from '../../libs/onnx-builder/index.js';
import { onnx } from '../../libs/proto/index.js';
import { parseReference, referenceLayout, type ReferenceLayout } from './reference-parse.js';
import { calibratedInt8 } from './int8-calibrate.js';
import { inputTensor } from './reference-run.js';
import type { ChildComposeRequest, ChildOptimizeRequest, ChildOptimizeResult, ChildBenchPoint, ChildGate } from './workshop.js';

/** Rows the gate runs at most. */
const GATE_ROWS = 2_000;
/** Rows per ONNX Runtime run in the gate. */
const GATE_BATCH = 256;
/**
 * Expected disagreement (see int8-calibrate.ts) int8 may reach on the gate's
 * rows before nodes give up quantized activations: under a third of what the
 * default gate (99 % agreement) allows, so other draws stay above 99 % (at
 * 0.3 % a draw of 600 rows flips 7 or more with probability ~0.3 %).
 */
const INT8_DISAGREEMENT_BUDGET = 0.003;

process.on('message', (msg: { optimize: ChildOptimizeRequest } | { compose: ChildComposeRequest }) => {
  const work = 'optimize' in msg ? optimize(msg.optimize) : compose(msg.compose);
  void work
    .catch((err: unknown) =>
      err instanceof InvalidArgumentError
        ? { ok: false as const, field: err.field, reason: err.message.slice(err.field.length + 2) }
        : { ok: false as const, field: '', reason: String((err as Error)?.message ?? err) },
    )
    .then((r) => process.send!(r, () => process.exit(0)));
});

const SESSION: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' };

async function compose(req: ChildComposeRequest): Promise<{ ok: true; bytes: Uint8Array } | { ok: false; field: string; reason: string }> {
  const parts: ComposePart[] = req.parts.map((p) => ({ label: p.label, model: onnx.ModelProto.decode(p.bytes) }));
  try {
    const model =
      req.mode === 'pipeline'
        ? composePipeline(parts, req.maps)
        : composeEnsemble(parts, req.combine.kind === 'weighted' ? { kind: 'weighted', weights: req.combine.weights } : req.combine.kind === 'vote' ? { kind: 'vote', threshold: req.combine.threshold } : { kind: req.combine.kind });
    return { ok: true, bytes: onnx.ModelProto.encode(model).finish() };
  } catch (err) {
    if (err instanceof RangeError) return { ok: false, field: 'parts', reason: err.message };
    throw err;
  }
}

async function candidateOf(req: ChildOptimizeRequest, notes: string[], layout: ReferenceLayout, rows: Float64Array[]): Promise<Uint8Array> {
  if (req.method === 'graph') return graphOptimized(req.bytes, req.level, notes);
  const model = onnx.ModelProto.decode(req.bytes);
  if (req.method === 'int8') {
    let r;
    try {
      r = await calibratedInt8(model, batchesOf(layout, rows, req.batchable), req.outputs[0]!.name, req.threshold, INT8_DISAGREEMENT_BUDGET);
    } catch (err) {
      if (err instanceof RangeError) throw new InvalidArgumentError('method', err.message.replace(/^onnx-builder: /, ''));
      throw err;
    }
    if (r.tensors === 0) throw new Unfit('int8: no MatMul or Gemm with a float weight initializer of at least 256 values');
    const count = (mode: string) => r.modes.filter(([, m]) => m === mode).map(([w]) => w);
    const [dyn, weight, float] = [count('dynamic'), count('weight'), count('float')];
    notes.push(
      `int8: ${r.tensors} weight tensors (${fmtCount(r.values)} values) stored int8 per output column, rounded GPTQ-style on ${r.calibrationRows} calibration rows (the gate's); ` +
        `activations quantized per call (DynamicQuantizeLinear → MatMulInteger) in ${dyn.length ? dyn.join(', ') : 'none'}` +
        (weight.length ? `; int8 weights dequantized at load, float arithmetic, in ${weight.join(', ')}` : '') +
        (float.length ? `; float: ${float.join(', ')} (the head)` : '') +
        `; expected disagreement on those rows ${(r.expectedDisagreement * 100).toFixed(2)}% (budget ${(INT8_DISAGREEMENT_BUDGET * 100).toFixed(2)}%)`,
    );
    return onnx.ModelProto.encode(r.model).finish();
  }
  if (req.method === 'fp16') {
    const r = weightsToFp16(model);
    if (r.tensors === 0) throw new Unfit('fp16: no float initializer of at least 16 values');
    notes.push(`fp16: ${r.tensors} initializers (${fmtCount(r.values)} values) stored float16, each Cast to float at load; inputs, outputs and arithmetic stay float32`);
    return onnx.ModelProto.encode(r.model).finish();
  }
  const r = pruneWeights(model, req.sparsity);
  if (r.tensors === 0) throw new Unfit('prune: no MatMul, Gemm or Conv with a float weight initializer');
  notes.push(
    `prune: ${(r.sparsity * 100).toFixed(1)}% of ${fmtCount(r.values)} weights in ${r.tensors} tensors are 0; the file stays dense (same size, smaller gzip) and ONNX Runtime's dense kernels run no faster`,
  );
  return onnx.ModelProto.encode(r.model).finish();
}

/** A method that cannot apply to this model (FAILED_PRECONDITION in the parent). */
class Unfit extends Error {}

/** ONNX Runtime's offline optimization, saved as a model whose opset imports are only the domains it uses. */
async function graphOptimized(bytes: Uint8Array, level: 'basic' | 'extended', notes: string[]): Promise<Uint8Array> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-optimize-'));
  try {
    const file = path.join(dir, 'optimized.onnx');
    const s = await ort.InferenceSession.create(Buffer.from(bytes), { ...SESSION, graphOptimizationLevel: level, optimizedModelFilePath: file });
    await s.release();
    const model = onnx.ModelProto.decode(await readFile(file));
    // ONNX Runtime imports every domain it knows (training, preview, nchwc…); keep the ones the graph uses.
    const used = new Set<string>(['']);
    const walk = (g: onnx.GraphProto | undefined): void => {
      for (const n of g?.node ?? []) {
        used.add(n.domain === 'ai.onnx' ? '' : n.domain);
        for (const a of n.attribute) [a.g, ...a.graphs].forEach(walk);
      }
    };
    walk(model.graph);
    model.opsetImport = model.opsetImport.filter((o) => used.has(o.domain === 'ai.onnx' ? '' : o.domain));
    const ops = new Map<string, number>();
    for (const n of model.graph?.node ?? []) ops.set(`${n.domain ? `${n.domain}.` : ''}${n.opType}`, (ops.get(`${n.domain ? `${n.domain}.` : ''}${n.opType}`) ?? 0) + 1);
    notes.push(
      `graph: ONNX Runtime ${level} optimizations applied offline (${[...ops].map(([k, v]) => `${k}×${v}`).join(', ')}); ` +
        (level === 'basic' ? 'ONNX operators only: portable to any execution provider' : 'uses com.microsoft fused operators: for the CPU execution provider') +
        '; replicas skip these passes at load, serving speed is what their own optimization gave already',
    );
    return onnx.ModelProto.encode(model).finish();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function optimize(req: ChildOptimizeRequest): Promise<ChildOptimizeResult> {
  const notes: string[] = [];
  const layout = referenceLayout(req.inputs);
  const { rows, labels } = req.data ? dataRows(req.data, layout) : sampleRows(req.sample!, layout);
  if (rows.length === 0) throw new InvalidArgumentError('data', 'no rows');
  let candidate: Uint8Array;
  try {
    candidate = await candidateOf(req, notes, layout, rows);
  } catch (err) {
    if (err instanceof Unfit) return { ok: false, field: '', reason: err.message, unfit: true };
    throw err;
  }
  const original = await ort.InferenceSession.create(Buffer.from(req.bytes), SESSION);
  let cand: ort.InferenceSession;
  try {
    cand = await ort.InferenceSession.create(Buffer.from(candidate), SESSION);
  } catch (err) {
    return { ok: false, field: '', reason: `the ${req.method} candidate does not load: ${String((err as Error)?.message ?? err).split('\n')[0]}`, unfit: true };
  }
  const gate = await compare(original, cand, req, layout, rows, labels);
  const bench = req.skipBench ? { original: [], candidate: [] } : await benchBoth(original, cand, layout, rows, req.batchable, req.benchMs);
  return {
    ok: true,
    bytes: candidate,
    gate,
    originalBench: bench.original,
    candidateBench: bench.candidate,
    originalGzip: gzipSync(req.bytes, { level: 6 }).byteLength,
    candidateGzip: gzipSync(candidate, { level: 6 }).byteLength,
    notes,
  };
}

function fmtCount(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n);
}

function sampleRows(s: { rows: number; width: number; values: Float64Array }, layout: ReferenceLayout): { rows: Float64Array[]; labels: null } {
  if (s.width !== layout.width) throw new InvalidArgumentError('data', `the reference sample has ${s.width} values per row, the model's inputs ${layout.width}`);
  const rows = Array.from({ length: Math.min(s.rows, GATE_ROWS) }, (_, r) => s.values.subarray(r * s.width, (r + 1) * s.width));
  return { rows, labels: null };
}

/** Rows (and labels, from a `label` column or key) of `--data`, at most GATE_ROWS. */
function dataRows(d: { bytes: Uint8Array; format: 'csv' | 'jsonl' }, layout: ReferenceLayout): { rows: Float64Array[]; labels: number[] | null } {
  const { text, labels } = splitLabels(Buffer.from(d.bytes).toString('utf8'), d.format);
  const rows: Float64Array[] = [];
  const parsed = parseReference(text, d.format, layout, (row) => {
    if (rows.length < GATE_ROWS) rows.push(row.slice());
  });
  if (parsed.width !== layout.width) throw new InvalidArgumentError('data', `rows have ${parsed.width} values, the model's inputs ${layout.width}`);
  return { rows, labels: labels ? labels.slice(0, rows.length) : null };
}

/** Takes the `label` column (CSV) or key (JSON lines) out of the rows; labels are numbers. */
function splitLabels(text: string, format: 'csv' | 'jsonl'): { text: string; labels: number[] | null } {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (format === 'csv') {
    const header = splitCsvLine(lines[0] ?? '');
    const at = header.findIndex((h) => h.trim() === 'label');
    if (at < 0) return { text, labels: null };
    const labels: number[] = [];
    const out = lines.map((l, i) => {
      const cells = splitCsvLine(l);
      if (i > 0) labels.push(Number(cells[at]));
      cells.splice(at, 1);
      return cells.map((c) => (/[",\n]/.test(c) ? `"${c.replace(/"/g, '""')}"` : c)).join(',');
    });
    return { text: out.join('\n'), labels };
  }
  let labels: number[] | null = null;
  const out = lines.map((l) => {
    const o = JSON.parse(l) as Record<string, unknown>;
    if (o && typeof o === 'object' && 'label' in o) {
      (labels ??= []).push(Number(o.label));
      delete o.label;
    }
    return JSON.stringify(o);
  });
  return { text: labels ? out.join('\n') : text, labels };
}

/** The rows as feeds, GATE_BATCH rows a run (one a run when the model is not batchable). */
function batchesOf(layout: ReferenceLayout, rows: readonly Float64Array[], batchable: boolean): Record<string, ort.Tensor>[] {
  const step = batchable ? GATE_BATCH : 1;
  const out: Record<string, ort.Tensor>[] = [];
  for (let start = 0; start < rows.length; start += step) out.push(feeds(layout, rows.slice(start, start + step)));
  return out;
}

function feeds(layout: ReferenceLayout, batch: readonly Float64Array[]): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = {};
  for (const s of layout.inputs) f[s.name] = inputTensor(s.datatype, batch, s.offset, s.perRow, [batch.length, ...s.rowDims]);
  return f;
}

/** The first output's decision per row: threshold on one score, else argmax. */
function decisions(values: ArrayLike<number>, rows: number, threshold: number): Int32Array {
  const width = values.length / rows;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    if (width === 1) out[r] = values[r]! >= threshold ? 1 : 0;
    else {
      let best = 0;
      for (let j = 1; j < width; j++) if (values[r * width + j]! > values[r * width + best]!) best = j;
      out[r] = best;
    }
  }
  return out;
}

async function compare(a: ort.InferenceSession, b: ort.InferenceSession, req: ChildOptimizeRequest, layout: ReferenceLayout, rows: Float64Array[], labels: number[] | null): Promise<ChildGate> {
  const step = req.batchable ? GATE_BATCH : 1;
  const names = req.outputs.map((o) => o.name);
  let max = 0;
  let sum = 0;
  let count = 0;
  const first: { a: number[]; b: number[] } = { a: [], b: [] };
  for (let start = 0; start < rows.length; start += step) {
    const batch = rows.slice(start, start + step);
    const f = feeds(layout, batch);
    const [ra, rb] = [await a.run(f), await b.run(f)];
    names.forEach((name, k) => {
      const va = ra[name]?.data as ArrayLike<number | bigint | boolean> | undefined;
      const vb = rb[name]?.data as ArrayLike<number | bigint | boolean> | undefined;
      if (!va || !vb || va.length !== vb.length) throw new Error(`output ${name} differs in shape between original and candidate`);
      for (let i = 0; i < va.length; i++) {
        const x = Number(va[i]);
        const y = Number(vb[i]);
        const d = Number.isNaN(x) && Number.isNaN(y) ? 0 : Math.abs(x - y);
        const dd = Number.isFinite(d) ? d : Infinity;
        if (dd > max) max = dd;
        sum += Number.isFinite(dd) ? dd : 0;
        count++;
        if (k === 0) {
          first.a.push(x);
          first.b.push(y);
        }
      }
    });
  }
  const da = decisions(first.a, rows.length, req.threshold);
  const db = decisions(first.b, rows.length, req.threshold);
  let agree = 0;
  for (let r = 0; r < rows.length; r++) if (da[r] === db[r]) agree++;
  const width = first.a.length / rows.length;
  const gate: ChildGate = {
    rows: rows.length,
    maxAbsDiff: max,
    meanAbsDiff: count ? sum / count : 0,
    agreement: agree / rows.length,
    decision: width === 1 ? `threshold ${req.threshold}` : 'argmax',
  };
  if (labels && labels.length === rows.length && labels.every(Number.isFinite)) {
    let ca = 0;
    let cb = 0;
    for (let r = 0; r < rows.length; r++) {
      if (da[r] === labels[r]) ca++;
      if (db[r] === labels[r]) cb++;
    }
    gate.metric = { name: 'accuracy', original: ca / rows.length, candidate: cb / rows.length };
  }
  return gate;
}

/** Latency of both sessions at batch 1 and 64 (batchable models), runs interleaved so both see the same machine. */
async function benchBoth(a: ort.InferenceSession, b: ort.InferenceSession, layout: ReferenceLayout, rows: Float64Array[], batchable: boolean, budgetMs: number): Promise<{ original: ChildBenchPoint[]; candidate: ChildBenchPoint[] }> {
  const original: ChildBenchPoint[] = [];
  const candidate: ChildBenchPoint[] = [];
  for (const size of batchable ? [1, 64] : [1]) {
    const batch = Array.from({ length: size }, (_, i) => rows[i % rows.length]!);
    const f = feeds(layout, batch);
    for (let i = 0; i < 3; i++) {
      await a.run(f);
      await b.run(f);
    }
    const ta: number[] = [];
    const tb: number[] = [];
    const until = performance.now() + budgetMs;
    while ((performance.now() < until && ta.length < 5_000) || ta.length < 5) {
      let t0 = performance.now();
      await a.run(f);
      ta.push(performance.now() - t0);
      t0 = performance.now();
      await b.run(f);
      tb.push(performance.now() - t0);
    }
    original.push(point(size, ta));
    candidate.push(point(size, tb));
  }
  return { original, candidate };
}

function point(batch: number, times: number[]): ChildBenchPoint {
  const total = times.reduce((x, y) => x + y, 0);
  const sorted = [...times].sort((x, y) => x - y);
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  return { batch, runs: times.length, p50Ms: q(0.5), p99Ms: q(0.99), rowsPerS: (batch * times.length * 1000) / total };
}
