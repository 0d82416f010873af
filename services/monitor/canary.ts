/**
 * Automatic canary analysis on statistics. While a model has a canary, every
 * evaluation compares the canary version with production and rolls the
 * canary back only when a test says it is worse AND the difference matters:
 *
 * - errors: Fisher's exact test (one-sided, a two-proportion test exact for
 *   the small counts errors come in) on errors/requests over the serving
 *   window, and the canary's error rate above production's by more than
 *   `maxErrorRateIncrease`;
 * - latency, location: Mann–Whitney U (one-sided, canary slower) on the two
 *   window histograms (buckets are ordered categories, ties within a
 *   bucket), and the canary's median above production's by more than
 *   `latencyMargin` (relative) and `minP99DeltaMs`;
 * - latency, tail: Fisher's exact test (one-sided) on how many requests of
 *   each side lie above the pooled p99, and the canary's p99 above
 *   production's × `maxP99Ratio` and by more than `minP99DeltaMs`;
 * - outcomes (once both have `minLabelled` labelled samples): the difference
 *   of `metric` (comparison.ts: Newcombe/z, DeLong, Welch t or bootstrap) with
 *   its two-sided p-value, worse by more than `metricMargin`.
 *
 * Nothing is decided before each side has `minRequests` requests in the
 * window. A p-value is significant against a share of `alpha`, the rate of
 * false rollbacks accepted over the canary's whole life: alpha is split
 * evenly over the tests (Bonferroni), and each test spends its share over
 * its looks as α·6/(π²k²) at its k-th look (the series sums to its share,
 * and a union bound holds however correlated the looks are), because the
 * analysis looks again and again. A serving look is an evaluation with
 * enough requests, at most one per `lookMs` (default a quarter of the
 * serving window: looking every evaluation would spend α on data that has
 * barely changed); an outcome look is one with new labels, as often.
 * Statistical significance alone is not enough: with thousands of requests a
 * 1 % shift is "significant" and irrelevant, hence the practical margins.
 *
 * A canary that is worse is rolled back through the registry (SetCanary
 * clear with the reason, kept as ROLLED_BACK of alias `canary`) and a
 * `canary` alert fires; each reason names the test, the numbers and the
 * p-value. When it has held for `promoteAfterMs` (0 = never), it is promoted.
 */
import type { ServiceError } from '@grpc/grpc-js';
import type { RegistryApi } from '../../libs/client/index.js';
import type { Logger } from '../../libs/log/index.js';
import { TrafficRecord, type MetricDifference } from '../../libs/proto/index.js';
import { fisherExact, mannWhitneyCounts } from '../../libs/stats/index.js';
import { EVAL_METRICS, type AlertEngine } from './alerts.js';
import { LatencyHistogram } from './latency-histogram.js';
import type { MonitorMetrics } from './metrics.js';
import type { WindowStats } from './window-stats.js';

export interface CanarySettings {
  intervalMs: number;
  /** Requests each side (canary and production) needs in the window before anything is judged. */
  minRequests: number;
  /** Accepted rate of false rollbacks over a canary's life (split over tests and looks). */
  alpha: number;
  /** Least time between two looks of a test (each look spends α; the window changes slowly). */
  lookMs: number;
  /** Practical margin of the error test: canary error rate above production's by more than this (absolute). */
  maxErrorRateIncrease: number;
  /** Practical margin of the location test: the canary's median above production's by more than this share. */
  latencyMargin: number;
  /** Practical margin of the tail test: the canary's p99 above production's times this … */
  maxP99Ratio: number;
  /** … and both latency tests: by more than this many milliseconds. */
  minP99DeltaMs: number;
  /** Evaluation metric compared once outcomes exist (f1, roc_auc, accuracy, cost … or mse/mae for regressors); empty = none. */
  metric: string;
  /** Practical margin of the outcome test: worse than production by more than this (absolute). */
  metricMargin: number;
  /** Labelled samples each version needs before the metric is compared. */
  minLabelled: number;
  /** Promote a canary that held this long with enough traffic (0 = never promote). */
  promoteAfterMs: number;
}

