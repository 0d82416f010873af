/**
 * `infermesh optimize NAME VERSION --method graph|fp16|int8|prune[=S]`: asks
 * the registry for a cheaper version of a version. The registry makes the
 * candidate and runs original and candidate on the same rows (the version's
 * reference sample, or --data) in a disposable child process, refuses it
 * beyond the gate's limits and otherwise stores it with lineage. This prints
 * the size, accuracy and in-process latency of both.
 */
import { readFile } from 'node:fs/promises';
import { RegistryApi } from '../../libs/client/index.js';
import type { BenchPoint, GateResult, OptimizeModelResponse } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { CliError, UsageError, printJson, printText, remote } from './output.js';
import { formatBytes, renderFields, renderTable } from './table.js';

export interface OptimizeOptions extends GlobalOptions {
  method: string;
  level?: string;
  data?: string;
  dataFormat?: string;
  maxAbsDiff?: string;
  minAgreement?: string;
  threshold?: string;
  force?: boolean;
  dryRun?: boolean;
  bench?: boolean;
  tag?: string[];
  description?: string;
}

/** `--method prune=0.7` → method and sparsity; UsageError for anything else than graph, fp16, int8, prune[=S]. */
export function parseMethod(raw: string): { method: string; sparsity: number } {
  const m = /^(graph|fp16|int8|prune)(?:=(.+))?$/.exec(raw);
  if (!m || (m[2] !== undefined && m[1] !== 'prune')) throw new UsageError(`--method must be graph, fp16, int8 or prune[=SPARSITY], not ${raw}`);
  const sparsity = m[2] === undefined ? 0 : Number(m[2]);
  if (m[2] !== undefined && !(sparsity > 0 && sparsity < 1)) throw new UsageError('prune=SPARSITY must be in (0, 1), e.g. prune=0.5');
  return { method: m[1]!, sparsity };
}

/** `k=v` pairs (repeatable --tag) as a map; UsageError for one without `=`. */
export function parseTags(list: readonly string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of list ?? []) {
    const at = t.indexOf('=');
    if (at <= 0) throw new UsageError(`--tag must be KEY=VALUE, not ${t}`);
    out[t.slice(0, at)] = t.slice(at + 1);
  }
  return out;
}

function number(flag: string, raw: string | undefined, ok: (v: number) => boolean, what: string): number {
  if (raw === undefined) return 0;
  const v = Number(raw);
  if (!Number.isFinite(v) || !ok(v)) throw new UsageError(`${flag} must be ${what}, not ${raw}`);
  return v;
}

