/**
 * Ground truth and online evaluation. The routers' sample batches are kept
 * by NATS in the INFERMESH_SAMPLES stream (they publish with plain, fire-and-
 * forget NATS publishes; the stream captures them even while the monitor is
 * down) and recorded outcomes in INFERMESH_OUTCOMES. The OutcomeStore takes
 * the samples from the monitor's SampleFeed (replayed, then live) and
 * follows the outcomes stream once the samples are replayed: every change
 * to memory comes through the streams, so a restarted monitor rebuilds the
 * same joined pairs and the same evaluation.
 *
 * Kept per model: prediction samples that carry a request id and succeeded
 * (request id → version, output, time, label), at most `perModel` of them,
 * the oldest evicted first, none older than the retention; and outcomes
 * whose sample has not arrived yet (same bounds), which join when it does.
 */
import type { JsMsg, NatsConnection } from 'nats';
import { nanos } from 'nats';
import { checkName, ensureStream, NAME_RE, OUTCOMES_STREAM, publishAcked, subjects } from '../../libs/bus/index.js';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError } from '../../libs/errors/index.js';
import { unary, type CallContext } from '../../libs/grpc/index.js';
import type { Logger } from '../../libs/log/index.js';
import {
  OutcomeBatch,
  type CostModel,
  type SampleBatch,
  type GetEvaluationRequest,
  type GetEvaluationResponse,
  type MonitorServer,
  type Outcome,
  type RecordOutcomesRequest,
  type RecordOutcomesResponse,
  type VersionEvaluation,
} from '../../libs/proto/index.js';
import { DEFAULT_THRESHOLD, evaluate, evaluationKind, toPrediction, type Prediction } from './evaluation.js';
import { compareVersions, KindMismatch, type CompareOptions, type LabelledRows } from './comparison.js';
import { expectedCost, optimalThreshold } from './cost.js';
import { checkCost } from './experiments.js';
import { binaryScore } from './evaluation.js';
import { StreamFollower } from './stream-follower.js';
import { SampleFeed } from './sample-feed.js';

/** Default: samples and outcomes are kept 7 days. */
export const DEFAULT_OUTCOME_RETENTION_MS = 7 * 24 * 3_600_000;
/** Default cap of the samples stream (and of the outcomes stream). */
export const DEFAULT_SAMPLES_STREAM_MAX_BYTES = 512 * 1024 * 1024;
/** Default number of samples (and of waiting outcomes) kept per model. */
export const DEFAULT_OUTCOME_SAMPLES_PER_MODEL = 200_000;
/** At most this many pairs per RecordOutcomes call. */
export const MAX_OUTCOMES_PER_CALL = 10_000;
/** Longest request id accepted (longer ones are never kept from samples either). */
export const MAX_REQUEST_ID_CHARS = 128;

/** Longest wait for a JetStream acknowledgement. */
const PUBLISH_TIMEOUT_MS = 5_000;
/** Longest wait, after the ack, for the consumer to apply what was recorded (then joined counts what is known). */
const APPLY_WAIT_MS = 5_000;
/** Room left in a NATS message for the batch's other fields and headers. */
const PAYLOAD_HEADROOM = 4096;

export interface OutcomeStoreOptions {
  /** How long samples and outcomes are kept (stream max_age and in memory). */
  retentionMs?: number;
  /** max_bytes of each of the two streams when this store creates them. */
  streamMaxBytes?: number;
  /** Samples (and, separately, waiting outcomes) kept per model; the oldest go first. */
  perModel?: number;
  /** JetStream replicas of the streams when this store creates them. */
  replicas?: number;
  now?: () => number;
  /** Segment parameter and cost model per model (default: none). */
  settings?: SettingsSource;
}

interface Kept {
  version: number;
  at: number;
  prediction: Prediction;
  /** NaN until an outcome joins. */
  label: number;
  /** The value of the model's segment parameter ('' = none). */
  segment: string;
  /** The sample's input summary, then its output summary (for export). */
  values: Float32Array;
  /** How many of `values` are inputs. */
  inputs: number;
}

/** One kept, labelled row as exported (the arrays are views into what the store keeps: copy before keeping). */
export interface JoinedRow {
  requestId: string;
  at: number;
  version: number;
  segment: string;
  label: number;
  features: Float32Array;
  outputs: Float32Array;
}

/** Which rows an export or a comparison takes. */
export interface RowFilter {
  /** 0 = every version. */
  version?: number;
  /** Only rows sampled at or after (epoch ms). */
  sinceMs?: number;
  /** Only rows of this segment value (undefined = all). */
  segment?: string;
}

