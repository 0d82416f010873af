/**
 * `infermesh outcomes NAME FILE`: sends ground truth — (request id, label)
 * pairs from a CSV or JSON-lines file — to the monitor in batches;
 * `infermesh eval NAME`: the monitor's online evaluation, versions side by side.
 */
import { CsvError, splitCsvLine } from '../../libs/csv/index.js';
import { readFile } from 'node:fs/promises';
import { MonitorApi } from '../../libs/client/index.js';
import type { CostModel, VersionEvaluation } from '../../libs/proto/index.js';
import { costFlags } from './eval-compare.js';
import type { GlobalOptions } from './addresses.js';
import { printJson, printText, progress, remote, UsageError } from './output.js';
import { formatNumber, renderFields, renderTable } from './table.js';

/** Pairs per RecordOutcomes call (the monitor takes at most 10,000). */
export const OUTCOME_BATCH = 1_000;
const MAX_REQUEST_ID_CHARS = 128;

export interface OutcomePair {
  requestId: string;
  label: number;
}

/**
 * Parses an outcomes file. Two formats, told apart by the first non-empty line:
 * - CSV with a header naming the columns `request_id` and `label` (others are
 *   ignored; fields may be double-quoted, `""` inside quotes is a quote);
 * - JSON lines, one `{"request_id": "…", "label": 1}` object per line.
 * Blank lines are skipped. Throws UsageError naming `FILE:LINE` for a bad line.
 */
export function parseOutcomes(text: string, file = 'FILE'): OutcomePair[] {
  const lines = text.split(/\r?\n/);
  const first = lines.findIndex((l) => l.trim() !== '');
  if (first < 0) throw new UsageError(`${file}: no outcomes (expected a CSV header "request_id,label" or JSON lines)`);
  const pairs: OutcomePair[] = [];
  const at = (i: number) => `${file}:${i + 1}`;
  if (lines[first]!.trimStart().startsWith('{')) {
    for (let i = first; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '') continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        throw new UsageError(`${at(i)}: not a JSON object (expected {"request_id": "…", "label": 0 or 1 or a number})`);
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new UsageError(`${at(i)}: expected a JSON object {"request_id", "label"}`);
      const o = v as Record<string, unknown>;
      if (typeof o.request_id !== 'string') throw new UsageError(`${at(i)}: request_id must be a string`);
      if (typeof o.label !== 'number' && typeof o.label !== 'boolean') throw new UsageError(`${at(i)}: label must be a number`);
      pairs.push(checked(o.request_id, Number(o.label), at(i)));
    }
    return pairs;
  }
  const header = csvFields(lines[first]!, at(first)).map((h) => h.trim().toLowerCase());
  const idCol = header.indexOf('request_id');
  const labelCol = header.indexOf('label');
  if (idCol < 0 || labelCol < 0) throw new UsageError(`${at(first)}: the CSV header must name the columns request_id and label (got "${lines[first]!.trim()}")`);
  for (let i = first + 1; i < lines.length; i++) {
    if (lines[i]!.trim() === '') continue;
    const f = csvFields(lines[i]!, at(i));
    if (f.length !== header.length) throw new UsageError(`${at(i)}: ${f.length} fields, the header has ${header.length}`);
    const raw = f[labelCol]!.trim();
    pairs.push(checked(f[idCol]!.trim(), raw === '' ? NaN : Number(raw), at(i)));
  }
  return pairs;
}

function checked(requestId: string, label: number, where: string): OutcomePair {
  if (requestId === '') throw new UsageError(`${where}: request_id is empty`);
  if (requestId.length > MAX_REQUEST_ID_CHARS) throw new UsageError(`${where}: request_id is longer than ${MAX_REQUEST_ID_CHARS} characters`);
  if (!Number.isFinite(label)) throw new UsageError(`${where}: label must be a finite number`);
  return { requestId, label };
}

export async function outcomesCommand(name: string, file: string, o: GlobalOptions): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const pairs = parseOutcomes(text, file);
  const api = new MonitorApi(o.monitor);
  const tty = process.stderr.isTTY === true;
  let recorded = 0;
  let joined = 0;
  let batches = 0;
  try {
    for (let start = 0; start < pairs.length; start += OUTCOME_BATCH) {
      const res = await remote('monitor', o.monitor, () => api.recordOutcomes(name, pairs.slice(start, start + OUTCOME_BATCH)));
      recorded += res.recorded;
      joined += res.joined;
      batches++;
      if (tty) progress(`\rrecording outcomes for ${name}: ${recorded}/${pairs.length} (${joined} joined)`);
    }
  } catch (err) {
    if (tty) progress('\n');
    if (recorded > 0) progress(`${recorded} of ${pairs.length} outcomes were recorded before the error; sending the file again is safe (the last label wins)\n`);
    throw err;
  } finally {
    api.close();
  }
  if (tty) progress('\n');
  if (o.json) {
    printJson({ name, recorded, joined, batches });
    return;
  }
  printText(
    renderFields([
      ['model', name],
      ['recorded', String(recorded)],
      ['joined', `${joined} (have a kept sample now; the rest join when theirs arrives, within the monitor's retention)`],
    ]),
  );
}

export interface EvalOptions extends GlobalOptions {
  threshold?: string;
  /** Also rows per segment value of the model's segment parameter. */
  bySegment?: boolean;
  /** Show the cost-minimising threshold per version (needs a cost model). */
  optimizeThreshold?: boolean;
  costFp?: number;
  costFn?: number;
  valueTp?: number;
}

