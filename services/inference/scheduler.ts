import { ROOT_CONTEXT, SpanKind, trace, type Link, type Span, type Tracer } from '@opentelemetry/api';
import { CancelledError, DeadlineExceededError, InternalError, ResourceExhaustedError, UnavailableError, type MeshError } from '../../libs/errors/index.js';
import { epochMs } from '../../libs/telemetry/index.js';
import type { ReplicaStats } from '../../libs/proto/index.js';
import type { DecodedRequest, InferRequest } from './infer-request.js';
import type { ModelSpec } from './model-spec.js';
import type { RunTensor } from './ort-session.js';
import { encodeInferResponse } from './infer-response.js';
import { ResponseCache, type CachedAnswer } from './response-cache.js';
import type { RunResult, SessionPool } from './session-pool.js';
import type { OutTensor } from './wire.js';
import type { ModelStats } from './model-stats.js';

/**
 * Tiny models run inline, on the event loop, when nothing of theirs is
 * queued: a hand-off to a worker thread costs ~20–40 µs of CPU and a thread
 * wake-up each way, more than such a model's run. "Tiny" is a p95 run time
 * (see INLINE_OVER_SHARE) of at most INLINE_MAX_RUN_MICROS, measured at
 * warm-up (256 runs, back to back) and tracked over every single-row run
 * since (windows of 1024) against INLINE_STAY_MAX_MICROS. 50 µs keeps the
 * event loop's added delay per request well under the latency a caller can
 * see (~0.5–1 ms at -c 4), and the inline budget below bounds what bursts
 * can add.
 */
export const INLINE_MAX_RUN_MICROS = 50;
/**
 * The p95 limit of runs measured while serving. A run that follows an idle
 * event loop (a few callers: every request) finds ONNX Runtime's code and data
 * evicted from the caches by the other processes on the cores: the demo fraud
 * model, 6 µs back to back, took 25–75 µs that way behind a router at
 * `-c 4 -m 1` (16 % of runs over 50 µs, 0.6 % over 200 µs). Judged against
 * INLINE_MAX_RUN_MICROS such runs sent the model to the workers, whose
 * hand-off costs more than the cold run and whose runs are just as cold
 * (replica CPU per call 95 µs inline against 160–200 µs). A model whose runs
 * grew for real (larger inputs, a slower host) still leaves the event loop.
 */
export const INLINE_STAY_MAX_MICROS = 250;
/** Models larger than this never get an event-loop session (it costs memory, and its load blocks the loop). */
export const INLINE_MAX_MODEL_BYTES = 1 << 20;
/**
 * Inline runs may take at most this share of the event loop's time (token
 * bucket, INLINE_BURST_MICROS deep): under load, requests queue instead and
 * the workers batch them, so the event loop stays free for I/O.
 */
const INLINE_SHARE = 0.25;
const INLINE_BURST_MICROS = 500;
/** Single-row run times per window of the tiny check. */
const RUN_WINDOW = 1024;
/**
 * Share of runs that may exceed INLINE_MAX_RUN_MICROS (p95): on a busy
 * 2-core host, preemption puts 1–2 % of even 6 µs runs over 50 µs, which
 * says nothing of the model; a model whose typical run is longer still fails.
 */
const INLINE_OVER_SHARE = 0.05;
/** Runs measured at warm-up before a model is trusted inline, after a few unmeasured ones. */
const INLINE_WARM_RUNS = 256;
const INLINE_WARM_CHUNK = 32;
const INLINE_UNMEASURED_RUNS = 4;
/**
 * A warm-up run slower than this (µs) rules a model out at once: never tried,
 * or tried no further, on the event loop. Generous: a session's first runs
 * are slow (lazy initialisation), even for a tiny model.
 */
const INLINE_PROBE_MAX_MICROS = 20_000;
export interface SchedulerOptions {
  /** Queued jobs per model version before RESOURCE_EXHAUSTED. */
  maxQueue: number;
  /** Worker threads sharing the queue (for wait estimates). */
  workers: number;
  /** Spans for sampled requests: inference, queue, batch (linked to every request in it), onnx.run. */
  tracer?: Tracer;
  /** Per-version counters (Triton's ModelStatistics): every answer and run is reported here. */
  counters?: ModelStats;
}

type Job = InferRequest;