/** Evaluation options beyond the threshold. */
export interface EvaluateOptions {
  /** Also one row per (version, segment value). */
  bySegment?: boolean;
  /** Replaces the model's cost model. */
  cost?: CostModel;
}

/** The model's settings from its version records (segment parameter, cost model). */
export interface SettingsSource {
  segmentBy(name: string): string;
  cost(name: string): CostModel | undefined;
}

interface Waiting {
  label: number;
  at: number;
}

interface ModelState {
  /** request id → sample, in arrival order. */
  samples: Map<string, Kept>;
  /** request id → outcome whose sample has not arrived (yet), in arrival order. */
  pending: Map<string, Waiting>;
  /** Bumped whenever a labelled sample is added, changed or dropped: the cached evaluation is stale. */
  rev: number;
  cached: { rev: number; key: string; result: VersionEvaluation[] } | null;
  /** The last comparison (the canary analysis asks for the same one every evaluation). */
  compared: { rev: number; key: string; result: ReturnType<typeof compareVersions> } | null;
}

/**
 * Joins ground-truth outcomes to prediction samples and evaluates each
 * version. Create with {@link OutcomeStore.create}; close with close().
 */
export class OutcomeStore {
  private readonly byModel = new Map<string, ModelState>();
  private readonly outcomesFeed: StreamFollower;
  private readonly waiters = new Set<{ seq: number; resolve: () => void }>();
  private readonly ready: Promise<void>;
  private closing: Promise<void> | null = null;
  private readonly retentionMs: number;
  private readonly perModel: number;
  private readonly now: () => number;
  readonly settings: SettingsSource;

  private constructor(
    private readonly nc: NatsConnection,
    o: OutcomeStoreOptions,
    private readonly log: Logger,
    private readonly samples: SampleFeed,
    /** Whether this store created the feed (then it starts and stops it). */
    private readonly ownsFeed: boolean,
  ) {
    this.retentionMs = o.retentionMs ?? DEFAULT_OUTCOME_RETENTION_MS;
    this.perModel = o.perModel ?? DEFAULT_OUTCOME_SAMPLES_PER_MODEL;
    this.now = o.now ?? Date.now;
    this.settings = o.settings ?? { segmentBy: () => '', cost: () => undefined };
    samples.onBatch((b) => this.applySamples(b));
    this.outcomesFeed = new StreamFollower(nc, OUTCOMES_STREAM, (m) => this.applyOutcomes(m), log);
    // Samples first: replayed outcomes then join directly instead of crowding the waiting map.
    this.ready = samples.caughtUp.then(() => {
      this.outcomesFeed.start();
      return this.outcomesFeed.caughtUp;
    });
    void this.ready.then(() => {
      let kept = 0;
      for (const m of this.byModel.values()) kept += m.samples.size;
      log.info({ models: this.byModel.size, kept }, 'stored samples and outcomes replayed');
    });
  }

  /**
   * Ensures the outcomes stream (file storage, limits retention, max_age =
   * retention, max_bytes cap) and takes samples from `feed`, which the caller
   * starts once its other listeners are added; without `feed` the store
   * opens (and starts) a feed of its own. Replays in the background; queries
   * wait for the replay ({@link whenReady}).
   */
  static async create(nc: NatsConnection, o: OutcomeStoreOptions, log: Logger, feed?: SampleFeed): Promise<OutcomeStore> {
    const retentionMs = o.retentionMs ?? DEFAULT_OUTCOME_RETENTION_MS;
    const maxBytes = o.streamMaxBytes ?? DEFAULT_SAMPLES_STREAM_MAX_BYTES;
    const samples = feed ?? (await SampleFeed.create(nc, { retentionMs, maxBytes, replicas: o.replicas }, log));
    await ensureStream(nc, { name: OUTCOMES_STREAM, subjects: ['infermesh.outcomes.>'], max_age: nanos(retentionMs), max_bytes: maxBytes, num_replicas: o.replicas ?? 1 });
    const store = new OutcomeStore(nc, o, log, samples, !feed);
    if (!feed) await samples.start();
    return store;
  }

  /**
   * Resolves once the stored samples and outcomes have been replayed; rejects
   * with UNAVAILABLE when `signal` aborts first.
   */
  whenReady(signal?: AbortSignal): Promise<void> {
    if (!signal) return this.ready;
    return new Promise((resolve, reject) => {
      const abort = () => reject(new UnavailableError('the monitor is still replaying stored samples and outcomes; retry shortly'));
      if (signal.aborted) return abort();
      signal.addEventListener('abort', abort, { once: true });
      void this.ready.then(() => {
        signal.removeEventListener('abort', abort);
        resolve();
      });
    });
  }