/** Checks `--threshold T` (0 < T < 1); undefined means the monitor's default (0.5). */
export function parseThreshold(raw: string | undefined): number {
  if (raw === undefined) return 0;
  const t = Number(raw);
  if (raw.trim() === '' || !(t > 0 && t < 1)) throw new UsageError(`--threshold must be a number strictly between 0 and 1 (got "${raw}")`);
  return t;
}

export async function evalCommand(name: string, o: EvalOptions): Promise<void> {
  const threshold = parseThreshold(o.threshold);
  const cost = costFlags(o);
  const api = new MonitorApi(o.monitor);
  try {
    const report = await remote('monitor', o.monitor, () => api.evaluationReport(name, threshold, { bySegment: o.bySegment, cost }));
    const versions = report.versions;
    if (o.optimizeThreshold && !report.cost) throw new UsageError(`--optimize-threshold needs a cost model: push ${name} with --cost-fp/--cost-fn/--value-tp, or give them here`);
    if (o.json) {
      // NaN (undefined metric, e.g. ROC-AUC with one class) prints as null.
      printJson({ name, threshold: versions[0]?.threshold ?? (threshold || 0.5), segmentBy: report.segmentBy || null, cost: report.cost ?? null, versions });
      return;
    }
    if (versions.length === 0) {
      printText(`no labelled samples of ${name} yet: record outcomes with infermesh outcomes ${name} FILE`);
      return;
    }
    const parts = [evaluationTables(versions.filter((v) => v.segment === ''))];
    const segments = versions.filter((v) => v.segment !== '');
    if (segments.length) parts.push('', `by ${report.segmentBy || 'segment'}:`, evaluationTables(segments, true));
    if (report.cost) parts.push('', costTable(versions, report.cost, o.optimizeThreshold === true));
    printText(parts.join('\n'));
  } finally {
    api.close();
  }
}

/** Expected cost per 1,000 decisions per version (and segment) with its interval; the optimal threshold when asked. */
function costTable(versions: readonly VersionEvaluation[], c: CostModel, optimal: boolean): string {
  const rows = versions
    .filter((v) => Number.isFinite(v.costPer1000))
    .map((v) => [
      String(v.version),
      v.segment || '*',
      v.costPer1000.toFixed(2),
      `[${v.costPer1000Low.toFixed(2)}, ${v.costPer1000High.toFixed(2)}]`,
      ...(optimal ? [metric(v.optimalThreshold), v.optimalCostPer1000.toFixed(2)] : []),
    ]);
  const head = ['VERSION', 'SEGMENT', 'COST/1000', '95 %', ...(optimal ? ['OPTIMAL_THRESHOLD', 'COST/1000_THERE'] : [])];
  return `cost model: FP ${c.costFp}, FN ${c.costFn}, TP value ${c.valueTp}\n` + renderTable(head, rows, head.map((_, i) => (i < 2 ? 'left' : 'right')));
}

/** A metric for a table: 4 decimals, `-` when undefined (NaN). */
function metric(v: number): string {
  return Number.isFinite(v) ? v.toFixed(4) : '-';
}

/**
 * One table per kind (classification: accuracy, precision, recall, F1 at the
 * threshold, ROC-AUC, log-loss; regression: MSE, MAE, R²), by version, then
 * which version is best when there are several.
 */
export function evaluationTables(versions: readonly VersionEvaluation[], bySegment = false): string {
  const parts: string[] = [];
  const cls = versions.filter((v) => v.kind === 'classification');
  const reg = versions.filter((v) => v.kind === 'regression');
  if (cls.length) {
    parts.push(
      renderTable(
        [...(bySegment ? ['SEGMENT'] : []), 'VERSION', 'LABELLED', 'THRESHOLD', 'ACCURACY', 'PRECISION', 'RECALL', 'F1', 'ROC_AUC', 'LOG_LOSS'],
        cls.map((v) => [
          ...(bySegment ? [v.segment] : []),
          String(v.version), String(v.labelled), formatNumber(v.threshold, 4), metric(v.accuracy), metric(v.precision), metric(v.recall), metric(v.f1), metric(v.rocAuc), metric(v.logLoss),
        ]),
        [...(bySegment ? ['left' as const] : []), 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
      ),
    );
    if (cls.length > 1 && !bySegment) parts.push(best(cls, 'F1', (v) => v.f1, 'max') + '; ' + best(cls, 'ROC-AUC', (v) => v.rocAuc, 'max'));
  }
  if (reg.length) {
    if (parts.length) parts.push('');
    parts.push(
      renderTable(
        [...(bySegment ? ['SEGMENT'] : []), 'VERSION', 'LABELLED', 'MSE', 'MAE', 'R2'],
        reg.map((v) => [...(bySegment ? [v.segment] : []), String(v.version), String(v.labelled), metric(v.mse), metric(v.mae), metric(v.r2)]),
        [...(bySegment ? ['left' as const] : []), 'right', 'right', 'right', 'right', 'right'],
      ),
    );
    if (reg.length > 1 && !bySegment) parts.push(best(reg, 'MSE', (v) => v.mse, 'min'));
  }
  return parts.join('\n');
}

function best(versions: readonly VersionEvaluation[], label: string, get: (v: VersionEvaluation) => number, want: 'max' | 'min'): string {
  const ranked = versions.filter((v) => Number.isFinite(get(v))).sort((a, b) => (want === 'max' ? get(b) - get(a) : get(a) - get(b)));
  if (ranked.length === 0) return `best ${label}: -`;
  return `best ${label}: version ${ranked[0]!.version} (${metric(get(ranked[0]!))})`;
}

/** One CSV line's fields; a malformed line is a usage error naming where. */
function csvFields(line: string, where: string): string[] {
  try {
    return splitCsvLine(line);
  } catch (err) {
    throw err instanceof CsvError ? new UsageError(`${where}: ${err.message}`) : err;
  }
}
