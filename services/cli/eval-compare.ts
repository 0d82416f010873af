/**
 * `infermesh eval NAME --compare A B`: two versions side by side with how
 * sure each number is — per version every metric with its interval, the
 * difference B − A with its interval and p-value, and, where the
 * difference is not significant, how many labelled samples each version
 * needs to detect `--min-difference`. With a cost model, the expected cost
 * per 1,000 decisions and the cost-minimising threshold per version.
 */
import { MonitorApi } from '../../libs/client/index.js';
import type { CompareVersionsResponse, CostModel } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { printJson, printText, remote, UsageError } from './output.js';
import { parseThreshold } from './outcomes.js';
import { renderFields, renderTable } from './table.js';

export interface CompareOptions extends GlobalOptions {
  compare: string[];
  threshold?: string;
  confidence?: string;
  minDifference?: string;
  power?: string;
  resamples?: string;
  seed?: string;
  segment?: string;
  costFp?: number;
  costFn?: number;
  valueTp?: number;
}

/** `--cost-fp/--cost-fn/--value-tp` as a cost model, or undefined when none is given (the model's own applies). */
export function costFlags(o: { costFp?: number; costFn?: number; valueTp?: number }): CostModel | undefined {
  if (o.costFp === undefined && o.costFn === undefined && o.valueTp === undefined) return undefined;
  return { costFp: o.costFp ?? 0, costFn: o.costFn ?? 0, valueTp: o.valueTp ?? 0 };
}

function numberFlag(raw: string | undefined, flag: string, ok: (n: number) => boolean, want: string): number {
  if (raw === undefined) return 0;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || !ok(n)) throw new UsageError(`${flag} must be ${want} (got "${raw}")`);
  return n;
}

/** The two versions of `--compare A B`. */
export function parseVersions(raw: string[]): [number, number] {
  if (raw.length !== 2) throw new UsageError(`--compare takes two versions, A (the baseline) and B (got ${raw.length})`);
  const [a, b] = raw.map((r) => (/^\d+$/.test(r) && Number(r) >= 1 ? Number(r) : NaN));
  if (!Number.isFinite(a) || !Number.isFinite(b)) throw new UsageError(`--compare versions must be whole numbers ≥ 1 (got "${raw.join(' ')}")`);
  if (a === b) throw new UsageError('--compare needs two different versions');
  return [a!, b!];
}

export async function evalCompareCommand(name: string, o: CompareOptions): Promise<void> {
  const [versionA, versionB] = parseVersions(o.compare);
  const req = {
    name,
    versionA,
    versionB,
    threshold: parseThreshold(o.threshold),
    confidence: numberFlag(o.confidence, '--confidence', (n) => n >= 0.5 && n <= 0.999, 'between 0.5 and 0.999'),
    minDifference: numberFlag(o.minDifference, '--min-difference', (n) => n > 0, 'a number > 0'),
    power: numberFlag(o.power, '--power', (n) => n >= 0.5 && n <= 0.999, 'between 0.5 and 0.999'),
    resamples: numberFlag(o.resamples, '--resamples', (n) => Number.isInteger(n) && n >= 1 && n <= 10_000, 'a whole number from 1 to 10000'),
    seed: numberFlag(o.seed, '--seed', (n) => Number.isInteger(n) && n >= 1 && n <= 0xffffffff, 'a whole number ≥ 1'),
    segment: o.segment ?? '',
    cost: costFlags(o),
  };
  const api = new MonitorApi(o.monitor);
  try {
    const r = await remote('monitor', o.monitor, () => api.compare(req));
    if (o.json) printJson(r);
    else printText(compareText(r));
  } finally {
    api.close();
  }
}

function num(v: number, digits = 4): string {
  return Number.isFinite(v) ? v.toFixed(digits) : '-';
}

function p(v: number): string {
  if (!Number.isFinite(v)) return '-';
  return v >= 0.001 ? v.toFixed(4) : v.toExponential(2);
}

/** The comparison for people: one table per version's metrics, then the differences. */
export function compareText(r: CompareVersionsResponse): string {
  const a = r.a!;
  const b = r.b!;
  const pct = `${Math.round(r.confidence * 1000) / 10} %`;
  const out: string[] = [
    renderFields([
      ['model', r.name],
      ['compared', `A = v${a.version} (${a.labelled} labelled), B = v${b.version} (${b.labelled} labelled)${r.segment ? `, segment ${r.segment}` : ''}`],
      ['kind', r.kind],
      ...(r.kind === 'classification' ? ([['threshold', String(r.threshold)]] as [string, string][]) : []),
      ...(r.cost ? ([['cost model', `FP ${r.cost.costFp}, FN ${r.cost.costFn}, TP value ${r.cost.valueTp}`]] as [string, string][]) : []),
    ]),
    '',
  ];
  const rows = a.metrics.map((ma, i) => {
    const mb = b.metrics[i]!;
    return [ma.metric, num(ma.value), `[${num(ma.low)}, ${num(ma.high)}]`, num(mb.value), `[${num(mb.low)}, ${num(mb.high)}]`, ma.method];
  });
  out.push(renderTable(['METRIC', `A v${a.version}`, `A ${pct}`, `B v${b.version}`, `B ${pct}`, 'INTERVAL'], rows, ['left', 'right', 'right', 'right', 'right', 'left']));
  out.push('');
  const diffs = r.differences.map((d) => [
    d.metric,
    num(d.difference),
    `[${num(d.low)}, ${num(d.high)}]`,
    p(d.pValue),
    d.significant ? 'yes' : 'no',
    d.significant ? '' : Number.isFinite(d.samplesNeeded) ? `${d.samplesNeeded} per version for ±${num(d.detectable, 4)}` : '-',
    d.method,
  ]);
  out.push(renderTable(['METRIC', 'B − A', pct, 'P', 'SIGNIFICANT', 'SAMPLES NEEDED', 'TEST'], diffs, ['left', 'right', 'right', 'right', 'left', 'left', 'left']));
  if (Number.isFinite(a.optimalThreshold) || Number.isFinite(b.optimalThreshold)) {
    out.push('');
    out.push(
      renderTable(
        ['VERSION', 'OPTIMAL THRESHOLD', 'COST / 1000 THERE'],
        [a, b].map((v) => [`v${v.version}`, num(v.optimalThreshold), num(v.optimalCostPer1000, 2)]),
        ['left', 'right', 'right'],
      ),
    );
  }
  return out.join('\n');
}
