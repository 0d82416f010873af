/**
 * A replica's per-version counters, as Triton's ModelStatistics counts them
 * (Runtime.Statistics serves them; the router sums them over replicas):
 *
 * - success / fail: requests answered OK / with an error, and their time from
 *   admission to answer. Every request that reached the scheduler counts in
 *   exactly one of them (cache hits in success; refusals, expiries and
 *   cancellations in fail); so do requests whose inputs do not fit the
 *   version (fail, 0 ns).
 * - queue, compute_input, compute_infer, compute_output: per successful
 *   request that ran, its queue wait and its batch's times: input (building
 *   the batch and handing it to the run), infer (ONNX Runtime's run) and
 *   output (splitting and encoding the answers).
 * - inference_count: rows of successful requests that ran (a request of
 *   batch 8 counts 8; cache hits do not count), execution_count: model runs
 *   (a dynamic batch counts once), batch_stats: runs by batch size (rows).
 *
 * Counting is a few additions on numbers already measured: no allocation
 * per request (one per new batch size).
 */
import type { oip, StatisticsResponse, VersionStatistics } from '../../libs/proto/index.js';
import type { ModelSpec } from './model-spec.js';

/** Count and nanoseconds of one duration statistic. */
class Duration {
  count = 0;
  ns = 0;
  add(ns: number): void {
    this.count++;
    this.ns += ns;
  }
  out(): oip.StatisticDuration {
    return { count: this.count, ns: Math.round(this.ns) };
  }
}

class BatchCounters {
  readonly input = new Duration();
  readonly infer = new Duration();
  readonly output = new Duration();
}

/** One model version's counters since the replica started. */
export class VersionCounters {
  lastInferenceMs = 0;
  inferenceCount = 0;
  executionCount = 0;
  readonly success = new Duration();
  readonly fail = new Duration();
  readonly queue = new Duration();
  readonly computeInput = new Duration();
  readonly computeInfer = new Duration();
  readonly computeOutput = new Duration();
  readonly cacheHit = new Duration();
  readonly cacheMiss = new Duration();
  readonly batches = new Map<number, BatchCounters>();
  constructor(public spec: ModelSpec) {}
}

/** One request of a run, as the scheduler's completion sees it. */
export interface RanRequest {
  readonly enqueuedAt: number;
  readonly req: { readonly rows: number };
}

const MS_NS = 1e6;

/** The replica's counters by version key; the scheduler reports into it. */
export class ModelStats {
  private readonly byKey = new Map<string, VersionCounters>();

  /** The counters of `spec`'s version (created on first use; a reloaded version keeps counting). */
  of(spec: ModelSpec): VersionCounters {
    let c = this.byKey.get(spec.key);
    if (!c) this.byKey.set(spec.key, (c = new VersionCounters(spec)));
    else c.spec = spec;
    return c;
  }

  /** A request answered with an error, `ms` after admission (0 when refused at once). */
  failed(spec: ModelSpec, ms: number): void {
    this.of(spec).fail.add(ms * MS_NS);
  }

  /** A request answered from the response cache; `ms` = lookup time. */
  cacheHit(spec: ModelSpec, ms: number): void {
    const c = this.of(spec);
    c.cacheHit.add(ms * MS_NS);
    c.success.add(ms * MS_NS);
  }

  /** A request that missed the response cache; `ms` = lookup time. */
  cacheMiss(spec: ModelSpec, ms: number): void {
    this.of(spec).cacheMiss.add(ms * MS_NS);
  }

  /**
   * One run that answered every request in `batch` successfully: it started
   * at `started`, ONNX Runtime ran `inferMicros`, its outputs were back at
   * `returned` and every answer was encoded at `encoded` (performance.now() ms).
   */
  ran(spec: ModelSpec, batch: readonly RanRequest[], started: number, returned: number, inferMicros: number, encoded: number): void {
    const c = this.of(spec);
    const inferNs = inferMicros * 1000;
    const inputNs = Math.max(0, (returned - started) * MS_NS - inferNs);
    const outputNs = Math.max(0, (encoded - returned) * MS_NS);
    let rows = 0;
    for (let i = 0; i < batch.length; i++) {
      const j = batch[i]!;
      const n = Math.max(1, j.req.rows);
      rows += n;
      c.success.add((encoded - j.enqueuedAt) * MS_NS);
      c.queue.add(Math.max(0, (started - j.enqueuedAt) * MS_NS));
      c.computeInput.add(inputNs);
      c.computeInfer.add(inferNs);
      c.computeOutput.add(outputNs);
    }
    c.inferenceCount += rows;
    c.executionCount++;
    c.lastInferenceMs = Date.now();
    let b = c.batches.get(rows);
    if (!b) c.batches.set(rows, (b = new BatchCounters()));
    b.input.add(inputNs);
    b.infer.add(inferNs);
    b.output.add(outputNs);
  }

  /** Runtime.Statistics' answer: every version of `model` ('' = all) counted here; `loaded` says which are loaded now. */
  response(model: string, loaded: (name: string, version: number) => boolean): StatisticsResponse {
    const versions: VersionStatistics[] = [];
    for (const c of this.byKey.values()) {
      const s = c.spec;
      if (model && s.name !== model) continue;
      versions.push({
        stats: {
          name: s.name,
          version: s.versionString,
          lastInference: c.lastInferenceMs,
          inferenceCount: c.inferenceCount,
          executionCount: c.executionCount,
          inferenceStats: {
            success: c.success.out(),
            fail: c.fail.out(),
            queue: c.queue.out(),
            computeInput: c.computeInput.out(),
            computeInfer: c.computeInfer.out(),
            computeOutput: c.computeOutput.out(),
            cacheHit: c.cacheHit.out(),
            cacheMiss: c.cacheMiss.out(),
          },
          batchStats: [...c.batches].sort((a, b) => a[0] - b[0]).map(([size, b]) => ({ batchSize: size, computeInput: b.input.out(), computeInfer: b.infer.out(), computeOutput: b.output.out() })),
          memoryUsage: [],
          responseStats: {},
        },
        maxBatchSize: s.batchable ? s.maxBatchSize : 1,
        maxQueueDelayMicros: s.maxQueueDelayMicros,
        loaded: loaded(s.name, s.version),
      });
    }
    return { versions };
  }
}