export async function optimizeCommand(name: string, version: number, o: OptimizeOptions): Promise<void> {
  const { method, sparsity } = parseMethod(o.method);
  if (o.level !== undefined && method !== 'graph') throw new UsageError('--level applies to --method graph only');
  const maxAbsDiff = number('--max-abs-diff', o.maxAbsDiff, (v) => v > 0, 'a number > 0');
  const minAgreement = number('--min-agreement', o.minAgreement, (v) => v > 0 && v <= 1, 'in (0, 1], e.g. 0.99');
  const threshold = number('--threshold', o.threshold, () => true, 'a number');
  const tags = parseTags(o.tag);
  let data: Uint8Array = new Uint8Array();
  let dataFormat = '';
  if (o.data !== undefined) {
    const ext = /\.(csv|jsonl|ndjson)$/i.exec(o.data)?.[1]?.toLowerCase();
    dataFormat = o.dataFormat ?? (ext === 'ndjson' ? 'jsonl' : (ext ?? ''));
    if (dataFormat !== 'csv' && dataFormat !== 'jsonl') throw new UsageError(`cannot tell the format of ${o.data}; add --data-format csv|jsonl`);
    try {
      data = await readFile(o.data);
    } catch (err) {
      throw new CliError('NOT_FOUND', `cannot read ${o.data}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  const api = new RegistryApi(o.registry);
  try {
    const r = await remote('registry', o.registry, () =>
      api.optimize({
        name,
        version,
        method,
        sparsity,
        level: o.level ?? '',
        data,
        dataFormat,
        maxAbsDiff,
        minAgreement,
        threshold,
        force: o.force ?? false,
        dryRun: o.dryRun ?? false,
        skipBench: o.bench === false,
        tags,
        description: o.description ?? '',
      }),
    );
    if (o.json) printJson(reportJson(name, version, r));
    else printText(reportText(name, version, r));
  } finally {
    api.close();
  }
}

function benchJson(points: readonly BenchPoint[]) {
  return points.map((p) => ({ batch: p.batch, runs: p.runs, p50Ms: p.p50Ms, p99Ms: p.p99Ms, rowsPerS: Math.round(p.rowsPerS) }));
}

function gateJson(g: GateResult | undefined) {
  if (!g) return null;
  return {
    rows: g.rows,
    source: g.source,
    maxAbsDiff: g.maxAbsDiff,
    meanAbsDiff: g.meanAbsDiff,
    agreement: g.agreement,
    decision: g.decision,
    limits: { maxAbsDiff: g.maxAbsDiffLimit || null, minAgreement: g.minAgreement },
    forced: g.forced,
    ...(g.metric ? { metric: { name: g.metric, original: g.metricOriginal, candidate: g.metricCandidate, delta: g.metricDelta } } : {}),
  };
}

function reportJson(name: string, from: number, r: OptimizeModelResponse) {
  return {
    name,
    from,
    method: r.method,
    version: r.version?.version ?? null,
    stored: !!r.version,
    sizeBytes: { original: r.originalBytes, candidate: r.candidateBytes, ratio: r.candidateBytes / r.originalBytes },
    gzipBytes: { original: r.originalGzipBytes, candidate: r.candidateGzipBytes },
    gate: gateJson(r.gate),
    bench: { original: benchJson(r.originalBench), candidate: benchJson(r.candidateBench) },
    notes: r.notes,
  };
}

const pct = (x: number) => `${(x * 100).toFixed(2)}%`;

function reportText(name: string, from: number, r: OptimizeModelResponse): string {
  const g = r.gate!;
  const fields: [string, string][] = [
    ['result', r.version ? `${name} version ${r.version.version} (${r.method} of version ${from})` : `${r.method} of ${name}@${from}: dry run, nothing stored`],
    ['size', `${formatBytes(r.originalBytes)} → ${formatBytes(r.candidateBytes)} (${pct(r.candidateBytes / r.originalBytes)}); gzip ${formatBytes(r.originalGzipBytes)} → ${formatBytes(r.candidateGzipBytes)}`],
    [
      'gate',
      `${g.rows} ${g.source} rows: agreement ${pct(g.agreement)} (${g.decision}, at least ${pct(g.minAgreement)}), max abs diff ${g.maxAbsDiff.toPrecision(3)}${g.maxAbsDiffLimit ? ` (at most ${g.maxAbsDiffLimit})` : ''}, mean ${g.meanAbsDiff.toPrecision(3)}${g.forced ? ' — FORCED past the gate' : ''}`,
    ],
  ];
  if (g.metric) fields.push([g.metric, `${g.metricOriginal.toFixed(4)} → ${g.metricCandidate.toFixed(4)} (${g.metricDelta >= 0 ? '+' : ''}${g.metricDelta.toFixed(4)})`]);
  const lines = [renderFields(fields)];
  if (r.originalBench.length) {
    lines.push(
      '',
      renderTable(
        ['BATCH', 'ORIGINAL P50 MS', 'P99 MS', 'ROWS/S', `${r.method.toUpperCase()} P50 MS`, 'P99 MS', 'ROWS/S', 'SPEED-UP'],
        r.originalBench.map((a, i) => {
          const b = r.candidateBench[i]!;
          return [String(a.batch), a.p50Ms.toFixed(3), a.p99Ms.toFixed(3), String(Math.round(a.rowsPerS)), b.p50Ms.toFixed(3), b.p99Ms.toFixed(3), String(Math.round(b.rowsPerS)), `${(b.rowsPerS / a.rowsPerS).toFixed(2)}×`];
        }),
        ['right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
      ),
      '(in-process ONNX Runtime on the registry host, one intra-op thread, runs of both interleaved)',
    );
  }
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}
