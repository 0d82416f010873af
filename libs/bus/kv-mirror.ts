import type { KV, KvEntry } from 'nats';
import type { Logger } from '../log/index.js';

export interface KvMirrorOptions {
  /** Called for every change after the initial sync and for each key during it. */
  onChange(key: string, value: Uint8Array | null): void;
  /** Called after each (re)sync completes, with the keys then present. */
  onSync?(): void;
  /** Full re-sync period: recovers from watchers that silently stop (nats.deno #688). */
  reconcileMs?: number;
  log: Logger;
}

/**
 * An in-memory copy of a KV bucket, kept current by a watcher. The data
 * plane reads from it and never waits on NATS. When the watcher ends (NATS
 * restart, bucket recreated) or on every reconcile period, it re-reads the
 * whole bucket and emits deletions for keys that disappeared meanwhile.
 */
export class KvMirror {
  private readonly values = new Map<string, Uint8Array>();
  private stopped = false;
  private current: { stop(): void } | null = null;
  private timer: NodeJS.Timeout | undefined;

  private constructor(private readonly kv: KV, private readonly o: KvMirrorOptions) {}

  /** Starts mirroring; resolves after the first full sync. */
  static async start(kv: KV, o: KvMirrorOptions): Promise<KvMirror> {
    const m = new KvMirror(kv, o);
    await new Promise<void>((resolve) => {
      void m.loop(resolve);
    });
    m.timer = setInterval(() => m.current?.stop(), o.reconcileMs ?? 30_000);
    m.timer.unref();
    return m;
  }

  get(key: string): Uint8Array | undefined {
    return this.values.get(key);
  }

  entries(): IterableIterator<[string, Uint8Array]> {
    return this.values.entries();
  }

  private apply(e: KvEntry, seen: Set<string> | null): void {
    seen?.add(e.key);
    if (e.operation === 'PUT') {
      const prev = this.values.get(e.key);
      if (prev && Buffer.compare(prev, e.value) === 0) return;
      this.values.set(e.key, e.value);
      this.o.onChange(e.key, e.value);
    } else if (this.values.delete(e.key)) {
      this.o.onChange(e.key, null);
    }
  }

  private async loop(firstSync: () => void): Promise<void> {
    let synced = firstSync as (() => void) | null;
    while (!this.stopped) {
      try {
        let seen: Set<string> | null = new Set<string>();
        const it = await this.kv.watch({
          key: '>',
          initializedFn: () => {
            for (const k of [...this.values.keys()]) {
              if (!seen!.has(k)) {
                this.values.delete(k);
                this.o.onChange(k, null);
              }
            }
            seen = null;
            this.o.onSync?.();
            synced?.();
            synced = null;
          },
        });
        this.current = it;
        for await (const e of it) this.apply(e, seen);
      } catch (err) {
        if (!this.stopped) this.o.log.warn({ err: String(err) }, 'kv watch ended; re-syncing');
      }
      this.current = null;
      if (!this.stopped) await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Stops watching. Idempotent. */
  close(): void {
    this.stopped = true;
    clearInterval(this.timer);
    this.current?.stop();
  }
}
