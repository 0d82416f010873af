/**
 * Alerts: rules evaluated every `intervalMs` over what the monitor already
 * knows (windowed latency and errors, drift, online evaluation, golden
 * probes, canary analysis). Each alert has a stable id (rule + model +
 * version + subject); it fires once after `forEvaluations` bad evaluations in
 * a row and resolves once after `resolveAfter` good ones, so a value that
 * hovers around its threshold does not make a storm. State changes are
 * published on `infermesh.alerts.<name>` (JetStream stream INFERMESH_ALERTS,
 * replayed at start so a restart neither forgets nor re-fires an alert) and
 * streamed to WatchAlerts callers. The monitor starts evaluating only once
 * the state its sources read (drift windows, serving windows, outcomes,
 * lifecycle) has been replayed too, so a restored alert is judged on the
 * same data it fired on. An alert of a version that left service resolves
 * at the next evaluation, with that reason.
 */
import { readFileSync } from 'node:fs';
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { NatsConnection } from 'nats';
import type { Gauge } from 'prom-client';
import { ALERTS_STREAM, NAME_RE, checkName, ensureStream, publishAcked, subjects } from '../../libs/bus/index.js';
import { toStatus } from '../../libs/errors/index.js';
import { unary } from '../../libs/grpc/index.js';
import type { Logger } from '../../libs/log/index.js';
import {
  Alert,
  Alert_State,
  type FeatureDrift,
  type ListAlertsRequest,
  type ListAlertsResponse,
  type MonitorServer,
  type VersionEvaluation,
  type WatchAlertsRequest,
} from '../../libs/proto/index.js';
import type { WindowStats } from './window-stats.js';
import { StreamFollower } from './stream-follower.js';

/** One threshold rule; `model` `*` applies to every model without a rule of its own for the same metric. */
export interface AlertRule {
  model: string;
  /** p99_ms, error_rate, or eval_<metric> (accuracy, precision, recall, f1, roc_auc, log_loss, mse, mae, r2). */
  rule: string;
  above?: number;
  below?: number;
  /** Requests in the window (p99, error rate) or labelled samples (eval) before the rule judges. */
  minCount?: number;
}