  /** Models with kept samples (within the retention), sorted. */
  models(): string[] {
    return [...this.byModel.keys()].filter((name) => this.hasSamples(name)).sort();
  }

  /** Whether `name` has kept samples (within the retention). */
  hasSamples(name: string): boolean {
    const m = this.byModel.get(name);
    if (!m) return false;
    this.trim(m);
    return m.samples.size > 0;
  }

  /**
   * Stores `outcomes` of model `name` in JetStream (one message, or several
   * when they exceed NATS's max payload), waits for the acknowledgements,
   * then briefly for this store to apply them. Returns the pairs stored and,
   * of those, how many have a kept sample. Validate first ({@link checkOutcomes}).
   * Throws UNAVAILABLE when JetStream does not acknowledge (NATS down).
   */
  async record(name: string, outcomes: readonly Outcome[], ctx: Pick<CallContext, 'deadline' | 'signal' | 'subject'>): Promise<RecordOutcomesResponse> {
    if (outcomes.length === 0) return { recorded: 0, joined: 0 };
    const js = this.nc.jetstream();
    const limit = Math.min(this.nc.info?.max_payload ?? 1024 * 1024, 1024 * 1024) - PAYLOAD_HEADROOM;
    let lastSeq = 0;
    for (const chunk of chunks(outcomes, limit)) {
      const data = OutcomeBatch.encode({ name, outcomes: chunk, atMs: this.now(), recordedBy: ctx.subject ?? '' }).finish();
      // Retried through a leader election until shortly before the caller's deadline; the content's
      // message id keeps a retry whose first acknowledgement was lost from storing the batch twice.
      const deadline = Math.min(ctx.deadline - 200, Date.now() + PUBLISH_TIMEOUT_MS);
      try {
        lastSeq = (await publishAcked(js, subjects.outcomes(name), data, { deadline, expect: { streamName: OUTCOMES_STREAM } })).seq;
      } catch (err) {
        throw new UnavailableError('outcomes could not be stored: NATS JetStream did not acknowledge; retry (recording is idempotent)', { cause: err });
      }
    }
    await this.applied(lastSeq, Math.min(ctx.deadline - 100, Date.now() + APPLY_WAIT_MS), ctx.signal);
    const samples = this.byModel.get(name)?.samples;
    let joined = 0;
    if (samples) for (const o of outcomes) if (samples.has(o.requestId)) joined++;
    return { recorded: outcomes.length, joined };
  }

  /**
   * Evaluation of each version of `name` that has labelled samples, by
   * version (see evaluation.ts for the metrics and the score rule). Empty
   * when nothing is labelled yet. `threshold` must be in (0, 1).
   */
  evaluate(name: string, threshold = DEFAULT_THRESHOLD, o: EvaluateOptions = {}): VersionEvaluation[] {
    const m = this.byModel.get(name);
    if (!m) return [];
    this.trim(m);
    const cost = o.cost ?? this.settings.cost(name);
    const key = `${threshold}|${o.bySegment === true}|${cost ? `${cost.costFp},${cost.costFn},${cost.valueTp}` : ''}`;
    // The alert engine and the canary analysis ask every few seconds; labels change far less often.
    if (m.cached?.rev === m.rev && m.cached.key === key) return m.cached.result.map((e) => ({ ...e }));
    const groups = new Map<string, { version: number; segment: string } & LabelledRows>();
    const add = (version: number, segment: string, k: Kept) => {
      const id = `${version}\u0000${segment}`;
      let g = groups.get(id);
      if (!g) groups.set(id, (g = { version, segment, predictions: [], labels: [] }));
      (g.predictions as Prediction[]).push(k.prediction);
      (g.labels as number[]).push(k.label);
    };
    for (const k of m.samples.values()) {
      if (Number.isNaN(k.label)) continue;
      add(k.version, '', k);
      if (o.bySegment) add(k.version, k.segment, k);
    }
    const result = [...groups.values()]
      .sort((a, b) => a.version - b.version || a.segment.localeCompare(b.segment))
      .map((g): VersionEvaluation => {
        const e = evaluate(g.predictions, g.labels, threshold);
        const c = cost && evaluationKind(g.predictions, g.labels) === 'binary' ? costOf(g, threshold, cost) : NO_COST;
        return {
          name, version: g.version, kind: e.kind, labelled: e.labelled, threshold: e.threshold,
          accuracy: e.accuracy, precision: e.precision, recall: e.recall, f1: e.f1, rocAuc: e.rocAuc, logLoss: e.logLoss,
          mse: e.mse, mae: e.mae, r2: e.r2, segment: g.segment, ...c,
        };
      });
    m.cached = { rev: m.rev, key, result };
    return result.map((e) => ({ ...e }));
  }

