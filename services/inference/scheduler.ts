import { ROOT_CONTEXT, SpanKind, trace, type Link, type Span, type SpanContext, type Tracer } from '@opentelemetry/api';
import { Status } from '../../libs/errors/index.js';
import { epochMs } from '../../libs/telemetry/index.js';
import { oip, type ReplicaStats } from '../../libs/proto/index.js';
import type { DecodedRequest } from './infer-request.js';
import type { ModelSpec } from './model-spec.js';
import { ResponseCache, type CachedAnswer } from './response-cache.js';
import type { RunResult, SessionPool } from './session-pool.js';
import type { WireTensor } from './wire.js';

/** Called once per job with its terminal status; `response` is a serialized ModelInferResponse when code is OK. */
export type JobDone = (code: number, message: string, response: Uint8Array | null, queueMicros: number, computeMicros: number) => void;

export interface Job {
  spec: ModelSpec;
  req: DecodedRequest;
  /** performance.now() milliseconds after which the result is useless. */
  deadline: number;
  enqueuedAt: number;
  /** 0 = real-time (default), higher = bulk: runs only when no real-time work waits. */
  priority?: number;
  done: JobDone;
  cacheKey?: string;
  /** The caller's span when the request is sampled: the replica adds its spans under it. */
  trace?: SpanContext | null;
  /** Set once the job is in a batch sent to a worker. */
  started?: boolean;
  /** Set when the caller gave up before it started: it is dropped, never run. */
  cancelled?: boolean;
}

export interface SchedulerOptions {
  /** Queued jobs per model version before RESOURCE_EXHAUSTED. */
  maxQueue: number;
  /** Worker threads sharing the queue (for wait estimates). */
  workers: number;
  /** Spans for sampled requests: inference, queue, batch (linked to every request in it), onnx.run. */
  tracer?: Tracer;
}

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
  constructor(readonly spec: ModelSpec) {
    this.cache = spec.cacheEntries > 0 ? new ResponseCache(spec.cacheEntries) : null;
  }
  get length(): number {
    return this.lanes[0]!.length + this.lanes[1]!.length;
  }
}

function newStats(): ReplicaStats {
  return {
    requests: 0, batches: 0, batchedRows: 0, expiredInQueue: 0, refusedDeadline: 0, refusedQueueFull: 0, cancelled: 0,
    startedAfterDeadline: 0, finishedAfterDeadline: 0, cacheHits: 0, cacheMisses: 0, outstanding: 0,
    eventLoopP99Micros: 0, eventLoopMaxMicros: 0, rssBytes: 0,
  };
}

/**
 * Per model version queues feeding the worker pool with dynamic batches.
 *
 * - A batch forms from the head of the highest-priority non-empty lane:
 *   consecutive requests whose inputs agree on every dimension but the
 *   first, up to maxBatchSize rows. It is sent when a worker is idle and the
 *   batch is full or its oldest request has waited maxQueueDelayMicros
 *   (0: send whatever is queued — batches grow only while workers are busy).
 * - Deadline-aware: a request whose deadline cannot be met given the work
 *   ahead of it is refused at once with DEADLINE_EXCEEDED; one that expires
 *   while queued is answered DEADLINE_EXCEEDED and never run.
 * - A full queue answers RESOURCE_EXHAUSTED at once.
 */
