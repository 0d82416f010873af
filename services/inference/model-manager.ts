import { createHash } from 'node:crypto';
import type { KV, ObjectStore } from 'nats';
import { KvMirror, parseModelKey, type EventPublisher } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { ModelEvent_Kind, TrafficRecord, VersionRecord, VersionState, type LoadedVersion } from '../../libs/proto/index.js';
import { elementCount } from '../../libs/tensor/index.js';
import { specOf, type ModelSpec } from './model-spec.js';
import type { Scheduler } from './scheduler.js';
import type { SessionPool } from './session-pool.js';

export interface LoadedEntry {
  spec: ModelSpec;
  state: VersionState;
  reason: string;
  sha256: string;
}

export interface ModelManagerOptions {
  /** Newest versions of each model kept loaded besides the aliased ones. */
  keepLatest: number;
  defaultMaxBatch: number;
  /** How long a version being unloaded may take to finish its in-flight requests. */
  drainMs: number;
  replicaId: string;
}

/**
 * Decides which model versions this replica holds and drives each through
 * loading → warm-up → ready → draining → unloaded, from the registry's KV
 * state: aliased versions, each alias's previous target, canary and shadow
 * versions, and the newest `keepLatest`; the rest are drained and unloaded. Artifacts are
 * read whole from the Object Store and their SHA-256 checked before ONNX
 * Runtime sees them. A version that fails never disturbs the others.
 */
export class ModelManager {
  private readonly byName = new Map<string, Map<number, LoadedEntry>>();
  private readonly records = new Map<string, Map<number, VersionRecord>>();
  private readonly traffic = new Map<string, TrafficRecord>();
  private readonly pinned = new Set<string>();
  private mirror: KvMirror | null = null;
  private reconciling = false;
  private again = false;
  private closed = false;

  constructor(
    private readonly kv: KV,
    private readonly artifacts: ObjectStore,
    private readonly pool: SessionPool,
    private readonly scheduler: Scheduler,
    private readonly events: EventPublisher,
    private readonly log: Logger,
    private readonly o: ModelManagerOptions,
    private readonly onChange: () => void,
  ) {}

  /** Starts watching the registry; resolves after the first sync (loading continues in the background). */
  async start(): Promise<void> {
    this.mirror = await KvMirror.start(this.kv, {
      log: this.log,
      onChange: (key, value) => this.applyKv(key, value),
      onSync: () => this.reconcile(),
    });
    this.reconcile();
  }

  /** The entry for a loaded version (any state); the hot path checks `state`. */
  lookup(name: string, version: number): LoadedEntry | undefined {
    return this.byName.get(name)?.get(version);
  }

  /** Resolves a direct OIP request's version: a number, an alias, or "" for production (else newest ready). */
  resolve(name: string, version: string): LoadedEntry | undefined {
    const versions = this.byName.get(name);
    if (!versions) return undefined;
    if (/^\d+$/.test(version)) return versions.get(Number(version));
    const target = this.traffic.get(name)?.aliases[version || 'production'];
    if (target !== undefined) return versions.get(target);
    if (version) return undefined;
    let best: LoadedEntry | undefined;
    for (const e of versions.values()) if (e.state === VersionState.VERSION_STATE_READY && (!best || e.spec.version > best.spec.version)) best = e;
    return best;
  }

  /** What this replica holds, for its heartbeat record. */
  loaded(): LoadedVersion[] {
    const out: LoadedVersion[] = [];
    for (const [name, vs] of this.byName) for (const [version, e] of vs) out.push({ name, version, state: e.state, reason: e.reason });
    return out;
  }

  /** Pins a version (Runtime.Load) so the version policy keeps it; resolves when it settles. */
  async pin(name: string, version: number): Promise<LoadedEntry | undefined> {
    this.pinned.add(`${name}:${version}`);
    this.reconcile();
    for (let i = 0; i < 600; i++) {
      const e = this.lookup(name, version);
      if (e && e.state !== VersionState.VERSION_STATE_LOADING) return e;
      if (!this.records.get(name)?.has(version)) return undefined;
      await new Promise((r) => setTimeout(r, 50));
    }
    return this.lookup(name, version);
  }

  unpin(name: string, version: number): void {
    this.pinned.delete(`${name}:${version}`);
    this.reconcile();
  }

  private applyKv(key: string, value: Uint8Array | null): void {
    const k = parseModelKey(key);
    if (!k) return;
    try {
      if (k.kind === 'version') {
        let m = this.records.get(k.name);
        if (!value) m?.delete(k.version);
        else {
          if (!m) this.records.set(k.name, (m = new Map()));
          m.set(k.version, VersionRecord.decode(value));
        }
      } else if (!value) this.traffic.delete(k.name);
      else this.traffic.set(k.name, TrafficRecord.decode(value));
    } catch (err) {
      this.log.warn({ key, err: String(err) }, 'undecodable registry record ignored');
    }
    this.reconcile();
  }

  private desired(): Map<string, VersionRecord> {
    const want = new Map<string, VersionRecord>();
    for (const [name, versions] of this.records) {
      const newest = [...versions.keys()].sort((a, b) => b - a).slice(0, this.o.keepLatest);
      const t = this.traffic.get(name);
      const aliased = Object.values(t?.aliases ?? {});
      // The previous target of each alias stays warm, so a rollback is instant.
      const previous = Object.values(t?.history ?? {}).flatMap((h) => h.versions.slice(-1));
      const routed = [t?.canary?.version, t?.shadow?.version].filter((v): v is number => v !== undefined && v > 0);
      for (const v of new Set([...newest, ...aliased, ...previous, ...routed])) {
        const rec = versions.get(v);
        if (rec) want.set(`${name}:${v}`, rec);
      }
    }
    for (const key of this.pinned) {
      const [name, v] = key.split(':');
      const rec = this.records.get(name!)?.get(Number(v));
      if (rec) want.set(key, rec);
    }
    return want;
  }

