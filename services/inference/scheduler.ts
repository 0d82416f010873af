import { Status } from '../../libs/errors/index.js';
import { oip } from '../../libs/proto/index.js';
import type { DecodedRequest } from './infer-request.js';
import type { ModelSpec } from './model-spec.js';
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
  done: JobDone;
}

export interface SchedulerOptions {
  /** Queued jobs per model version before RESOURCE_EXHAUSTED. */
  maxQueue: number;
}

class VersionQueue {
  jobs: Job[] = [];
  head = 0;
  inflight = 0;
  timer: NodeJS.Timeout | null = null;
  constructor(readonly spec: ModelSpec) {}
  get length(): number {
    return this.jobs.length - this.head;
  }
  shift(): Job {
    const j = this.jobs[this.head++]!;
    if (this.head > 1024 && this.head * 2 > this.jobs.length) {
      this.jobs = this.jobs.slice(this.head);
      this.head = 0;
    }
    return j;
  }
}

/**
 * Per model version queues feeding the worker pool with dynamic batches.
 * A batch forms from the queue's head: consecutive requests whose inputs
 * agree on every dimension but the first, up to maxBatchSize rows; it is
 * sent when a worker is idle and either the batch is full or its oldest
 * request has waited maxQueueDelayMicros (0: send whatever is queued).
 * Expired requests are answered DEADLINE_EXCEEDED and never run.
 */
export class Scheduler {
  private readonly queues = new Map<string, VersionQueue>();
  private order: VersionQueue[] = [];
  private rr = 0;
  private pumping = false;

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

  /** Enqueues a job; answers at once when its version is gone or its queue is full. */
  submit(job: Job): void {
    const q = this.queues.get(job.spec.key);
    if (!q) return job.done(Status.UNAVAILABLE, `model ${job.spec.name} version ${job.spec.version} is not loaded here`, null, 0, 0);
    if (q.length >= this.o.maxQueue) return job.done(Status.RESOURCE_EXHAUSTED, `queue of ${job.spec.name} is full`, null, 0, 0);
    if (job.deadline <= job.enqueuedAt) return job.done(Status.DEADLINE_EXCEEDED, 'deadline exceeded before queueing', null, 0, 0);
    q.inflight++;
    const inner = job.done;
    job.done = (c, m, r, qm, cm) => {
      q.inflight--;
      inner(c, m, r, qm, cm);
    };
    q.jobs.push(job);
    this.pump();
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
          this.dispatch(q.spec, batch);
        } else idleRounds++;
      }
    } finally {
      this.pumping = false;
    }
  }

  private takeBatch(q: VersionQueue): Job[] | null {
    const now = performance.now();
    while (q.length > 0 && q.jobs[q.head]!.deadline <= now) {
      const j = q.shift();
      j.done(Status.DEADLINE_EXCEEDED, 'deadline exceeded while queued', null, Math.round((now - j.enqueuedAt) * 1000), 0);
    }
    if (q.length === 0) return null;
    const first = q.jobs[q.head]!;
    const spec = q.spec;
    if (!spec.batchable || first.req.rows <= 0) return [q.shift()];
    let rows = 0;
    let end = q.head;
    while (end < q.jobs.length) {
      const j = q.jobs[end]!;
      if (j.req.rows <= 0 || rows + j.req.rows > spec.maxBatchSize || !sameTail(first.req.shapes, j.req.shapes)) break;
      rows += j.req.rows;
      end++;
    }
    if (end === q.head) return [q.shift()];
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
    const batch = q.jobs.slice(q.head, end);
    q.head = end;
    if (q.head === q.jobs.length) {
      q.jobs = [];
      q.head = 0;
    }
    return batch;
  }

  private dispatch(spec: ModelSpec, batch: Job[]): void {
    const started = performance.now();
    const feeds: WireTensor[] = new Array(spec.inputs.length);
    let rows = 0;
    for (const j of batch) rows += j.req.rows;
    for (let k = 0; k < spec.inputs.length; k++) {
      let data: ArrayBuffer;
      let dims: number[];
      if (batch.length === 1) {
        // A copy the worker can own (request bytes may be a view into a pooled Buffer).
        const src = batch[0]!.req.data[k]!;
        const own = new Uint8Array(src.byteLength);
        own.set(src);
        data = own.buffer;
        dims = batch[0]!.req.shapes[k]!;
      } else {
        let total = 0;
        for (const j of batch) total += j.req.data[k]!.byteLength;
        const buf = new Uint8Array(total);
        let off = 0;
        for (const j of batch) {
          buf.set(j.req.data[k]!, off);
          off += j.req.data[k]!.byteLength;
        }
        data = buf.buffer;
        dims = [rows, ...batch[0]!.req.shapes[k]!.slice(1)];
      }
      feeds[k] = { name: spec.inputs[k]!.name, type: spec.inputTypes[k]!.ort, dims, data };
    }
    this.pool.run(spec.key, feeds, spec.outputNames as string[]).then(
      (res) => complete(spec, batch, res, started),
      (err: Error) => {
        const msg = `model execution failed: ${String(err.message).replace(/\/[^\s:'"]+/g, '<path>').split('\n')[0]!.slice(0, 200)}`;
        for (const j of batch) j.done(Status.INTERNAL, msg, null, Math.round((started - j.enqueuedAt) * 1000), 0);
      },
    );
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

/** Splits the batch's outputs back per request and answers each. */
function complete(spec: ModelSpec, batch: Job[], res: RunResult, started: number): void {
  let row = 0;
  for (const j of batch) {
    const queueMicros = Math.round((started - j.enqueuedAt) * 1000);
    const outputs: oip.ModelInferResponse_InferOutputTensor[] = new Array(j.req.outputs.length);
    const raw: Uint8Array[] = new Array(j.req.outputs.length);
    for (let o = 0; o < j.req.outputs.length; o++) {
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
      outputs[o] = { name: spec.outputs[idx]!.name, datatype: spec.outputTypes[idx]!.oip, shape, parameters: {}, contents: undefined };
      raw[o] = bytes;
    }
    row += j.req.rows;
    const response = oip.ModelInferResponse.encode({
      modelName: spec.name,
      modelVersion: spec.versionString,
      id: j.req.id,
      parameters: {},
      outputs,
      rawOutputContents: raw,
    }).finish();
    j.done(0, '', response, queueMicros, res.computeMicros);
  }
}