  /** The labelled rows of one version of `name` (within `filter`), for comparisons. */
  rows(name: string, filter: RowFilter): LabelledRows {
    const predictions: Prediction[] = [];
    const labels: number[] = [];
    for (const k of this.kept(name, filter)) {
      predictions.push(k.prediction);
      labels.push(k.label);
    }
    return { predictions, labels };
  }

  /**
   * Compares versions `a` and `b` of `name` on their labelled rows (see
   * comparison.ts); the last answer is cached until a label changes. Throws
   * NOT_FOUND when either has no labelled rows (in the segment) and
   * FAILED_PRECONDITION when they are of different kinds.
   */
  compare(name: string, a: number, b: number, o: CompareOptions & { segment?: string }): ReturnType<typeof compareVersions> {
    const m = this.byModel.get(name);
    if (m) this.trim(m);
    const cost = o.cost ?? this.settings.cost(name);
    const key = JSON.stringify([a, b, o.threshold, o.confidence, o.minDifference, o.power, o.resamples, o.seed, o.segment ?? null, cost ?? null]);
    if (m?.compared && m.compared.rev === m.rev && m.compared.key === key) return m.compared.result;
    const ra = this.rows(name, { version: a, segment: o.segment });
    const rb = this.rows(name, { version: b, segment: o.segment });
    const where = o.segment !== undefined ? ` in segment ${JSON.stringify(o.segment)}` : '';
    for (const [v, r] of [[a, ra], [b, rb]] as const) if (r.labels.length === 0) throw new NotFoundError(`version ${v} of ${name} has no labelled samples${where}`);
    let result: ReturnType<typeof compareVersions>;
    try {
      result = compareVersions(a, ra, b, rb, { ...o, cost });
    } catch (err) {
      if (err instanceof KindMismatch) throw new FailedPreconditionError(err.message);
      throw err;
    }
    if (m) m.compared = { rev: m.rev, key, result };
    return result;
  }

  /**
   * The kept labelled rows of `name` within `filter`, oldest first, as views
   * (nothing is copied; a row added while iterating may be included). Rows
   * sampled after the call are left out.
   */
  *joinedRows(name: string, filter: RowFilter = {}): Generator<JoinedRow> {
    const m = this.byModel.get(name);
    if (!m) return;
    this.trim(m);
    const until = this.now();
    for (const [requestId, k] of m.samples) {
      if (Number.isNaN(k.label) || k.at > until) continue;
      if ((filter.version && k.version !== filter.version) || (filter.sinceMs && k.at < filter.sinceMs)) continue;
      if (filter.segment !== undefined && k.segment !== filter.segment) continue;
      yield { requestId, at: k.at, version: k.version, segment: k.segment, label: k.label, features: k.values.subarray(0, k.inputs), outputs: k.values.subarray(k.inputs) };
    }
  }

  /** Widest input and output summaries among the labelled rows of `name` within `filter`. */
  widths(name: string, filter: RowFilter = {}): { inputs: number; outputs: number } {
    let inputs = 0;
    let outputs = 0;
    for (const k of this.kept(name, filter)) {
      inputs = Math.max(inputs, k.inputs);
      outputs = Math.max(outputs, k.values.length - k.inputs);
    }
    return { inputs, outputs };
  }

  /** Labelled kept samples of `name` within `filter`. */
  private *kept(name: string, filter: RowFilter): Generator<Kept> {
    const m = this.byModel.get(name);
    if (!m) return;
    for (const k of m.samples.values()) {
      if (Number.isNaN(k.label)) continue;
      if ((filter.version && k.version !== filter.version) || (filter.sinceMs && k.at < filter.sinceMs)) continue;
      if (filter.segment !== undefined && k.segment !== filter.segment) continue;
      yield k;
    }
  }

