/**
 * The flags of `infermesh tune`, checked before anything starts: comma lists
 * of batch sizes, queue delays and worker counts, and the p99 target. Every
 * problem is a UsageError (exit status 2).
 */
import { UsageError } from '../output.js';

/** The options as commander hands them over (lists and the target still text). */
export interface TuneOptions {
  model: string;
  /** JSON text (object or tensor form, as for `infer`), or `@path`. */
  input?: string;
  p99TargetMs: string;
  batchSizes: string;
  queueDelaysUs: string;
  workers: string;
  requests: number;
  connections: number;
  streams: number;
  json?: boolean;
}

/** What one run of `tune` tries. */
export interface TunePlan {
  readonly p99TargetMs: number;
  readonly batchSizes: readonly number[];
  readonly queueDelaysUs: readonly number[];
  readonly workers: readonly number[];
}

/** Parses and range-checks the lists and the target; throws UsageError. */
export function tunePlan(o: Pick<TuneOptions, 'p99TargetMs' | 'batchSizes' | 'queueDelaysUs' | 'workers'>): TunePlan {
  const target = Number(o.p99TargetMs);
  if (!/^\s*\d+(\.\d+)?\s*$/.test(o.p99TargetMs) || !(target > 0)) throw new UsageError(`--p99-target-ms: expected a positive number of milliseconds, got ${JSON.stringify(o.p99TargetMs)}`);
  return Object.freeze({
    p99TargetMs: target,
    // The ranges are those the registry and the inference replica accept.
    batchSizes: intList('--batch-sizes', o.batchSizes, 1, 65_536),
    queueDelaysUs: intList('--queue-delays-us', o.queueDelaysUs, 0, 10_000_000),
    workers: intList('--workers', o.workers, 1, 256),
  });
}

/** `"1,8, 32"` → [1, 8, 32], in the order given, duplicates dropped. */
export function intList(flag: string, raw: string, min: number, max: number): number[] {
  const items = raw.split(',').map((s) => s.trim());
  if (items.some((s) => !/^\d+$/.test(s))) throw new UsageError(`${flag}: expected a comma-separated list of integers, got ${JSON.stringify(raw)}`);
  const values = [...new Set(items.map(Number))];
  const bad = values.find((n) => n < min || n > max);
  if (bad !== undefined) throw new UsageError(`${flag}: ${bad} is out of range [${min}, ${max}]`);
  return values;
}