export class Scheduler {
  private readonly queues = new Map<string, VersionQueue>();
  private order: VersionQueue[] = [];
  private rr = 0;
  private pumping = false;
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
    const drain = () => {
      if (q.length === 0 && q.inflight === 0) this.order = this.order.filter((x) => x !== q);
      else setTimeout(drain, 10).unref();
    };
    drain();
  }

  /** Jobs queued or running for a version. */
  inflight(key: string): number {
    const q = this.queues.get(key) ?? this.order.find((x) => x.spec.key === key);
    return q ? q.inflight : 0;
  }

  /** Total jobs queued or running. */
  outstanding(): number {
    let n = 0;
    for (const q of this.order) n += q.inflight;
    return n;
  }

  /** Enqueues a job, or answers it at once (cache hit, version gone, queue full, deadline unmeetable). */
  submit(job: Job): void {
    const q = this.queues.get(job.spec.key);
    this.stats.requests++;
    if (!q) return job.done(Status.UNAVAILABLE, `model ${job.spec.name} version ${job.spec.version} is not loaded here`, null, 0, 0);
    if (q.cache) {
      job.cacheKey = ResponseCache.key(job.req);
      const hit = q.cache.get(job.cacheKey);
      if (hit) {
        this.stats.cacheHits++;
        return job.done(0, '', encode(job.spec, job.req.id, hit), 0, 0);
      }
      this.stats.cacheMisses++;
    }
    if (q.length >= this.o.maxQueue) {
      this.stats.refusedQueueFull++;
      return job.done(Status.RESOURCE_EXHAUSTED, `queue of ${job.spec.name} is full`, null, 0, 0);
    }
    const lane = q.lanes[job.priority ? 1 : 0]!;
    if (job.deadline <= job.enqueuedAt || !this.canMeet(q, lane, job)) {
      this.stats.refusedDeadline++;
      return job.done(Status.DEADLINE_EXCEEDED, 'deadline cannot be met: the queue ahead takes longer', null, 0, 0);
    }
    q.inflight++;
    const inner = job.done;
    job.done = (c, m, r, qm, cm) => {
      q.inflight--;
      inner(c, m, r, qm, cm);
    };
    lane.jobs.push(job);
    lane.rows += Math.max(1, job.req.rows);
    this.pump();
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
   * The caller gave up: a job not yet started is answered CANCELLED now (its
   * queue slot is free at once) and dropped when it reaches the head.
   * Returns false when it had already started (it completes normally).
   */
  cancel(job: Job): boolean {
    if (job.started || job.cancelled) return false;
    job.cancelled = true;
    this.stats.cancelled++;
    job.done(Status.CANCELLED, 'cancelled by the caller', null, Math.round((performance.now() - job.enqueuedAt) * 1000), 0);
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
        j.done(Status.DEADLINE_EXCEEDED, 'deadline exceeded while queued', null, Math.round((now - j.enqueuedAt) * 1000), 0);
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
    const feeds: WireTensor[] = new Array(spec.inputs.length);
    let rows = 0;
    for (const j of batch) {
      rows += j.req.rows;
      j.started = true;
      if (j.deadline <= started) this.stats.startedAfterDeadline++;
    }
    this.stats.batches++;
    this.stats.batchedRows += Math.max(rows, batch.length);
    for (let k = 0; k < spec.inputs.length; k++) {
      let dims: number[];
      let total = 0;
      for (const j of batch) total += j.req.data[k]!.byteLength;
      // One copy into a buffer the worker can own (request bytes may be views into pooled Buffers).
      const buf = new Uint8Array(total);
      let off = 0;
      for (const j of batch) {
        buf.set(j.req.data[k]!, off);
        off += j.req.data[k]!.byteLength;
      }
      if (batch.length === 1) dims = batch[0]!.req.shapes[k]!;
      else dims = [rows, ...batch[0]!.req.shapes[k]!.slice(1)];
      feeds[k] = { name: spec.inputs[k]!.name, type: spec.inputTypes[k]!.ort, dims, data: buf.buffer };
    }
    this.pool.run(spec.key, feeds, spec.outputNames as string[]).then(
      (res) => {
        // One sample counts for at most 4× the current estimate: a pause of the whole process
        // (SIGSTOP, a long GC, a starved VM) must not make admission refuse every deadline
        // afterwards, which would also stop the batches that could correct it. A real
        // slowdown still shows within a few batches.
        const ms = performance.now() - started;
        q.batchMs = q.batchMs === 0 ? ms : q.batchMs * 0.8 + Math.min(ms, q.batchMs * 4) * 0.2;
        this.complete(q, batch, res, started);
      },
      (err: Error) => {
        const msg = `model execution failed: ${String(err.message).replace(/\/[^\s:'"]+/g, '<path>').split('\n')[0]!.slice(0, 200)}`;
        for (const j of batch) j.done(Status.INTERNAL, msg, null, Math.round((started - j.enqueuedAt) * 1000), 0);
      },
    );
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
        let bytes: Uint8Array;
        if (batch.length === 1) bytes = new Uint8Array(t.data);
        else {
          const rowBytes = t.data.byteLength / t.dims[0]!;
          bytes = new Uint8Array(t.data, row * rowBytes, j.req.rows * rowBytes);
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
        j.done(0, '', bytes, queueMicros, res.computeMicros);
      } else j.done(0, '', encode(spec, j.req.id, answer), queueMicros, res.computeMicros);
    }
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
  return oip.ModelInferResponse.encode({
    modelName: spec.name,
    modelVersion: spec.versionString,
    id,
    parameters: {},
    outputs: a.outputs,
    rawOutputContents: a.raw,
  }).finish();
}
