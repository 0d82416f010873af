/**
 * What `infermesh tune` found: one result per configuration, the best one by
 * the rule below, and how to apply it (the push command and the inference
 * flags). Pure functions, so the rule is tested without a mesh.
 */
import { renderTable } from '../table.js';
import { inferenceFlags } from './mesh.js';

/** One configuration: worker threads of the replica and the batching policy of the version. */
export interface TuneConfig {
  workers: number;
  maxBatchSize: number;
  maxQueueDelayMicros: number;
}

export interface TuneResult extends TuneConfig {
  /** The model version pushed with this batching policy. */
  modelVersion: number;
  rowsPerRequest: number;
  /** Calls h2load sent, and how many it saw answered with HTTP 200 or not. */
  requests: number;
  succeeded: number;
  failed: number;
  /** Calls the router answered with a gRPC error (warm-up included), from the monitor. */
  grpcErrors: number;
  seconds: number;
  callsPerSec: number;
  rowsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** p99 within the target and every call answered OK. */
  meetsTarget: boolean;
}

export interface Best extends TuneResult {
  /** `infermesh models push …` with this batching policy. */
  pushCommand: string;
  /** Flags for the inference replicas (`--workers W --intra-op-threads 1`). */
  inferenceFlags: string[];
}

/** Whether a result meets `p99TargetMs` (and had no failed calls). */
export function meets(r: Omit<TuneResult, 'meetsTarget'>, p99TargetMs: number): boolean {
  return r.p99Ms <= p99TargetMs && r.failed === 0 && r.grpcErrors === 0 && r.succeeded > 0;
}

/** Highest rows/s first (then lower p99). */
export function byThroughput(results: readonly TuneResult[]): TuneResult[] {
  return [...results].sort((a, b) => b.rowsPerSec - a.rowsPerSec || a.p99Ms - b.p99Ms);
}

/**
 * The best result: the highest rows/s among those meeting the target; when
 * none does, the lowest p99 (then the highest rows/s). Undefined for no results.
 */
export function chooseBest(results: readonly TuneResult[]): TuneResult | undefined {
  const meeting = results.filter((r) => r.meetsTarget);
  if (meeting.length > 0) return byThroughput(meeting)[0];
  return [...results].sort((a, b) => a.p99Ms - b.p99Ms || b.rowsPerSec - a.rowsPerSec)[0];
}

/** The best result with the commands that apply it. */
export function withApply(best: TuneResult, name: string, modelFile: string, cores?: number): Best {
  const push = ['infermesh', 'models', 'push', shellQuote(modelFile), '--name', shellQuote(name), '--alias', 'production', '--max-batch', String(best.maxBatchSize), '--max-queue-delay-us', String(best.maxQueueDelayMicros)];
  return { ...best, pushCommand: push.join(' '), inferenceFlags: inferenceFlags(best.workers, cores) };
}

const ms = (n: number) => n.toFixed(1);

/** The table (by throughput, `*` on those meeting the target), the best line and how to apply it. */
export function renderTune(results: readonly TuneResult[], best: Best, o: { p99TargetMs: number; inFlight: number; requests: number }): string {
  const rows = byThroughput(results).map((r) => [
    r.meetsTarget ? '*' : '',
    String(r.workers),
    String(r.maxBatchSize),
    String(r.maxQueueDelayMicros),
    String(Math.round(r.rowsPerSec)),
    ms(r.p50Ms),
    ms(r.p99Ms),
    String(r.failed + r.grpcErrors),
  ]);
  const met = results.some((r) => r.meetsTarget);
  return [
    `load: h2load, ${o.inFlight} calls in flight, ${o.requests} calls per configuration; * = p99 ≤ ${o.p99TargetMs} ms with no errors`,
    renderTable(['', 'WORKERS', 'MAX_BATCH', 'QUEUE_DELAY_US', 'ROWS/S', 'P50_MS', 'P99_MS', 'ERRORS'], rows, ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right']),
    '',
    ...(met ? [] : [`no configuration met p99 ≤ ${o.p99TargetMs} ms; the best is the one with the lowest p99`]),
    `best: workers=${best.workers} max_batch=${best.maxBatchSize} queue_delay_us=${best.maxQueueDelayMicros} → ${Math.round(best.rowsPerSec)} rows/s, p99 ${ms(best.p99Ms)} ms`,
    `apply: ${best.pushCommand}`,
    `       and start the mesh with infermesh up --workers ${best.workers} (replicas started on their own: ${best.inferenceFlags.join(' ')})`,
  ].join('\n');
}

/** Quotes `s` for a POSIX shell when it needs it. */
function shellQuote(s: string): string {
  return /^[\w./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