/** What the outcome test needs: the two versions compared on their labelled rows (throws when either has none). */
export type CompareFn = (name: string, production: number, canary: number) => { a: { labelled: number }; b: { labelled: number }; differences: MetricDifference[] };

interface Watched {
  version: number;
  since: number;
  acting: boolean;
  done: boolean;
  /** Serving looks so far (evaluations with enough requests on both sides), and when the next may be. */
  servingLooks: number;
  nextServingLook: number;
  /** Outcome looks so far, the labelled counts of the last one, and when the next may be. */
  metricLooks: number;
  lastLabelled: string;
  nextMetricLook: number;
}

export interface CanaryVerdict {
  name: string;
  version: number;
  verdict: 'rollback' | 'promote' | 'hold' | 'wait';
  reason: string;
}

const LOWER_IS_BETTER = new Set(['log_loss', 'mse', 'mae', 'cost']);

/** Metric names --canary-metric accepts (cost: expected cost per 1,000 decisions under the model's cost model). */
export const CANARY_METRICS: readonly string[] = [...EVAL_METRICS, 'cost'];

/** The comparison's name for a canary metric. */
function comparisonMetric(metric: string): string {
  return metric === 'cost' ? 'cost_per_1000' : metric;
}

/** α spent at the k-th look of a test whose share is `share`: share·6/(π²k²), summing to `share` over all looks. */
export function alphaAtLook(share: number, k: number): number {
  return (share * 6) / (Math.PI * Math.PI * k * k);
}

