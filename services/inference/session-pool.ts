import { Worker } from 'node:worker_threads';
import { OrtSession, type RunTensor } from './ort-session.js';
import { decodeResult, encodeRun, type FromWorker, type OutTensor, type ToWorker } from './wire.js';

type Control = Exclude<FromWorker, ArrayBuffer>;
type Result = { outputs: RunTensor[]; computeMicros: number } | { error: string };

class PoolWorker {
  readonly worker: Worker;
  busy = false;
  private seq = 0;
  private readonly pending = new Map<number, (v: Control) => void>();
  /** The run in flight (one at a time: the pool only hands a run to an idle worker). */
  private running: ((r: Result) => void) | null = null;

  constructor(onExit: (err: Error) => void, workerUrl: URL) {
    this.worker = new Worker(workerUrl);
    this.worker.on('message', (m: FromWorker) => {
      if (m instanceof ArrayBuffer) {
        const done = this.running;
        this.running = null;
        done?.(decodeResult(m));
        return;
      }
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      p?.(m);
    });
    this.worker.on('error', onExit);
    this.worker.on('exit', (code) => {
      const message = `ort worker exited (${code})`;
      for (const p of this.pending.values()) p({ op: 'error', id: -1, message });
      this.pending.clear();
      this.running?.({ error: message });
      this.running = null;
      if (code !== 0) onExit(new Error(message));
    });
  }

  control(msg: Exclude<ToWorker, ArrayBuffer> extends infer T ? (T extends unknown ? Omit<T, 'id'> : never) : never): Promise<Control> {
    const id = ++this.seq;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.worker.postMessage({ ...msg, id });
    });
  }

  run(buf: ArrayBuffer, done: (r: Result) => void): void {
    this.running = done;
    this.worker.postMessage(buf, [buf]);
  }
}

export interface SessionPoolOptions {
  workers: number;
  intraOpThreads: number;
  /** ONNX Runtime execution provider name: cpu or cuda. */
  provider: string;
  /** The worker's module (default: the built ort-worker.js beside this file; tests that run this file from sources name the built one). */
  workerUrl?: URL;
}

export interface RunResult {
  /** Every output of the model, in its output order. */
  outputs: RunTensor[];
  computeMicros: number;
}

/**
 * A fixed set of worker threads, each holding a session for every loaded
 * model version, plus — for tiny models only — a session on the event loop's
 * own thread (`loadInline`, `runInline`). `run` goes to an idle worker;
 * callers check `idle()` first (the scheduler does), so a worker never queues
 * work of its own.
 */
export class SessionPool {
  private readonly workers: PoolWorker[];
  private onIdle: () => void = () => {};
  private closing = false;
  /** Worker session slot of each loaded version. */
  private readonly slots = new Map<string, number>();
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  private readonly inline = new Map<string, OrtSession>();

  constructor(private readonly o: SessionPoolOptions, onFatal: (err: Error) => void) {
    // A worker that dies while the pool is open loses its sessions: fatal. terminate() during close is not.
    const workerUrl = o.workerUrl ?? new URL('./ort-worker.js', import.meta.url);
    this.workers = Array.from({ length: o.workers }, () => new PoolWorker((err) => this.closing || onFatal(err), workerUrl));
  }

  /** Called whenever a worker becomes idle. */
  setIdleListener(fn: () => void): void {
    this.onIdle = fn;
  }

  /** Loads the model in every worker. Rejects with ONNX Runtime's message. */
  async load(key: string, bytes: Uint8Array): Promise<void> {
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = this.freeSlots.pop() ?? this.nextSlot++;
      this.slots.set(key, slot);
    }
    const results = await Promise.all(this.workers.map((w) => w.control({ op: 'load', slot: slot!, bytes, intraOpThreads: this.o.intraOpThreads, provider: this.o.provider })));
    const failed = results.find((r) => r.op === 'error');
    if (failed && failed.op === 'error') {
      await this.unload(key);
      throw new Error(failed.message);
    }
  }

  /**
   * Loads the model on the calling (event-loop) thread as well, for
   * `runInline`. Only for models already measured tiny: the load blocks the
   * event loop while it lasts. Throws ONNX Runtime's message.
   */
  loadInline(key: string, bytes: Uint8Array): void {
    this.inline.get(key)?.release();
    this.inline.set(key, new OrtSession(bytes, { intraOpThreads: 1, provider: this.o.provider }));
  }

  /** Drops the event-loop session of a version, if any. */
  unloadInline(key: string): void {
    this.inline.get(key)?.release();
    this.inline.delete(key);
  }

  async unload(key: string): Promise<void> {
    this.unloadInline(key);
    const slot = this.slots.get(key);
    if (slot === undefined) return;
    this.slots.delete(key);
    await Promise.all(this.workers.map((w) => w.control({ op: 'unload', slot })));
    this.freeSlots.push(slot);
  }

  /** True when a worker is free to run now. */
  idle(): boolean {
    for (const w of this.workers) if (!w.busy) return true;
    return false;
  }

  /**
   * Runs on an idle worker (call only when `idle()`): the inputs' parts are
   * copied once into the one buffer that is transferred. `done` gets the
   * outputs (views of the transferred reply: the caller's to keep) or the
   * failure; the idle listener is called after it.
   */
  run(key: string, inputs: readonly OutTensor[], done: (err: Error | null, res: RunResult | null) => void): void {
    const w = this.workers.find((x) => !x.busy);
    const slot = this.slots.get(key);
    if (!w || slot === undefined) return done(new Error(w ? 'model version not loaded' : 'no idle worker'), null);
    w.busy = true;
    w.run(encodeRun(slot, inputs), (r) => {
      w.busy = false;
      if ('error' in r) done(new Error(r.error), null);
      else done(null, r);
      this.onIdle();
    });
  }

  /** True when the version has an event-loop session (it was measured tiny). */
  hasInline(key: string): boolean {
    return this.inline.has(key);
  }

  /**
   * Runs on the event loop's thread, synchronously (only tiny models, see
   * Scheduler). Output bytes are views valid until the caller returns to the
   * event loop: copy to keep. Throws ONNX Runtime's message.
   */
  runInline(key: string, inputs: readonly RunTensor[]): RunResult {
    const s = this.inline.get(key);
    if (!s) throw new Error('model version has no inline session');
    const t0 = performance.now();
    const outputs = s.run(inputs);
    return { outputs, computeMicros: Math.round((performance.now() - t0) * 1000) };
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const s of this.inline.values()) s.release();
    this.inline.clear();
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