/** Evaluation metrics by the names rules and flags use (snake_case, as in the proto). */
export const EVAL_METRICS = ['accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'log_loss', 'mse', 'mae', 'r2'] as const;
export type EvalMetric = (typeof EVAL_METRICS)[number];
/** Where each metric lives in a VersionEvaluation. */
export const EVAL_FIELDS: Record<EvalMetric, keyof VersionEvaluation> = {
  accuracy: 'accuracy',
  precision: 'precision',
  recall: 'recall',
  f1: 'f1',
  roc_auc: 'rocAuc',
  log_loss: 'logLoss',
  mse: 'mse',
  mae: 'mae',
  r2: 'r2',
};

/**
 * Parses an alert rules file: JSON `{"rules": [{"model": "fraud", "rule":
 * "p99_ms", "above": 20}, …]}`. Throws with the rule's index and field when
 * one is malformed (a start-up error, before anything listens).
 */
export function parseAlertRules(text: string, source: string): AlertRule[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${source}: not JSON (${(err as Error).message})`);
  }
  const list = (doc as { rules?: unknown })?.rules;
  if (!Array.isArray(list)) throw new Error(`${source}: expected {"rules": [...]}`);
  return list.map((r: Record<string, unknown>, i) => {
    const at = `${source}: rules[${i}]`;
    if (typeof r !== 'object' || r === null) throw new Error(`${at}: must be an object`);
    const model = r.model ?? '*';
    if (typeof model !== 'string' || (model !== '*' && !NAME_RE.test(model))) throw new Error(`${at}.model: must be * or a model name`);
    const rule = r.rule;
    const known = rule === 'p99_ms' || rule === 'error_rate' || (typeof rule === 'string' && rule.startsWith('eval_') && (EVAL_METRICS as readonly string[]).includes(rule.slice(5)));
    if (!known) throw new Error(`${at}.rule: must be p99_ms, error_rate or eval_<${EVAL_METRICS.join('|')}>`);
    const above = r.above;
    const below = r.below;
    if ((above === undefined) === (below === undefined)) throw new Error(`${at}: give exactly one of above, below`);
    const limit = above ?? below;
    if (typeof limit !== 'number' || !Number.isFinite(limit)) throw new Error(`${at}.${above !== undefined ? 'above' : 'below'}: must be a number`);
    const minCount = r.min_count ?? r.minCount;
    if (minCount !== undefined && !(typeof minCount === 'number' && Number.isInteger(minCount) && minCount >= 0)) throw new Error(`${at}.min_count: must be an integer ≥ 0`);
    return { model, rule: rule as string, above: above as number | undefined, below: below as number | undefined, minCount: minCount as number | undefined };
  });
}

/** Reads --alert-rules (empty path = no file). */
export function loadAlertRules(path: string): AlertRule[] {
  return path ? parseAlertRules(readFileSync(path, 'utf8'), path) : [];
}

/** One look at one condition in one evaluation. */
export interface Observation {
  name: string;
  version: number;
  rule: string;
  subject: string;
  bad: boolean;
  value: number;
  threshold: number;
  message: string;
  /** The condition exists but has no verdict yet (a probe that has not answered since start): nothing changes. */
  pending?: boolean;
}

/** A source of observations, asked once per evaluation. */
export type ObservationSource = () => Observation[];

export interface AlertSettings {
  intervalMs: number;
  /** Bad evaluations in a row before an alert fires. */
  forEvaluations: number;
  /** Good evaluations in a row before a firing alert resolves. */
  resolveAfter: number;
  /** How long ListAlerts keeps showing a resolved alert. */
  retentionMs: number;
  /** Default rules: p99 above this (0 = no rule), error rate above this (0 = no rule). */
  p99Ms: number;
  errorRate: number;
  /** Requests in the window before the default rules judge. */
  minRequests: number;
  rules: AlertRule[];
  natsReplicas: number;
}

interface State {
  alert: Alert;
  firing: boolean;
  bad: number;
  good: number;
}

type Watcher = (a: Alert) => void;

export class AlertEngine {
  private readonly states = new Map<string, State>();
  private readonly sources: ObservationSource[] = [];
  private readonly watchers = new Set<Watcher>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Why a version no longer serves (null while it serves); see serving.ts. */
  private left: (name: string, version: number) => string | null = () => null;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly s: AlertSettings,
    private readonly log: Logger,
    private readonly now: () => number,
    private readonly firingGauge: Gauge<'model' | 'rule'> | undefined,
  ) {}

  /**
   * Ensures the alerts stream and restores alert states from it; start()
   * begins evaluating. `firingGauge` (infermesh_alerts_firing) is set after each evaluation.
   */
  static async create(nc: NatsConnection, s: AlertSettings, log: Logger, firingGauge?: Gauge<'model' | 'rule'>, now: () => number = Date.now): Promise<AlertEngine> {
    const e = new AlertEngine(nc, s, log, now, firingGauge);
    await ensureStream(nc, { name: ALERTS_STREAM, subjects: ['infermesh.alerts.>'], max_age: 7 * 24 * 3600 * 1e9, max_msgs_per_subject: 10_000, num_replicas: s.natsReplicas });
    await e.restore();
    return e;
  }

  /** Evaluates every intervalMs from now on. Idempotent; nothing after close(). */
  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => this.evaluate(), this.s.intervalMs);
    this.timer.unref();
  }

  /**
   * Tells the engine which versions left service: their alerts (except the
   * one-shot canary alert) resolve at the next evaluation with the reason,
   * and their observations are not judged while they stay out.
   */
  setServing(left: (name: string, version: number) => string | null): void {
    this.left = left;
  }

  /** Adds a source of observations (drift, evaluation, probes, canary). */
  addSource(source: ObservationSource): void {
    this.sources.push(source);
  }

  /** The default and configured latency / error-rate rules over the serving window. */
  addServingRules(window: WindowStats): void {
    this.addSource(() => {
      const out: Observation[] = [];
      for (const { name, version } of window.live()) {
        const w = window.summary(name, version);
        for (const metric of ['p99_ms', 'error_rate'] as const) {
          const rule = this.ruleFor(name, metric);
          if (!rule || w.requests < (rule.minCount ?? this.s.minRequests)) continue;
          const value = metric === 'p99_ms' ? w.p99Ms : w.errorRate;
          out.push(judge(name, version, metric, '', value, rule, `${metric} of ${name} v${version} over ${w.requests} requests`));
        }
      }
      return out;
    });
  }

  /** Drift: one alert per drifting feature or output (thresholds are the drift tracker's). */
  addDrift(report: () => FeatureDrift[], psiThreshold: number, ksThreshold: number): void {
    this.addSource(() =>
      report().map((f) => {
        const byPsi = f.psi > psiThreshold || f.ks <= ksThreshold;
        return {
          name: f.name,
          version: f.version,
          rule: byPsi ? 'drift_psi' : 'drift_ks',
          subject: f.feature,
          bad: f.drifting,
          value: byPsi ? f.psi : f.ks,
          threshold: byPsi ? psiThreshold : ksThreshold,
          message: `${byPsi ? 'PSI' : 'KS'} of ${f.feature} in ${f.name} v${f.version} against ${f.baseline} over ${f.window} samples`,
        };
      }),
    );
  }

  /** eval_<metric> rules over the online evaluation of the models they name (or every model with traffic for `*`). */
  addEvaluation(evaluate: (name: string) => VersionEvaluation[], models: () => string[]): void {
    this.addSource(() => {
      const out: Observation[] = [];
      const evalRules = this.s.rules.filter((r) => r.rule.startsWith('eval_'));
      if (evalRules.length === 0) return out;
      const names = new Set(evalRules.filter((r) => r.model !== '*').map((r) => r.model));
      if (evalRules.some((r) => r.model === '*')) for (const n of models()) names.add(n);
      for (const name of names) {
        let evals: VersionEvaluation[];
        try {
          evals = evaluate(name);
        } catch {
          continue;
        }
        for (const ev of evals) {
          for (const metric of EVAL_METRICS) {
            const rule = this.ruleFor(name, `eval_${metric}`);
            if (!rule || ev.labelled < (rule.minCount ?? 1)) continue;
            if (ev.kind === 'classification' ? ['mse', 'mae', 'r2'].includes(metric) : !['mse', 'mae', 'r2'].includes(metric)) continue;
            const value = ev[EVAL_FIELDS[metric]] as number;
            out.push(judge(name, ev.version, `eval_${metric}`, metric, value, rule, `${metric} of ${name} v${ev.version} over ${ev.labelled} labelled samples`));
          }
        }
      }
      return out;
    });
  }

  /** Alerts firing now and those resolved within the retention window, for one model or all. */
  list(name = ''): Alert[] {
    const cutoff = this.now() - this.s.retentionMs;
    const out: Alert[] = [];
    for (const st of this.states.values()) {
      if (name && st.alert.name !== name) continue;
      if (st.alert.state === Alert_State.STATE_UNSPECIFIED) continue; // never fired
      if (!st.firing && st.alert.atMs < cutoff) continue;
      out.push(st.alert);
    }
    return out.sort((a, b) => Number(b.state === Alert_State.FIRING) - Number(a.state === Alert_State.FIRING) || b.atMs - a.atMs);
  }

  /** Calls `fn` with every state change from now on; returns the unsubscribe function. */
  watch(fn: Watcher): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  /** Runs one evaluation now (the timer calls this every intervalMs). */
  evaluate(): void {
    const seen = new Set<string>();
    for (const source of this.sources) {
      let obs: Observation[];
      try {
        obs = source();
      } catch (err) {
        this.log.warn({ err: String(err) }, 'alert source failed');
        continue;
      }
      for (const o of obs) {
        if (o.rule !== 'canary' && this.left(o.name, o.version) !== null) continue;
        // PSI and KS of one feature are one alert (the rule names which crossed).
        const id = alertId(o.rule.startsWith('drift_') ? 'drift' : o.rule, o.name, o.version, o.subject);
        seen.add(id);
        if (!o.pending) this.step(id, o);
      }
    }
    // A condition nobody reports any more (no traffic, version gone) counts as good; a version out of service resolves at once.
    const cutoff = this.now() - this.s.retentionMs;
    for (const [id, st] of this.states) {
      if (seen.has(id)) continue;
      const a = st.alert;
      const gone = st.firing && a.rule !== 'canary' ? this.left(a.name, a.version) : null;
      if (gone !== null) {
        st.bad = st.good = 0;
        this.change(st, Alert_State.RESOLVED, a.value, `resolved: version ${a.version} of ${a.name} no longer serves (${gone}): ${a.message}`);
      } else if (st.firing) this.step(id, null);
      else if (st.alert.state === Alert_State.STATE_UNSPECIFIED || st.alert.atMs < cutoff) this.states.delete(id);
    }
    if (this.firingGauge) {
      this.firingGauge.reset();
      for (const st of this.states.values()) if (st.firing) this.firingGauge.inc({ model: st.alert.name, rule: st.alert.rule });
    }
  }

  /**
   * Fires a one-shot alert now (e.g. a canary rolled back): it fires, then
   * resolves after `resolveAfter` evaluations that do not repeat it.
   */
  fireOnce(o: Omit<Observation, 'bad'>): void {
    const id = alertId(o.rule, o.name, o.version, o.subject);
    const st = this.states.get(id);
    if (st?.firing) return;
    this.step(id, { ...o, bad: true }, true);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.watchers.clear();
  }

  private ruleFor(name: string, metric: string): AlertRule | undefined {
    const own = this.s.rules.find((r) => r.model === name && r.rule === metric);
    if (own) return own;
    const any = this.s.rules.find((r) => r.model === '*' && r.rule === metric);
    if (any) return any;
    if (metric === 'p99_ms' && this.s.p99Ms > 0) return { model: '*', rule: metric, above: this.s.p99Ms };
    if (metric === 'error_rate' && this.s.errorRate > 0) return { model: '*', rule: metric, above: this.s.errorRate };
    return undefined;
  }

  private step(id: string, o: Observation | null, immediate = false): void {
    let st = this.states.get(id);
    if (!o) {
      if (!st) return;
      st.good++;
      st.bad = 0;
      if (st.firing && st.good >= this.s.resolveAfter) this.change(st, Alert_State.RESOLVED, st.alert.value, `resolved (no longer reported): ${st.alert.message}`);
      return;
    }
    if (!st) {
      st = { alert: toAlert(id, o, Alert_State.STATE_UNSPECIFIED, this.now()), firing: false, bad: 0, good: 0 };
      this.states.set(id, st);
    }
    if (o.bad) {
      st.bad++;
      st.good = 0;
      if (st.firing) {
        st.alert.value = o.value;
        return;
      }
      if (immediate || st.bad >= this.s.forEvaluations) {
        st.alert = toAlert(id, o, Alert_State.FIRING, this.now());
        st.alert.sinceMs = st.alert.atMs;
        st.firing = true;
        this.emit(st.alert);
      }
    } else {
      st.good++;
      st.bad = 0;
      if (st.firing && st.good >= this.s.resolveAfter) this.change(st, Alert_State.RESOLVED, o.value, `resolved: ${o.message}`);
    }
  }

  private change(st: State, state: Alert_State, value: number, message: string): void {
    st.firing = state === Alert_State.FIRING;
    st.alert = { ...st.alert, state, value, message, atMs: this.now() };
    this.emit(st.alert);
  }

  private emit(a: Alert): void {
    for (const w of this.watchers) {
      try {
        w(a);
      } catch (err) {
        this.log.debug({ err: String(err) }, 'alert watcher failed');
      }
    }
    this.log.warn({ alert: a.id, state: Alert_State[a.state], value: a.value, threshold: a.threshold }, a.message);
    // Acknowledged and retried through a leader election (30 s); the message id keeps a retry from storing it twice.
    publishAcked(this.nc.jetstream(), subjects.alerts(a.name), Alert.encode(a).finish(), { deadline: Date.now() + 30_000, msgID: `${a.id}:${a.atMs}:${a.state}` }).catch(
      (err: unknown) => this.log.warn({ err: String(err), alert: a.id }, 'alert not stored in NATS'),
    );
  }

  /**
   * Replays the alerts stream up to what was stored before this start: the
   * last state of each alert id wins. Stops there, so the engine's own
   * publishes later never reset a streak.
   */
  private async restore(): Promise<void> {
    const replay = new StreamFollower(
      this.nc,
      ALERTS_STREAM,
      (m) => {
        try {
          const a = Alert.decode(m.data);
          this.states.set(a.id, { alert: a, firing: a.state === Alert_State.FIRING, bad: 0, good: 0 });
        } catch {
          // Not an alert: skipped.
        }
      },
      this.log,
    );
    replay.start();
    await replay.caughtUp;
    await replay.stop();
  }
}

function alertId(rule: string, name: string, version: number, subject: string): string {
  return subject ? `${rule}:${name}:v${version}:${subject}` : `${rule}:${name}:v${version}`;
}

function judge(name: string, version: number, rule: string, subject: string, value: number, r: AlertRule, what: string): Observation {
  const above = r.above !== undefined;
  const threshold = (above ? r.above : r.below)!;
  const bad = above ? value > threshold : value < threshold;
  const op = bad ? (above ? '>' : '<') : above ? '≤' : '≥';
  return { name, version, rule, subject, bad, value, threshold, message: `${what}: ${fmt(value)} ${op} ${fmt(threshold)}` };
}

function toAlert(id: string, o: Observation, state: Alert_State, at: number): Alert {
  return {
    id,
    name: o.name,
    version: o.version,
    rule: o.rule,
    subject: o.subject,
    state,
    value: o.value,
    threshold: o.threshold,
    message: o.message,
    atMs: at,
    sinceMs: at,
  };
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
}

/** ListAlerts and WatchAlerts over the engine. */
export function alertHandlers(engine: AlertEngine): Pick<MonitorServer, 'listAlerts' | 'watchAlerts'> {
  return {
    listAlerts: unary<ListAlertsRequest, ListAlertsResponse>(async (req) => {
      const name = req.name === '' ? '' : checkName(req.name, 'name');
      return { alerts: engine.list(name) };
    }),
    watchAlerts: (call: ServerWritableStream<WatchAlertsRequest, Alert>) => {
      let name: string;
      try {
        name = call.request.name === '' ? '' : checkName(call.request.name, 'name');
      } catch (err) {
        call.emit('error', toStatus(err));
        return;
      }
      for (const a of engine.list(name)) if (a.state === Alert_State.FIRING) call.write(a);
      const stop = engine.watch((a) => {
        if (!name || a.name === name) call.write(a);
      });
      const end = (): void => {
        stop();
      };
      call.once('cancelled', end);
      call.once('close', end);
      call.once('error', end);
    },
  };
}