export class CanaryAnalysis {
  private readonly traffic = new Map<string, TrafficRecord>();
  private readonly watched = new Map<string, Watched>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly window: WindowStats,
    private readonly compare: CompareFn | null,
    private readonly registry: Pick<RegistryApi, 'clearCanary' | 'setAlias'>,
    private readonly alerts: Pick<AlertEngine, 'fireOnce'>,
    private readonly metrics: Pick<MonitorMetrics, 'canaryRollbacks'>,
    private readonly s: CanarySettings,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Judges every intervalMs from now on (once the windows it reads are replayed). Idempotent; nothing after close(). */
  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => void this.tick(), this.s.intervalMs);
    this.timer.unref();
  }

  /** A model's traffic record changed (value) or disappeared (null). */
  setTraffic(name: string, value: Uint8Array | null): void {
    if (!value) {
      this.traffic.delete(name);
      this.watched.delete(name);
      return;
    }
    let rec: TrafficRecord;
    try {
      rec = TrafficRecord.decode(value);
    } catch {
      return;
    }
    this.traffic.set(name, rec);
    const v = rec.canary?.version ?? 0;
    const w = this.watched.get(name);
    if (!v) this.watched.delete(name);
    else if (!w || w.version !== v) {
      this.watched.set(name, { version: v, since: this.now(), acting: false, done: false, servingLooks: 0, nextServingLook: 0, metricLooks: 0, lastLabelled: '', nextMetricLook: 0 });
    }
  }

  /** Tests per look among which alpha is split (Bonferroni). */
  private get tests(): number {
    return this.s.metric && this.compare ? 4 : 3;
  }

  /**
   * Judges every running canary once; returns the verdicts (for tests and
   * logs). Rolls back or promotes through the registry.
   */
  async tick(): Promise<CanaryVerdict[]> {
    const out: CanaryVerdict[] = [];
    for (const [name, w] of this.watched) {
      if (w.acting || w.done) continue;
      const prod = this.traffic.get(name)?.aliases['production'];
      if (!prod || prod === w.version) continue;
      const c = this.window.histogram(name, w.version);
      const p = this.window.histogram(name, prod);
      // Errors and latency need live traffic on both sides; the outcome test needs labelled samples (which may come later).
      const live = c.count >= this.s.minRequests && p.count >= this.s.minRequests;
      const reason = (live ? this.worseServing(name, w, prod) : '') || this.worseMetric(name, w, prod);
      if (reason) {
        out.push({ name, version: w.version, verdict: 'rollback', reason });
        await this.act(name, w, () => this.rollback(name, w.version, prod, reason));
      } else if (!live) {
        out.push({ name, version: w.version, verdict: 'wait', reason: `${c.count} canary and ${p.count} production requests in the window; each side needs ${this.s.minRequests}` });
      } else if (this.s.promoteAfterMs > 0 && this.now() - w.since >= this.s.promoteAfterMs) {
        out.push({ name, version: w.version, verdict: 'promote', reason: `held ${Math.round((this.now() - w.since) / 1000)} s` });
        await this.act(name, w, () => this.promote(name, w.version));
      } else out.push({ name, version: w.version, verdict: 'hold', reason: '' });
    }
    return out;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
  }

  /** Why the canary serves worse than production (errors, latency) over the window, or empty. */
  private worseServing(name: string, w: Watched, prod: number): string {
    if (this.now() < w.nextServingLook) return '';
    w.nextServingLook = this.now() + this.s.lookMs;
    w.servingLooks++;
    const alpha = alphaAtLook(this.s.alpha / this.tests, w.servingLooks);
    const look = `α ${fmtP(alpha)} at look ${w.servingLooks}`;
    const c = this.window.summary(name, w.version);
    const p = this.window.summary(name, prod);
    const v = w.version;

    // Errors: canary row first, so "greater" = the canary errs more.
    const pErr = fisherExact(c.errors, c.requests - c.errors, p.errors, p.requests - p.errors, 'greater');
    if (pErr < alpha && c.errorRate > p.errorRate + this.s.maxErrorRateIncrease) {
      return (
        `canary v${v} error rate ${pct(c.errorRate)} vs production v${prod} ${pct(p.errorRate)} (margin ${pct(this.s.maxErrorRateIncrease)}) over ${c.requests} requests ` +
        `(${c.errors}/${c.requests} vs ${p.errors}/${p.requests}): Fisher's exact test (two proportions, one-sided) p = ${fmtP(pErr)} < ${look}`
      );
    }

    const hc = this.window.histogram(name, v);
    const hp = this.window.histogram(name, prod);
    const mc = hc.quantile(0.5) / 1000;
    const mp = hp.quantile(0.5) / 1000;
    const mw = mannWhitneyCounts(hc.buckets(), hp.buckets(), 'greater');
    if (mw.p < alpha && mc > mp * (1 + this.s.latencyMargin) && mc - mp > this.s.minP99DeltaMs) {
      return (
        `canary v${v} latency median ${ms(mc)} vs production v${prod} ${ms(mp)} (+${((mc / mp - 1) * 100).toFixed(0)} %; margin +${(this.s.latencyMargin * 100).toFixed(0)} % and ${this.s.minP99DeltaMs} ms) ` +
        `over ${hc.count}/${hp.count} requests: Mann-Whitney U one-sided p = ${fmtP(mw.p)} < ${look} (P(canary slower) = ${mw.superiority.toFixed(3)})`
      );
    }

    const cut = pooledQuantileBucket(hc, hp, 0.99);
    const above = (h: LatencyHistogram) => countAbove(h, cut);
    const ac = above(hc);
    const ap = above(hp);
    const pTail = fisherExact(ac, hc.count - ac, ap, hp.count - ap, 'greater');
    const tc = c.p99Ms;
    const tp = p.p99Ms;
    if (pTail < alpha && tc > tp * this.s.maxP99Ratio && tc - tp > this.s.minP99DeltaMs) {
      return (
        `canary v${v} p99 ${ms(tc)} vs production v${prod} ${ms(tp)} (limit ×${this.s.maxP99Ratio} and ${this.s.minP99DeltaMs} ms): ` +
        `${ac} of ${hc.count} canary requests above the pooled p99 (${ms(LatencyHistogram.bucketUpper(cut) / 1000)}) vs ${ap} of ${hp.count}; Fisher's exact test one-sided p = ${fmtP(pTail)} < ${look}`
      );
    }
    return '';
  }

  /** Why the canary scores worse than production on the labelled outcomes, or empty (also while too few are labelled). */
  private worseMetric(name: string, w: Watched, prod: number): string {
    if (!this.s.metric || !this.compare) return '';
    let r: ReturnType<CompareFn>;
    try {
      r = this.compare(name, prod, w.version);
    } catch {
      return '';
    }
    if (r.a.labelled < this.s.minLabelled || r.b.labelled < this.s.minLabelled) return '';
    const d = r.differences.find((x) => x.metric === comparisonMetric(this.s.metric));
    if (!d || !Number.isFinite(d.difference)) return '';
    // A look is a new set of labels: asking again about the same rows is not another test.
    const labelled = `${r.a.labelled}/${r.b.labelled}`;
    if (labelled === w.lastLabelled || this.now() < w.nextMetricLook) return '';
    w.lastLabelled = labelled;
    w.nextMetricLook = this.now() + this.s.lookMs;
    w.metricLooks++;
    const alpha = alphaAtLook(this.s.alpha / this.tests, w.metricLooks);
    const lower = LOWER_IS_BETTER.has(this.s.metric);
    const worse = lower ? d.difference > this.s.metricMargin : d.difference < -this.s.metricMargin;
    if (!(worse && d.pValue < alpha)) return '';
    return (
      `canary v${w.version} ${this.s.metric} ${d.b.toFixed(4)} vs production v${prod} ${d.a.toFixed(4)} (margin ${this.s.metricMargin}) over ${r.b.labelled}/${r.a.labelled} labelled samples: ` +
      `difference ${d.difference.toFixed(4)}, 95 % interval [${d.low.toFixed(4)}, ${d.high.toFixed(4)}], ${d.method} p = ${fmtP(d.pValue)} < α ${fmtP(alpha)} at look ${w.metricLooks}`
    );
  }

  private async act(name: string, w: Watched, fn: () => Promise<void>): Promise<void> {
    w.acting = true;
    try {
      await fn();
      w.done = true;
    } catch (err) {
      // Registry down or a concurrent change: the next tick tries again.
      this.log.warn({ model: name, err: (err as ServiceError).details ?? String(err) }, 'canary action failed');
    } finally {
      w.acting = false;
    }
  }

  private async rollback(name: string, version: number, prod: number, reason: string): Promise<void> {
    await this.registry.clearCanary(name, `canary analysis: ${reason}`);
    this.metrics.canaryRollbacks.inc({ model: name });
    this.alerts.fireOnce({ name, version, rule: 'canary', subject: '', value: version, threshold: prod, message: `canary rolled back: ${reason}` });
    this.log.warn({ model: name, version }, `canary rolled back: ${reason}`);
  }

  private async promote(name: string, version: number): Promise<void> {
    await this.registry.setAlias(name, version, 'production', 0, 'canary analysis: canary held');
    await this.registry.clearCanary(name, `canary analysis: promoted version ${version} to production`);
    this.log.info({ model: name, version }, 'canary promoted');
  }
}

/** The bucket holding the pooled q-quantile of two histograms (nearest rank). */
function pooledQuantileBucket(a: LatencyHistogram, b: LatencyHistogram, q: number): number {
  const ca = a.buckets();
  const cb = b.buckets();
  const rank = Math.max(1, Math.ceil(q * (a.count + b.count)));
  let seen = 0;
  for (let i = 0; i < ca.length; i++) {
    seen += ca[i]! + cb[i]!;
    if (seen >= rank) return i;
  }
  return ca.length - 1;
}

/** Observations of `h` in buckets above bucket `i`. */
function countAbove(h: LatencyHistogram, i: number): number {
  const c = h.buckets();
  let n = 0;
  for (let j = i + 1; j < c.length; j++) n += c[j]!;
  return n;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(2)} %`;
}

function ms(x: number): string {
  return `${x.toFixed(2)} ms`;
}

/** A p-value or α for a reason: 3 significant digits. */
function fmtP(p: number): string {
  return p >= 0.001 ? p.toPrecision(3) : p.toExponential(2);
}
