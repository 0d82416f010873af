/**
 * `infermesh traces show TRACE_ID`: one trace's spans, read from the JSON
 * lines the services write (INFERMESH_TRACE_FILE; `infermesh up` gives each
 * service `<dir>/traces/<name>.jsonl`), drawn as a tree with a waterfall.
 * A replica's `batch` span lives in the trace of the first request of the
 * batch; a request batched with others shows it too, through the
 * `infermesh.batch_span_id` its `inference` span carries.
 */
import { createReadStream } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { CliError } from './output.js';

/** A span as FileSpanExporter writes it. */
export interface SpanLine {
  service: string;
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
  /** Epoch ms. */
  start: number;
  end: number;
  attributes: Record<string, unknown>;
  links?: { traceId: string; spanId: string }[];
  /** 0 unset, 1 ok, 2 error. */
  status: number;
}

export interface TraceRow {
  depth: number;
  name: string;
  service: string;
  /** ms from the trace's first span. */
  startMs: number;
  durationMs: number;
  note: string;
  /** True for rows derived from a span's breakdown attributes, not timed spans. */
  derived: boolean;
}

const TRACE_ID = /^[0-9a-f]{32}$/;

/** The span files of a trace directory: `*.jsonl` and their rotated `*.jsonl.1`. */
export async function traceFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return names.filter((n) => n.endsWith('.jsonl') || n.endsWith('.jsonl.1')).sort().map((n) => path.join(dir, n));
}

/** Every span line of `files` whose text contains one of `needles` and that `keep` accepts. */
async function scan(files: string[], needles: string[], keep: (s: SpanLine) => boolean): Promise<SpanLine[]> {
  const out: SpanLine[] = [];
  for (const file of files) {
    const rl = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
    for await (const line of rl) {
      if (!needles.some((n) => line.includes(n))) continue;
      let s: SpanLine;
      try {
        s = JSON.parse(line) as SpanLine;
      } catch {
        continue; // a line cut by a crash
      }
      // The file names the process (up writes <dir>/traces/<process>.jsonl): inference-1, not just "inference".
      if (keep(s)) out.push({ ...s, service: path.basename(file).replace(/\.jsonl(\.1)?$/, '') || s.service });
    }
  }
  return out;
}

/** The spans of trace `traceId` in `files`, plus the batch spans (and their children) its requests ran in. */
export async function loadTrace(files: string[], traceId: string): Promise<SpanLine[]> {
  const spans = await scan(files, [traceId], (s) => s.traceId === traceId);
  const have = new Set(spans.map((s) => s.spanId));
  const batchIds = [...new Set(spans.map((s) => s.attributes['infermesh.batch_span_id']).filter((v): v is string => typeof v === 'string' && !have.has(v)))];
  if (batchIds.length) {
    const batch = await scan(files, batchIds, (s) => batchIds.includes(s.spanId));
    const children = batch.length ? await scan(files, batch.map((b) => b.spanId), (s) => s.parentSpanId !== null && batch.some((b) => b.spanId === s.parentSpanId)) : [];
    spans.push(...batch, ...children);
  }
  // A span exported twice (a rotated file and its successor) counts once.
  const seen = new Set<string>();
  return spans.filter((s) => (seen.has(s.spanId) ? false : (seen.add(s.spanId), true)));
}

const us = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v / 1000 : 0);

/** What a span's row says beside its name: model, batch size, status, slow. */
function noteOf(s: SpanLine): string {
  const a = s.attributes;
  const parts: string[] = [];
  if (typeof a['infermesh.model'] === 'string') parts.push(`${a['infermesh.model']}${a['infermesh.version'] !== undefined ? ` v${a['infermesh.version']}` : ''}`);
  if (typeof a['infermesh.replica'] === 'string') parts.push(`replica ${a['infermesh.replica']}`);
  if (typeof a['infermesh.batch_size'] === 'number') parts.push(`batch of ${a['infermesh.batch_size']} ${a['infermesh.batch_size'] === 1 ? 'request' : 'requests'}, ${a['infermesh.batch_rows']} ${a['infermesh.batch_rows'] === 1 ? 'row' : 'rows'}`);
  if (typeof a['infermesh.rows'] === 'number' && s.name === 'inference') parts.push(`${a['infermesh.rows']} ${a['infermesh.rows'] === 1 ? 'row' : 'rows'}`);
  if (a['infermesh.slow'] === true) parts.push('slow');
  if (s.status === 2) parts.push('error');
  const code = a['rpc.grpc.status_code'];
  if (typeof code === 'number' && code !== 0) parts.push(`grpc status ${code}`);
  return parts.join(', ');
}

/**
 * The rows of the waterfall: spans depth-first, children by start time.
 * Batch spans that belong to another request's trace hang under the
 * `inference` span that names them. A root recorded after the fact (a slow
 * request the head sampler skipped, with no replica spans) gets its
 * breakdown as derived rows: router, network, queue, compute.
 */
