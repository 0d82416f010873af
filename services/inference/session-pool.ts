import { Worker } from 'node:worker_threads';
import type { FromWorker, ToWorker, WireTensor } from './wire.js';

type Pending = { resolve(v: FromWorker): void };

class PoolWorker {
  readonly worker: Worker;
  busy = false;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();
  constructor(onExit: (err: Error) => void) {
    this.worker = new Worker(new URL('./ort-worker.js', import.meta.url));
    this.worker.on('message', (m: FromWorker) => {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      p?.resolve(m);
    });
    this.worker.on('error', onExit);
    this.worker.on('exit', (code) => {
      const err = new Error(`ort worker exited (${code})`);
      for (const p of this.pending.values()) p.resolve({ op: 'error', id: -1, message: err.message });
      this.pending.clear();
      if (code !== 0) onExit(err);
    });
  }
  send(msg: ToWorker extends infer T ? (T extends unknown ? Omit<T, 'id'> : never) : never, transfer: ArrayBuffer[] = []): Promise<FromWorker> {
    const id = ++this.seq;
    return new Promise((resolve) => {
      this.pending.set(id, { resolve });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }
}

export interface SessionPoolOptions {
  workers: number;
  intraOpThreads: number;
  /** ONNX Runtime execution provider name: cpu or cuda. */
  provider: string;
}

export interface RunResult {
  outputs: WireTensor[];
  computeMicros: number;
}

/**
 * A fixed set of worker threads, each holding a session for every loaded
 * model version. `run` goes to an idle worker; callers check `idle()` first
 * (the scheduler does), so a worker never queues work of its own.
 */
export class SessionPool {
  private readonly workers: PoolWorker[];
  private onIdle: () => void = () => {};

  private closing = false;

  constructor(private readonly o: SessionPoolOptions, onFatal: (err: Error) => void) {
    // A worker that dies while the pool is open loses its sessions: fatal. terminate() during close is not.
    this.workers = Array.from({ length: o.workers }, () => new PoolWorker((err) => this.closing || onFatal(err)));
  }

  /** Called whenever a worker becomes idle. */
  setIdleListener(fn: () => void): void {
    this.onIdle = fn;
  }

  /** Loads the model in every worker. Rejects with ONNX Runtime's message. */
  async load(key: string, bytes: Uint8Array): Promise<void> {
    const results = await Promise.all(
      this.workers.map((w) => w.send({ op: 'load', key, bytes, intraOpThreads: this.o.intraOpThreads, provider: this.o.provider })),
    );
    const failed = results.find((r) => r.op === 'error');
    if (failed && failed.op === 'error') {
      await this.unload(key);
      throw new Error(failed.message);
    }
  }

  async unload(key: string): Promise<void> {
    await Promise.all(this.workers.map((w) => w.send({ op: 'unload', key })));
  }

  /** True when a worker is free to run now. */
  idle(): boolean {
    for (const w of this.workers) if (!w.busy) return true;
    return false;
  }

  /** Runs on an idle worker (call only when `idle()`); the feeds' buffers are transferred. */
  async run(key: string, feeds: WireTensor[], outputs: string[]): Promise<RunResult> {
    const w = this.workers.find((x) => !x.busy);
    if (!w) throw new Error('no idle worker');
    w.busy = true;
    try {
      const r = await w.send({ op: 'run', key, feeds, outputs }, feeds.map((f) => f.data));
      if (r.op === 'error') throw new Error(r.message);
      if (r.op !== 'result') throw new Error('unexpected worker reply');
      return { outputs: r.outputs, computeMicros: r.computeMicros };
    } finally {
      w.busy = false;
      this.onIdle();
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