/** One priority level of a version's queue. */
class Lane {
  jobs: Job[] = [];
  head = 0;
  rows = 0;
  get length(): number {
    return this.jobs.length - this.head;
  }
  peek(): Job {
    return this.jobs[this.head]!;
  }
  shift(): Job {
    const j = this.jobs[this.head++]!;
    j.queued = false;
    this.rows -= Math.max(1, j.req.rows);
    if (this.head === this.jobs.length) {
      this.jobs = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.jobs.length) {
      this.jobs = this.jobs.slice(this.head);
      this.head = 0;
    }
    return j;
  }
}

class VersionQueue {
  readonly lanes = [new Lane(), new Lane()];
  inflight = 0;
  timer: NodeJS.Timeout | null = null;
  /** Smoothed time of one batch run, milliseconds (0 until measured). */
  batchMs = 0;
  readonly cache: ResponseCache | null;
  /** Runs on the event loop when nothing is queued (measured tiny, see INLINE_MAX_RUN_MICROS). */
  inline = false;
  /** Single-row run times (µs) of the current window, and how many exceeded the tiny limit. */
  windowRuns = 0;
  windowOver = 0;
  /** Reused inputs of an inline run (no per-request objects). */
  readonly inlineInputs: RunTensor[];
  constructor(readonly spec: ModelSpec) {
    this.cache = spec.cacheEntries > 0 ? new ResponseCache(spec.cacheEntries) : null;
    this.inlineInputs = spec.inputTypes.map((t) => ({ type: t.ort, dims: [], data: EMPTY }));
  }
  get length(): number {
    return this.lanes[0]!.length + this.lanes[1]!.length;
  }
}

const EMPTY = new Uint8Array(0);

function newStats(): ReplicaStats {
  return {
    requests: 0, batches: 0, batchedRows: 0, expiredInQueue: 0, refusedDeadline: 0, refusedQueueFull: 0, cancelled: 0,
    startedAfterDeadline: 0, finishedAfterDeadline: 0, cacheHits: 0, cacheMisses: 0, outstanding: 0,
    eventLoopP99Micros: 0, eventLoopMaxMicros: 0, rssBytes: 0,
  };
}

/**
 * Admits and runs a replica's requests (InferRequest), and answers each once.
 *
 * - Admission: a full queue answers RESOURCE_EXHAUSTED at once; a request
 *   whose deadline cannot be met given the work ahead of it is refused at
 *   once with DEADLINE_EXCEEDED (estimate from measured batch times).
 * - A tiny model's request runs inline on the event loop when nothing of its
 *   version is queued (see INLINE_MAX_RUN_MICROS); every other runs on a
 *   worker thread.
 * - Per model version queues feed the workers with dynamic batches. A batch
 *   forms from the head of the highest-priority non-empty lane: consecutive
 *   requests whose inputs agree on every dimension but the first, up to
 *   maxBatchSize rows. It is sent when a worker is idle and the batch is full
 *   or its oldest request has waited maxQueueDelayMicros (0: send whatever is
 *   queued — batches grow only while workers are busy). One that expires
 *   while queued is answered DEADLINE_EXCEEDED and never run.
 */
export class Scheduler {
  private readonly queues = new Map<string, VersionQueue>();
  private order: VersionQueue[] = [];
  private rr = 0;
  private pumping = false;
  /** Inline token bucket: microseconds of event-loop time inline runs may still take, and when it was filled. */
  private inlineTokens = INLINE_BURST_MICROS;
  private inlineFilledAt = 0;
  readonly stats: ReplicaStats = newStats();

  constructor(private readonly pool: SessionPool, private readonly o: SchedulerOptions) {
    pool.setIdleListener(() => this.pump());
  }

  addVersion(spec: ModelSpec): void {
    if (this.queues.has(spec.key)) return;
    const q = new VersionQueue(spec);
    this.queues.set(spec.key, q);
    this.order.push(q);
  }

  /** Stops taking jobs for a version; queued ones still run. */
  removeVersion(key: string): void {
    const q = this.queues.get(key);
    if (!q) return;
    this.queues.delete(key);
    q.inline = false;
    const drain = () => {
      if (q.length === 0 && q.inflight === 0) this.order = this.order.filter((x) => x !== q);
      else setTimeout(drain, 10).unref();
    };
    drain();
  }

  /** Jobs queued or running for a version. */
  inflight(key: string): number {
    const q = this.queueOf(key);
    return q ? q.inflight : 0;
  }

  /** Whether a version's requests run inline (on the event loop) when nothing is queued. */
  runsInline(key: string): boolean {
    return this.queueOf(key)?.inline ?? false;
  }