export function traceRows(spans: SpanLine[]): TraceRow[] {
  if (spans.length === 0) return [];
  const t0 = Math.min(...spans.map((s) => s.start));
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const kids = new Map<string, SpanLine[]>();
  const roots: SpanLine[] = [];
  for (const s of spans) {
    let parent = s.parentSpanId && byId.has(s.parentSpanId) ? s.parentSpanId : null;
    if (!parent && s.name === 'batch') {
      // A batch from another trace: under the inference span that points at it.
      const owner = spans.find((x) => x.attributes['infermesh.batch_span_id'] === s.spanId);
      if (owner) parent = owner.spanId;
    }
    if (parent) (kids.get(parent) ?? kids.set(parent, []).get(parent)!).push(s);
    else roots.push(s);
  }
  // An inference span whose batch is in its own trace: the batch is already its child.
  for (const s of spans) {
    const b = s.attributes['infermesh.batch_span_id'];
    if (typeof b === 'string' && byId.has(b)) {
      const batch = byId.get(b)!;
      const siblings = kids.get(batch.parentSpanId ?? '');
      if (batch.parentSpanId !== s.spanId && siblings) {
        siblings.splice(siblings.indexOf(batch), 1);
        (kids.get(s.spanId) ?? kids.set(s.spanId, []).get(s.spanId)!).push(batch);
      }
    }
  }
  const rows: TraceRow[] = [];
  const walk = (s: SpanLine, depth: number) => {
    const linked = s.name === 'batch' && s.traceId !== spans[0]!.traceId;
    rows.push({
      depth,
      name: s.name,
      service: s.service,
      startMs: s.start - t0,
      durationMs: s.end - s.start,
      note: [noteOf(s), linked ? `shared, in trace ${s.traceId.slice(0, 8)}…` : ''].filter(Boolean).join(', '),
      derived: false,
    });
    const children = (kids.get(s.spanId) ?? []).sort((a, b) => a.start - b.start);
    children.forEach((c) => walk(c, depth + 1));
    if (children.length === 0 && depth === 0 && s.attributes['infermesh.compute_us'] !== undefined && s.attributes['infermesh.queue_us'] !== undefined) {
      // Recorded after the fact: the breakdown the router measured, laid end to end.
      const a = s.attributes;
      let at = s.start - t0;
      const router = us(a['infermesh.router_us']);
      const network = us(a['infermesh.network_us']);
      for (const [name, ms] of [
        ['router', router / 2],
        ['network', network / 2],
        ['queue', us(a['infermesh.queue_us'])],
        ['compute', us(a['infermesh.compute_us'])],
        ['network', network / 2],
        ['router', router / 2],
      ] as [string, number][]) {
        rows.push({ depth: depth + 1, name, service: s.service, startMs: at, durationMs: ms, note: 'from the breakdown', derived: true });
        at += ms;
      }
    }
  };
  roots.sort((a, b) => a.start - b.start).forEach((r) => walk(r, 0));
  return rows;
}

/** The waterfall as text: one row per span, a bar of `width` columns on the trace's time axis. */
export function renderWaterfall(traceId: string, rows: TraceRow[], width = 48): string {
  const total = Math.max(...rows.map((r) => r.startMs + r.durationMs), 1e-6);
  const label = (r: TraceRow) => `${'  '.repeat(r.depth)}${r.name}`;
  const nameW = Math.max(4, ...rows.map((r) => label(r).length));
  const svcW = Math.max(7, ...rows.map((r) => r.service.length));
  const lines = [
    `trace ${traceId}: ${rows.length} spans over ${total.toFixed(3)} ms${rows.some((r) => r.derived) ? ' (rows marked ~ come from the request\'s time breakdown: the replica kept no spans for it)' : ''}`,
    `${'SPAN'.padEnd(nameW)}  ${'SERVICE'.padEnd(svcW)}  ${'START_MS'.padStart(9)}  ${'DUR_MS'.padStart(9)}  ${'|'.padEnd(width + 1)}|  NOTE`,
  ];
  for (const r of rows) {
    const from = Math.min(width - 1, Math.floor((r.startMs / total) * width));
    const len = Math.max(1, Math.min(width - from, Math.round((r.durationMs / total) * width)));
    const bar = `${' '.repeat(from)}${(r.derived ? '~' : '█').repeat(len)}`.padEnd(width);
    lines.push(`${label(r).padEnd(nameW)}  ${r.service.padEnd(svcW)}  ${r.startMs.toFixed(3).padStart(9)}  ${r.durationMs.toFixed(3).padStart(9)}  |${bar}|  ${r.note}`.trimEnd());
  }
  return lines.join('\n');
}

/** Checks a trace id as `traces slow` prints them. */
export function checkTraceId(id: string): string {
  const t = id.trim().toLowerCase();
  if (!TRACE_ID.test(t)) throw new CliError('INVALID_ARGUMENT', 'trace id: expected 32 hex digits, as `infermesh traces slow` and `infer --timing` print them', 2);
  return t;
}