  /** Stops following the streams. Idempotent. */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      for (const w of this.waiters) w.resolve();
      this.waiters.clear();
      await Promise.all([this.ownsFeed ? this.samples.stop() : undefined, this.outcomesFeed.stop()]);
    })());
  }

  /** Resolves once the outcomes consumer has applied stream sequence `seq`, or at `until` (epoch ms), or on abort. */
  private applied(seq: number, until: number, signal: AbortSignal): Promise<void> {
    if (this.outcomesFeed.sequence >= seq || this.closing) return Promise.resolve();
    return new Promise((resolve) => {
      const w = {
        seq,
        resolve: () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', w.resolve);
          this.waiters.delete(w);
          resolve();
        },
      };
      const timer = setTimeout(w.resolve, Math.max(0, until - Date.now()));
      signal.addEventListener('abort', w.resolve, { once: true });
      this.waiters.add(w);
    });
  }

  private model(name: string): ModelState {
    let m = this.byModel.get(name);
    if (!m) this.byModel.set(name, (m = { samples: new Map(), pending: new Map(), rev: 0, cached: null, compared: null }));
    return m;
  }

  /** One checked SampleBatch from the samples feed (replayed or live). */
  private applySamples(batch: SampleBatch): void {
    const cutoff = this.now() - this.retentionMs;
    let m: ModelState | undefined;
    for (const s of batch.samples) {
      if (s.requestId === '' || s.requestId.length > MAX_REQUEST_ID_CHARS || s.code !== 0) continue;
      const at = s.atMs > 0 ? s.atMs : batch.endMs;
      if (at < cutoff) continue;
      const prediction = toPrediction(s.outputSummary);
      if (!prediction) continue;
      m ??= this.model(batch.name);
      // A repeated request id: the newest sample wins, keeping a label already joined.
      const waiting = m.pending.get(s.requestId);
      const label = waiting ? waiting.label : (m.samples.get(s.requestId)?.label ?? NaN);
      if (waiting) m.pending.delete(s.requestId);
      const before = m.samples.get(s.requestId);
      if (before) m.samples.delete(s.requestId);
      if (!Number.isNaN(label) || (before && !Number.isNaN(before.label))) m.rev++;
      const values = new Float32Array(s.inputSummary.length + s.outputSummary.length);
      values.set(s.inputSummary);
      values.set(s.outputSummary, s.inputSummary.length);
      m.samples.set(s.requestId, { version: s.version, at, prediction, label, segment: s.segment ?? '', values, inputs: s.inputSummary.length });
    }
    if (m) this.trim(m);
  }

  /** One OutcomeBatch from the outcomes stream: joins each pair or keeps it waiting for its sample. */
  private applyOutcomes(msg: JsMsg): void {
    try {
      let batch: OutcomeBatch | null = null;
      try {
        batch = OutcomeBatch.decode(msg.data);
      } catch (err) {
        this.log.debug({ subject: msg.subject, err: String(err) }, 'dropped undecodable outcome batch');
      }
      if (batch && NAME_RE.test(batch.name) && msg.subject === subjects.outcomes(batch.name)) {
        const m = this.model(batch.name);
        const at = batch.atMs > 0 ? batch.atMs : this.now();
        for (const o of batch.outcomes) {
          if (o.requestId === '' || o.requestId.length > MAX_REQUEST_ID_CHARS || !Number.isFinite(o.label)) continue;
          const kept = m.samples.get(o.requestId);
          if (kept) {
            kept.label = o.label;
            m.rev++;
          } else {
            m.pending.delete(o.requestId);
            m.pending.set(o.requestId, { label: o.label, at });
          }
        }
        this.trim(m);
      }
    } finally {
      for (const w of this.waiters) if (w.seq <= msg.seq) w.resolve();
    }
  }

  /** Drops the oldest samples and waiting outcomes beyond the cap or older than the retention. */
  private trim(m: ModelState): void {
    const cutoff = this.now() - this.retentionMs;
    for (const map of [m.samples, m.pending] as Map<string, { at: number; label: number }>[]) {
      let excess = map.size - this.perModel;
      for (const [id, v] of map) {
        if (excess <= 0 && v.at >= cutoff) break;
        map.delete(id);
        if (map === m.samples && !Number.isNaN(v.label)) m.rev++;
        excess--;
      }
    }
  }
}

const NO_COST = Object.freeze({ costPer1000: NaN, costPer1000Low: NaN, costPer1000High: NaN, optimalThreshold: NaN, optimalCostPer1000: NaN });