  /** Total jobs queued or running. */
  outstanding(): number {
    let n = 0;
    for (const q of this.order) n += q.inflight;
    return n;
  }

  private queueOf(key: string): VersionQueue | undefined {
    return this.queues.get(key) ?? this.order.find((x) => x.spec.key === key);
  }

  /**
   * Decides, after a version's warm-up on a worker took `workerMicros`,
   * whether it runs inline: a small model whose worker run was not clearly
   * slow gets a session on the event loop and INLINE_WARM_RUNS measured runs
   * of `req` there; it runs inline when their p99 is tiny.
   * Resolves with the decision.
   */
  async tryInline(spec: ModelSpec, bytes: Uint8Array, req: DecodedRequest, workerMicros: number): Promise<boolean> {
    const q = this.queues.get(spec.key);
    // A first run is slower than the rest (allocations, kernel choice): only a clearly slow one rules a model out.
    if (!q || bytes.byteLength > INLINE_MAX_MODEL_BYTES || workerMicros > INLINE_PROBE_MAX_MICROS) return false;
    try {
      this.pool.loadInline(spec.key, bytes);
    } catch {
      return false;
    }
    // Runs in chunks, one chunk per event-loop turn (a chunk of a tiny model blocks the loop ≤ 2 ms; a slow one stops at its first runs).
    const allowed = Math.floor(INLINE_WARM_RUNS * INLINE_OVER_SHARE);
    let over = 0;
    for (let i = -INLINE_UNMEASURED_RUNS; i < INLINE_WARM_RUNS && over <= allowed; i++) {
      if (i < 0 || i % INLINE_WARM_CHUNK === 0) await new Promise((r) => setImmediate(r));
      try {
        const micros = this.pool.runInline(spec.key, this.inputsOf(q, req)).computeMicros;
        if (micros > (i < 0 ? INLINE_PROBE_MAX_MICROS : INLINE_MAX_RUN_MICROS)) over += i < 0 ? Infinity : 1;
      } catch {
        over = Infinity;
      }
    }
    // The measured runs' p95 within the limit.
    q.inline = over <= allowed && this.queues.get(spec.key) === q;
    if (!q.inline) this.pool.unloadInline(spec.key);
    return q.inline;
  }

  /** Admits a job and runs or queues it, or answers it at once (cache hit, version gone, queue full, deadline unmeetable). */
  submit(job: Job): void {
    const q = this.queues.get(job.spec.key);
    this.stats.requests++;
    if (!q) return this.refuse(job, new UnavailableError(`model ${job.spec.name} version ${job.spec.version} is not loaded here`));
    if (q.cache) {
      job.cacheKey = ResponseCache.key(job.req);
      const hit = q.cache.get(job.cacheKey);
      if (hit) {
        this.stats.cacheHits++;
        this.o.counters?.cacheHit(job.spec, performance.now() - job.enqueuedAt);
        return job.answer(null, encode(job.spec, job.req.id, hit), 0, 0);
      }
      this.stats.cacheMisses++;
      this.o.counters?.cacheMiss(job.spec, performance.now() - job.enqueuedAt);
    }
    if (q.length >= this.o.maxQueue) {
      this.stats.refusedQueueFull++;
      return this.refuse(job, new ResourceExhaustedError(`queue of ${job.spec.name} is full`));
    }
    const lane = q.lanes[job.priority ? 1 : 0]!;
    if (job.deadline <= job.enqueuedAt || !this.canMeet(q, lane, job)) {
      this.stats.refusedDeadline++;
      return this.refuse(job, new DeadlineExceededError('deadline cannot be met: the queue ahead takes longer'));
    }
    q.inflight++;
    if (q.inline && q.length === 0 && this.inlineAllowed()) return this.runInline(q, job);
    job.queued = true;
    lane.jobs.push(job);
    lane.rows += Math.max(1, job.req.rows);
    this.pump();
  }

  /** Whether the inline token bucket allows another run now. */
  private inlineAllowed(): boolean {
    const now = performance.now();
    this.inlineTokens = Math.min(INLINE_BURST_MICROS, this.inlineTokens + (now - this.inlineFilledAt) * 1000 * INLINE_SHARE);
    this.inlineFilledAt = now;
    return this.inlineTokens > 0;
  }

  /** Answers a job refused at admission (counted as failed). */
  private refuse(job: Job, err: MeshError): void {
    this.o.counters?.failed(job.spec, 0);
    job.answer(err, null, 0, 0);
  }

