/**
 * Automatic canary analysis: while a model has a canary, compare the canary
 * version with production over the serving window — error rate, p99 and,
 * once both have enough labelled outcomes, an evaluation metric. When the
 * canary is worse beyond the configured margin it is rolled back through the
 * registry (SetCanary clear with the reason, which the lifecycle history
 * keeps as ROLLED_BACK of alias `canary`) and a `canary` alert fires. When it
 * has held for `promoteAfterMs` (0 = never), it is promoted.
 */
import type { ServiceError } from '@grpc/grpc-js';
import type { RegistryApi } from '../../libs/client/index.js';
import type { Logger } from '../../libs/log/index.js';
import { TrafficRecord, type VersionEvaluation } from '../../libs/proto/index.js';
import { EVAL_FIELDS, EVAL_METRICS, type AlertEngine, type EvalMetric } from './alerts.js';
import type { MonitorMetrics } from './metrics.js';
import type { WindowStats, WindowSummary } from './window-stats.js';

export interface CanarySettings {
  intervalMs: number;
  /** Canary requests in the window before it is judged. */
  minRequests: number;
  /** Rolled back when its error rate exceeds production's by more than this (absolute). */
  maxErrorRateIncrease: number;
  /** Rolled back when its p99 exceeds production's times this … */
  maxP99Ratio: number;
  /** … and by more than this many milliseconds (sub-millisecond noise is not a regression). */
  minP99DeltaMs: number;
  /** Evaluation metric compared when outcomes exist (f1, roc_auc, accuracy, … or mse/mae for regressors); empty = none. */
  metric: string;
  /** Rolled back when the metric is worse than production's by more than this (absolute). */
  metricMargin: number;
  /** Labelled samples each version needs before the metric is compared. */
  minLabelled: number;
  /** Promote a canary that held this long with enough traffic (0 = never promote). */
  promoteAfterMs: number;
}

interface Watched {
  version: number;
  since: number;
  acting: boolean;
  done: boolean;
}

const LOWER_IS_BETTER = new Set(['log_loss', 'mse', 'mae']);

/** Metric names --canary-metric accepts. */
export const CANARY_METRICS: readonly string[] = EVAL_METRICS;

export class CanaryAnalysis {
  private readonly traffic = new Map<string, TrafficRecord>();
  private readonly watched = new Map<string, Watched>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly window: WindowStats,
    private readonly evaluate: ((name: string) => VersionEvaluation[]) | null,
    private readonly registry: RegistryApi,
    private readonly alerts: AlertEngine,
    private readonly metrics: MonitorMetrics,
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
    else if (!w || w.version !== v) this.watched.set(name, { version: v, since: this.now(), acting: false, done: false });
  }

  /**
   * Judges every running canary once; returns the verdicts (for tests and
   * logs). Rolls back or promotes through the registry.
   */
  async tick(): Promise<{ name: string; version: number; verdict: 'rollback' | 'promote' | 'hold' | 'wait'; reason: string }[]> {
    const out: { name: string; version: number; verdict: 'rollback' | 'promote' | 'hold' | 'wait'; reason: string }[] = [];
    for (const [name, w] of this.watched) {
      if (w.acting || w.done) continue;
      const prod = this.traffic.get(name)?.aliases['production'];
      if (!prod || prod === w.version) continue;
      const c = this.window.summary(name, w.version);
      const p = this.window.summary(name, prod);
      // Errors and latency need live canary traffic in the window; the evaluation metric needs labelled outcomes (which may come later).
      const live = c.requests >= this.s.minRequests;
      const reason = (live ? this.worseServing(w.version, prod, c, p) : '') || this.worseMetric(name, w.version, prod);
      if (reason) {
        out.push({ name, version: w.version, verdict: 'rollback', reason });
        await this.act(name, w, () => this.rollback(name, w.version, prod, reason));
      } else if (!live) {
        out.push({ name, version: w.version, verdict: 'wait', reason: `${c.requests} of ${this.s.minRequests} canary requests in the window` });
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

  /** Why the canary serves worse than production (errors, p99) over the window, or empty. */
  private worseServing(version: number, prod: number, c: WindowSummary, p: WindowSummary): string {
    if (c.errorRate > p.errorRate + this.s.maxErrorRateIncrease) {
      return `canary v${version} error rate ${pct(c.errorRate)} vs production v${prod} ${pct(p.errorRate)} (margin ${pct(this.s.maxErrorRateIncrease)}) over ${c.requests} requests`;
    }
    if (p.requests > 0 && c.p99Ms > p.p99Ms * this.s.maxP99Ratio && c.p99Ms - p.p99Ms > this.s.minP99DeltaMs) {
      return `canary v${version} p99 ${c.p99Ms.toFixed(2)} ms vs production v${prod} ${p.p99Ms.toFixed(2)} ms (limit ×${this.s.maxP99Ratio})`;
    }
    return '';
  }

  /** Why the canary scores worse than production on the labelled outcomes, or empty (also while too few are labelled). */
  private worseMetric(name: string, version: number, prod: number): string {
    if (!this.s.metric || !this.evaluate) return '';
    let evals: VersionEvaluation[];
    try {
      evals = this.evaluate(name);
    } catch {
      return '';
    }
    const ce = evals.find((e) => e.version === version);
    const pe = evals.find((e) => e.version === prod);
    if (!ce || !pe || ce.labelled < this.s.minLabelled || pe.labelled < this.s.minLabelled || ce.kind !== pe.kind) return '';
    if (!(EVAL_METRICS as readonly string[]).includes(this.s.metric)) return '';
    const field = EVAL_FIELDS[this.s.metric as EvalMetric];
    const cv = ce[field] as number;
    const pv = pe[field] as number;
    const lower = LOWER_IS_BETTER.has(this.s.metric);
    const bad = lower ? cv > pv + this.s.metricMargin : cv < pv - this.s.metricMargin;
    return bad
      ? `canary v${version} ${this.s.metric} ${cv.toFixed(4)} vs production v${prod} ${pv.toFixed(4)} (margin ${this.s.metricMargin}) over ${ce.labelled} labelled samples`
      : '';
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

function pct(x: number): string {
  return `${(x * 100).toFixed(2)} %`;
}