/** A binary classifier's expected cost per 1,000 decisions at `threshold` (with its interval) and its cost-minimising threshold. */
function costOf(rows: LabelledRows, threshold: number, cost: CostModel): typeof NO_COST {
  const scores = rows.predictions.map(binaryScore);
  const e = expectedCost(scores, rows.labels, threshold, cost);
  const best = optimalThreshold(scores, rows.labels, cost);
  return { costPer1000: e.per1000, costPer1000Low: e.interval.low, costPer1000High: e.interval.high, optimalThreshold: best.threshold, optimalCostPer1000: best.per1000 };
}

/** Splits `outcomes` into runs whose encoded size stays under `limit` bytes. */
function* chunks(outcomes: readonly Outcome[], limit: number): Generator<Outcome[]> {
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < outcomes.length; i++) {
    // Field tags, lengths and the 8-byte double, plus the id's UTF-8 bytes.
    const size = Buffer.byteLength(outcomes[i]!.requestId) + 16;
    if (bytes + size > limit && i > start) {
      yield outcomes.slice(start, i);
      start = i;
      bytes = 0;
    }
    bytes += size;
  }
  yield outcomes.slice(start);
}

/**
 * Validates a RecordOutcomes request: a valid model name, at most 10,000
 * pairs, each with a non-empty request id of at most 128 characters and a
 * finite label. Throws INVALID_ARGUMENT naming the field (e.g. `outcomes[3].label`).
 */
export function checkOutcomes(req: RecordOutcomesRequest): void {
  checkName(req.name, 'name');
  if (req.outcomes.length > MAX_OUTCOMES_PER_CALL) {
    throw new InvalidArgumentError('outcomes', `at most ${MAX_OUTCOMES_PER_CALL} pairs per call (got ${req.outcomes.length}); send them in batches`);
  }
  req.outcomes.forEach((o, i) => {
    if (o.requestId === '') throw new InvalidArgumentError(`outcomes[${i}].request_id`, 'must not be empty');
    if (o.requestId.length > MAX_REQUEST_ID_CHARS) throw new InvalidArgumentError(`outcomes[${i}].request_id`, `must be at most ${MAX_REQUEST_ID_CHARS} characters`);
    if (!Number.isFinite(o.label)) throw new InvalidArgumentError(`outcomes[${i}].label`, 'must be a finite number');
  });
}

/**
 * The threshold a GetEvaluation request asks for: 0 means the default
 * (0.5); otherwise it must lie strictly between 0 and 1 (INVALID_ARGUMENT).
 */
export function checkThreshold(threshold: number): number {
  if (threshold === 0) return DEFAULT_THRESHOLD;
  if (!(threshold > 0 && threshold < 1)) throw new InvalidArgumentError('threshold', 'must be strictly between 0 and 1 (0 = the default, 0.5)');
  return threshold;
}

/**
 * RecordOutcomes: validates (INVALID_ARGUMENT), stores in JetStream before
 * answering (UNAVAILABLE when NATS is down) and reports how many joined.
 */
export async function recordOutcomes(store: OutcomeStore, req: RecordOutcomesRequest, ctx: CallContext): Promise<RecordOutcomesResponse> {
  checkOutcomes(req);
  return store.record(req.name, req.outcomes, ctx);
}

/**
 * GetEvaluation: INVALID_ARGUMENT for a bad name, threshold or cost; NOT_FOUND
 * when the model has no kept samples; waits for the start-up replay. With
 * `by_segment`, also a row per (version, segment value); with a cost model
 * (the request's, else the model's), the cost fields.
 */
export async function getEvaluation(store: OutcomeStore, req: GetEvaluationRequest, ctx: CallContext): Promise<GetEvaluationResponse> {
  const name = checkName(req.name, 'name');
  const threshold = checkThreshold(req.threshold);
  await store.whenReady(ctx.signal);
  if (!store.hasSamples(name)) throw new NotFoundError(`model ${name} has no kept samples with a request id (send requests with an id; see README, Ground truth)`);
  const cost = checkCost(req.cost);
  return { versions: store.evaluate(name, threshold, { bySegment: req.bySegment, cost }), segmentBy: store.settings.segmentBy(name), cost: cost ?? store.settings.cost(name) };
}

/** The RecordOutcomes and GetEvaluation handlers of infermesh.v1.Monitor. */
export function outcomeHandlers(store: OutcomeStore): Pick<MonitorServer, 'recordOutcomes' | 'getEvaluation'> {
  return {
    recordOutcomes: unary((req: RecordOutcomesRequest, ctx) => recordOutcomes(store, req, ctx)),
    getEvaluation: unary((req: GetEvaluationRequest, ctx) => getEvaluation(store, req, ctx)),
  };
}