  /** The one exit of an admitted job: frees its place and answers it (a failure is counted here; successes by the run, in complete). */
  private finish(q: VersionQueue, job: Job, err: MeshError | null, response: Uint8Array | null, queueMicros: number, computeMicros: number): void {
    q.inflight--;
    if (err) this.o.counters?.failed(job.spec, performance.now() - job.enqueuedAt);
    job.answer(err, response, queueMicros, computeMicros);
  }

  /** Counts a single-row run's time; a version whose p95 is no longer tiny (INLINE_STAY_MAX_MICROS) leaves the event loop (and comes back when it is again). */
  private track(q: VersionQueue, computeMicros: number): void {
    if (computeMicros > INLINE_STAY_MAX_MICROS) q.windowOver++;
    if (++q.windowRuns < RUN_WINDOW) return;
    const tiny = q.windowOver <= RUN_WINDOW * INLINE_OVER_SHARE;
    q.windowRuns = 0;
    q.windowOver = 0;
    if (tiny !== q.inline && (!tiny || this.pool.hasInline(q.spec.key))) q.inline = tiny && this.queues.get(q.spec.key) === q;
  }

  /** The reused inline inputs of `q` set to a request's tensors. */
  private inputsOf(q: VersionQueue, req: DecodedRequest): RunTensor[] {
    const inputs = q.inlineInputs;
    for (let k = 0; k < inputs.length; k++) {
      inputs[k]!.dims = req.shapes[k]!;
      inputs[k]!.data = req.data[k]!;
    }
    return inputs;
  }

  /** Runs one admitted job on the event loop now, and answers it. */
  private runInline(q: VersionQueue, job: Job): void {
    job.started = true;
    this.stats.batches++;
    this.stats.batchedRows += Math.max(1, job.req.rows);
    const started = performance.now();
    let res: RunResult;
    try {
      res = this.pool.runInline(q.spec.key, this.inputsOf(q, job.req));
    } catch (err) {
      return this.finish(q, job, runFailure(err), null, 0, 0);
    } finally {
      this.inlineTokens -= (performance.now() - started) * 1000;
    }
    this.track(q, res.computeMicros);
    this.complete(q, [job], res, started);
  }

  /** Whether the job can finish by its deadline given the rows ahead of it (estimate from measured batch times). */
  private canMeet(q: VersionQueue, lane: Lane, job: Job): boolean {
    if (q.batchMs === 0) return true;
    let ahead = lane.rows;
    if (lane === q.lanes[1]) ahead += q.lanes[0]!.rows;
    const batchesAhead = Math.floor(ahead / q.spec.maxBatchSize / Math.max(1, this.o.workers));
    const busy = this.pool.idle() ? 0 : 1;
    return job.enqueuedAt + (batchesAhead + busy + 1) * q.batchMs <= job.deadline;
  }

  /**
   * The caller gave up: a job still queued is answered CANCELLED now (its
   * queue slot is free at once) and dropped when it reaches the head.
   * Returns false when it is not queued (already answered, or running: it completes normally).
   */
  cancel(job: Job): boolean {
    if (!job.queued || job.cancelled) return false;
    job.cancelled = true;
    this.stats.cancelled++;
    const q = this.queueOf(job.spec.key);
    const queued = Math.round((performance.now() - job.enqueuedAt) * 1000);
    if (q) this.finish(q, job, new CancelledError('cancelled by the caller'), null, queued, 0);
    else {
      this.o.counters?.failed(job.spec, queued / 1000);
      job.answer(new CancelledError('cancelled by the caller'), null, queued, 0);
    }
    return true;
  }