  /** Brings the loaded set to the desired set, one change at a time. */
  reconcile(): void {
    if (this.closed) return;
    if (this.reconciling) {
      this.again = true;
      return;
    }
    this.reconciling = true;
    void (async () => {
      try {
        do {
          this.again = false;
          const want = this.desired();
          for (const [key, rec] of want) {
            const cur = this.lookup(rec.name, rec.version);
            if (!cur || (cur.sha256 !== rec.sha256 && cur.state !== VersionState.VERSION_STATE_LOADING)) await this.load(rec);
            if (this.closed) return;
            void key;
          }
          for (const [name, vs] of this.byName) {
            for (const [version, e] of vs) {
              if (!want.has(`${name}:${version}`) && e.state !== VersionState.VERSION_STATE_DRAINING) void this.unload(e);
            }
          }
        } while (this.again && !this.closed);
      } finally {
        this.reconciling = false;
      }
    })();
  }

  private set(entry: LoadedEntry, state: VersionState, reason = ''): void {
    entry.state = state;
    entry.reason = reason;
    this.onChange();
  }

  private async load(rec: VersionRecord): Promise<void> {
    const { name, version } = rec;
    let spec: ModelSpec;
    const base = { name, version, replicaId: this.o.replicaId };
    const fail = (entry: LoadedEntry, reason: string) => {
      this.set(entry, VersionState.VERSION_STATE_FAILED, reason);
      this.log.warn({ model: name, version, reason }, 'version failed');
      void this.events.publish({ ...base, kind: ModelEvent_Kind.FAILED, reason });
    };
    let vs = this.byName.get(name);
    if (!vs) this.byName.set(name, (vs = new Map()));
    try {
      spec = specOf(rec, this.o.defaultMaxBatch);
    } catch (err) {
      const e: LoadedEntry = { spec: undefined as unknown as ModelSpec, state: VersionState.VERSION_STATE_FAILED, reason: '', sha256: rec.sha256 };
      vs.set(version, e);
      return fail(e, String((err as Error).message));
    }
    const entry: LoadedEntry = { spec, state: VersionState.VERSION_STATE_LOADING, reason: '', sha256: rec.sha256 };
    vs.set(version, entry);
    this.onChange();
    void this.events.publish({ ...base, kind: ModelEvent_Kind.LOADING });
    let bytes: Uint8Array | null;
    try {
      bytes = await this.artifacts.getBlob(rec.sha256);
    } catch (err) {
      return fail(entry, `artifact unreadable: ${String((err as Error).message ?? err).slice(0, 120)}`);
    }
    if (!bytes) return fail(entry, 'artifact missing from the object store');
    if (createHash('sha256').update(bytes).digest('hex') !== rec.sha256) return fail(entry, 'artifact digest mismatch');
    try {
      await this.pool.load(spec.key, bytes);
    } catch (err) {
      return fail(entry, `ONNX Runtime cannot load it: ${String((err as Error).message).split('\n')[0]!.slice(0, 200)}`);
    }
    this.scheduler.addVersion(spec);
    const warm = await this.warmUp(spec);
    if (warm) {
      this.scheduler.removeVersion(spec.key);
      await this.pool.unload(spec.key);
      return fail(entry, `warm-up failed: ${warm}`);
    }
    void this.events.publish({ ...base, kind: ModelEvent_Kind.WARMED });
    this.set(entry, VersionState.VERSION_STATE_READY);
    this.log.info({ model: name, version, batchable: spec.batchable, maxBatch: spec.maxBatchSize }, 'version ready');
    void this.events.publish({ ...base, kind: ModelEvent_Kind.READY });
  }

  /** Runs one all-zero request of batch 1; returns an error message or null. */
  private warmUp(spec: ModelSpec): Promise<string | null> {
    const shapes = spec.inputs.map((s) => s.shape.map((d) => (d < 0 ? 1 : d)));
    const data = shapes.map((sh, k) => new Uint8Array(elementCount(sh) * spec.inputTypes[k]!.bytes));
    return new Promise((resolve) => {
      const now = performance.now();
      this.scheduler.submit({
        spec,
        req: { id: 'warm-up', shapes, data, outputs: spec.outputs.map((_, k) => k), rows: spec.batchable ? 1 : 1 },
        deadline: now + 60_000,
        enqueuedAt: now,
        done: (code, message) => resolve(code === 0 ? null : message),
      });
    });
  }

  private async unload(entry: LoadedEntry): Promise<void> {
    const { name, version } = entry.spec ?? { name: '', version: 0 };
    const vs = this.byName.get(name);
    const base = { name, version, replicaId: this.o.replicaId };
    if (entry.state === VersionState.VERSION_STATE_FAILED || !entry.spec) {
      for (const [v, e] of vs ?? []) if (e === entry) vs!.delete(v);
      this.onChange();
      return;
    }
    this.set(entry, VersionState.VERSION_STATE_DRAINING);
    void this.events.publish({ ...base, kind: ModelEvent_Kind.DRAINING });
    this.scheduler.removeVersion(entry.spec.key);
    const until = Date.now() + this.o.drainMs;
    while (this.scheduler.inflight(entry.spec.key) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    await this.pool.unload(entry.spec.key).catch(() => undefined);
    if (vs?.get(version) === entry) vs.delete(version);
    if (vs?.size === 0) this.byName.delete(name);
    this.onChange();
    void this.events.publish({ ...base, kind: ModelEvent_Kind.UNLOADED });
  }

  close(): void {
    this.closed = true;
    this.mirror?.close();
  }
}