  /** Dispatches batches while a worker is idle. */
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      let idleRounds = 0;
      while (this.pool.idle() && this.order.length > 0 && idleRounds < this.order.length) {
        const q = this.order[this.rr++ % this.order.length]!;
        const batch = this.takeBatch(q);
        if (batch) {
          idleRounds = 0;
          this.dispatch(q, batch);
        } else idleRounds++;
      }
    } finally {
      this.pumping = false;
    }
  }

  private takeBatch(q: VersionQueue): Job[] | null {
    const now = performance.now();
    for (const lane of q.lanes) {
      while (lane.length > 0 && (lane.peek().cancelled || lane.peek().deadline <= now)) {
        const j = lane.shift();
        if (j.cancelled) continue;
        this.stats.expiredInQueue++;
        this.finish(q, j, new DeadlineExceededError('deadline exceeded while queued'), null, Math.round((now - j.enqueuedAt) * 1000), 0);
      }
    }
    const lane = q.lanes[0]!.length > 0 ? q.lanes[0]! : q.lanes[1]!;
    if (lane.length === 0) return null;
    const first = lane.peek();
    const spec = q.spec;
    if (!spec.batchable || first.req.rows <= 0) return [lane.shift()];
    let rows = 0;
    let end = lane.head;
    while (end < lane.jobs.length) {
      const j = lane.jobs[end]!;
      if (j.req.rows <= 0 || rows + j.req.rows > spec.maxBatchSize || !sameTail(first.req.shapes, j.req.shapes) || j.deadline <= now || j.cancelled) break;
      rows += j.req.rows;
      end++;
    }
    if (end === lane.head) return [lane.shift()];
    const delayMs = spec.maxQueueDelayMicros / 1000;
    if (rows < spec.maxBatchSize && delayMs > 0 && now - first.enqueuedAt < delayMs) {
      if (!q.timer) {
        q.timer = setTimeout(() => {
          q.timer = null;
          this.pump();
        }, Math.max(0, delayMs - (now - first.enqueuedAt)));
      }
      return null;
    }
    const batch: Job[] = new Array(end - lane.head);
    for (let i = 0; i < batch.length; i++) batch[i] = lane.shift();
    return batch;
  }

  private dispatch(q: VersionQueue, batch: Job[]): void {
    const spec = q.spec;
    const started = performance.now();
    const inputs: OutTensor[] = new Array(spec.inputs.length);
    let rows = 0;
    for (const j of batch) {
      rows += j.req.rows;
      j.started = true;
      if (j.deadline <= started) this.stats.startedAfterDeadline++;
    }
    this.stats.batches++;
    this.stats.batchedRows += Math.max(rows, batch.length);
    for (let k = 0; k < spec.inputs.length; k++) {
      // The requests' bytes (views into the received buffers) are copied once, into the message the worker gets.
      const parts: Uint8Array[] = new Array(batch.length);
      let total = 0;
      for (let i = 0; i < batch.length; i++) total += (parts[i] = batch[i]!.req.data[k]!).byteLength;
      const dims = batch.length === 1 ? batch[0]!.req.shapes[k]! : [rows, ...batch[0]!.req.shapes[k]!.slice(1)];
      inputs[k] = { type: spec.inputTypes[k]!.ort, dims, parts, byteLength: total };
    }
    this.pool.run(spec.key, inputs, (err, res) => {
      if (err) {
        const e = runFailure(err);
        for (const j of batch) this.finish(q, j, e, null, Math.round((started - j.enqueuedAt) * 1000), 0);
        return;
      }
      // One sample counts for at most 4× the current estimate: a pause of the whole process
      // (SIGSTOP, a long GC, a starved VM) must not make admission refuse every deadline
      // afterwards, which would also stop the batches that could correct it. A real
      // slowdown still shows within a few batches.
      const ms = performance.now() - started;
      q.batchMs = q.batchMs === 0 ? ms : q.batchMs * 0.8 + Math.min(ms, q.batchMs * 4) * 0.2;
      if (batch.length === 1 && batch[0]!.req.rows <= 1) this.track(q, res!.computeMicros);
      this.complete(q, batch, res!, started);
    });
  }

  /**
   * Records the spans of the sampled requests in a finished batch, after the
   * fact from timestamps already taken (nothing is traced for the others):
   * per request `inference` (parent: the router's forward span) with `queue`
   * and `encode` children; one `batch` span linked to every sampled request,
   * with `onnx.run` under it.
   */
  private traceBatch(spec: ModelSpec, batch: Job[], started: number, finished: number, res: RunResult): Span[] | null {
    const tracer = this.o.tracer;
    if (!tracer) return null;
    let requestSpans: Span[] | null = null;
    for (const j of batch) {
      if (!j.trace) continue;
      const s = tracer.startSpan(
        'inference',
        { kind: SpanKind.SERVER, startTime: epochMs(j.enqueuedAt), attributes: { 'infermesh.model': spec.name, 'infermesh.version': spec.version, 'infermesh.rows': j.req.rows } },
        trace.setSpanContext(ROOT_CONTEXT, j.trace),
      );
      tracer.startSpan('queue', { startTime: epochMs(j.enqueuedAt) }, trace.setSpan(ROOT_CONTEXT, s)).end(epochMs(started));
      (requestSpans ??= []).push(s);
    }
    if (!requestSpans) return null;
    const links: Link[] = requestSpans.map((s) => ({ context: s.spanContext() }));
    const b = tracer.startSpan(
      'batch',
      { startTime: epochMs(started), links, attributes: { 'infermesh.batch_size': batch.length, 'infermesh.batch_rows': batch.reduce((n, j) => n + Math.max(1, j.req.rows), 0) } },
      trace.setSpan(ROOT_CONTEXT, requestSpans[0]!),
    );
    const runEnd = Math.min(finished, started + res.computeMicros / 1000 + 1);
    tracer.startSpan('onnx.run', { startTime: epochMs(runEnd - res.computeMicros / 1000), attributes: { 'infermesh.compute_us': res.computeMicros } }, trace.setSpan(ROOT_CONTEXT, b)).end(epochMs(runEnd));
    b.end(epochMs(finished));
    for (const s of requestSpans) s.setAttribute('infermesh.batch_span_id', b.spanContext().spanId);
    return requestSpans;
  }

  /** Splits the batch's outputs back per request and answers each. */
  private complete(q: VersionQueue, batch: Job[], res: RunResult, started: number): void {
    const spec = q.spec;
    const now = performance.now();
    // Encode times of the sampled requests (start, end pairs), for their spans.
    let encodeTimes: number[] | null = null;
    let row = 0;
    for (const j of batch) {
      if (now > j.deadline) this.stats.finishedAfterDeadline++;
      const queueMicros = Math.round((started - j.enqueuedAt) * 1000);
      const n = j.req.outputs.length;
      const answer: CachedAnswer = { outputs: new Array(n), raw: new Array(n) };
      for (let o = 0; o < n; o++) {
        const idx = j.req.outputs[o]!;
        const t = res.outputs[idx]!;
        let shape = t.dims;
        let bytes = t.data;
        if (batch.length > 1) {
          const rowBytes = t.data.byteLength / t.dims[0]!;
          bytes = t.data.subarray(row * rowBytes, (row + j.req.rows) * rowBytes);
          shape = [j.req.rows, ...t.dims.slice(1)];
        }
        answer.outputs[o] = { name: spec.outputs[idx]!.name, datatype: spec.outputTypes[idx]!.oip, shape, parameters: {}, contents: undefined };
        answer.raw[o] = bytes;
      }
      row += j.req.rows;
      if (q.cache && j.cacheKey) q.cache.set(j.cacheKey, { outputs: answer.outputs, raw: answer.raw.map((b) => b.slice()) });
      if (j.trace && this.o.tracer) {
        const t = performance.now();
        const bytes = encode(spec, j.req.id, answer);
        (encodeTimes ??= []).push(t, performance.now());
        this.finish(q, j, null, bytes, queueMicros, res.computeMicros);
      } else this.finish(q, j, null, encode(spec, j.req.id, answer), queueMicros, res.computeMicros);
    }
    this.o.counters?.ran(spec, batch, started, now, res.computeMicros, performance.now());
    // Every answer of the batch is on its way; the spans of its sampled requests are made in the
    // next turn, after this turn's frames are written, from the timestamps taken.
    if (encodeTimes) {
      const times = encodeTimes;
      setImmediate(() => {
        const spans = this.traceBatch(spec, batch, started, now, res);
        spans?.forEach((s, i) => {
          const end = epochMs(times[2 * i + 1]!);
          this.o.tracer!.startSpan('encode', { startTime: epochMs(times[2 * i]!) }, trace.setSpan(ROOT_CONTEXT, s)).end(end);
          s.end(end);
        });
      });
    }
  }
}

/** A failed run as the caller sees it: INTERNAL, ONNX Runtime's first line without file paths. */
function runFailure(err: unknown): MeshError {
  return new InternalError(`model execution failed: ${String((err as Error)?.message ?? err).replace(/\/[^\s:'"]+/g, '<path>').split('\n')[0]!.slice(0, 200)}`);
}

function sameTail(a: number[][], b: number[][]): boolean {
  for (let k = 0; k < a.length; k++) {
    const x = a[k]!;
    const y = b[k]!;
    if (x.length !== y.length) return false;
    for (let d = 1; d < x.length; d++) if (x[d] !== y[d]) return false;
  }
  return true;
}

function encode(spec: ModelSpec, id: string, a: CachedAnswer): Uint8Array {
  return encodeInferResponse(spec.name, spec.versionString, id, a);
}
