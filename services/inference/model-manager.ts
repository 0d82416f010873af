import { createHash } from 'node:crypto';
import type { KV, ObjectStore } from 'nats';
import { KvMirror, parseModelKey, type EventPublisher } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { ModelEvent_Kind, ReplicaRecord, TrafficRecord, VersionRecord, VersionState, type LoadedVersion } from '../../libs/proto/index.js';
import { elementCount } from '../../libs/tensor/index.js';
import type { DecodedRequest } from './infer-request.js';
import { specOf, type ModelSpec } from './model-spec.js';
import { holders } from './placement.js';
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
  /**
   * Estimated memory this replica may give to models, bytes (0 = no limit):
   * each version counts its ONNX size once per worker. Versions that do not
   * fit are not loaded (aliased versions and newer ones first).
   */
  memoryBudgetBytes: number;
  workers: number;
  defaultMaxBatch: number;
  /** How long a version being unloaded may take to finish its in-flight requests. */
  drainMs: number;
  replicaId: string;
}

/** An all-zero request of one row (dynamic dimensions 1), for warm-up runs. */
function warmUpRequest(spec: ModelSpec): DecodedRequest {
  const shapes = spec.inputs.map((s) => s.shape.map((d) => (d < 0 ? 1 : d)));
  const data = shapes.map((sh, k) => new Uint8Array(elementCount(sh) * spec.inputTypes[k]!.bytes));
  return { id: 'warm-up', shapes, data, outputs: spec.outputs.map((_, k) => k), rows: 1 };
}

/**
 * Decides which model versions this replica holds and drives each through
 * loading → warm-up → ready → draining → unloaded, from the registry's KV
 * state: aliased versions, each alias's previous target, canary and shadow
 * versions, and the newest `keepLatest` — of the models placed on this
 * replica (all, or k chosen by rendezvous hashing), within its memory budget.
 * The rest are drained and unloaded. Artifacts are
 * read whole from the Object Store and their SHA-256 checked before ONNX
 * Runtime sees them. A version that fails never disturbs the others.
 */
export class ModelManager {
  private readonly byName = new Map<string, Map<number, LoadedEntry>>();
  private readonly records = new Map<string, Map<number, VersionRecord>>();
  private readonly traffic = new Map<string, TrafficRecord>();
  private readonly pinned = new Set<string>();
  private mirror: KvMirror | null = null;
  private replicaMirror: KvMirror | null = null;
  /** Ids of the replicas alive now (from their heartbeats), this one included. */
  private readonly live = new Set<string>();
  /** Other replicas' records, for hand-over when this one leaves. */
  private readonly others = new Map<string, ReplicaRecord>();
  private leaving = false;
  private overBudget = new Set<string>();
  private reconciling = false;
  private again = false;
  private closed = false;

  constructor(
    private readonly kv: KV,
    private readonly replicasKv: KV,
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
    this.live.add(this.o.replicaId);
    this.replicaMirror = await KvMirror.start(this.replicasKv, {
      log: this.log,
      reconcileMs: 15_000,
      onChange: (key, value) => {
        // A leaving or draining replica no longer counts: its models move to the next in their ranking.
        let alive = key === this.o.replicaId && !this.leaving;
        if (key !== this.o.replicaId) {
          this.others.delete(key);
          if (value) {
            try {
              const r = ReplicaRecord.decode(value);
              this.others.set(key, r);
              alive = r.accepting && !r.leaving;
            } catch {
              alive = false;
            }
          }
        }
        const had = this.live.has(key);
        if (alive) this.live.add(key);
        else this.live.delete(key);
        if (had !== alive) this.reconcile();
      },
    });
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

  /**
   * Starts leaving: placement stops counting this replica (others pick up its
   * models) while it keeps serving. Resolves once every version it serves is
   * ready on another replica, or after `timeoutMs`.
   */
  async handOver(timeoutMs: number): Promise<void> {
    this.leaving = true;
    this.live.delete(this.o.replicaId);
    const mine = this.loaded().filter((v) => v.state === VersionState.VERSION_STATE_READY);
    const successors = () => [...this.others.values()].some((r) => r.accepting && !r.leaving);
    // With no replica left to take over (the whole mesh is stopping), there is nothing to wait for.
    const covered = () =>
      !successors() ||
      mine.every((v) =>
        [...this.others.values()].some((r) => r.accepting && !r.leaving && r.versions.some((x) => x.name === v.name && x.version === v.version && x.state === VersionState.VERSION_STATE_READY)),
      );
    const until = Date.now() + timeoutMs;
    while (!covered() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
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
    // Only versions and traffic route requests; other keys of the bucket (reference profiles, probes) are the monitor's.
    if (k?.kind !== 'version' && k?.kind !== 'traffic') return;
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
      const newest = [...versions.keys()].sort((a, b) => b - a);
      // Placement: a model asking for k replicas lives on the k that rendezvous hashing picks.
      const k = versions.get(newest[0]!)?.replicas ?? 0;
      // While leaving, keep everything: it serves until the hand-over is done.
      if (k > 0 && !this.leaving && !holders(name, this.live, k).has(this.o.replicaId)) continue;
      const t = this.traffic.get(name);
      const aliased = Object.values(t?.aliases ?? {});
      // The previous target of each alias stays warm, so a rollback is instant.
      const previous = Object.values(t?.history ?? {}).flatMap((h) => h.versions.slice(-1));
      const routed = [t?.canary?.version, t?.shadow?.version].filter((v): v is number => v !== undefined && v > 0);
      // Archived versions are kept in the registry, not warm here (they cannot be aliased or routed to).
      const live = newest.filter((v) => !versions.get(v)?.archived);
      for (const v of new Set([...aliased, ...routed, ...live.slice(0, this.o.keepLatest), ...previous])) {
        const rec = versions.get(v);
        if (rec) want.set(`${name}:${v}`, rec);
      }
    }
    for (const key of this.pinned) {
      const [name, v] = key.split(':');
      const rec = this.records.get(name!)?.get(Number(v));
      if (rec) want.set(key, rec);
    }
    return this.o.memoryBudgetBytes > 0 ? this.withinBudget(want) : want;
  }

  /** Keeps the desired versions that fit the memory budget, in priority order (the order `desired` built). */
  private withinBudget(want: Map<string, VersionRecord>): Map<string, VersionRecord> {
    const kept = new Map<string, VersionRecord>();
    const over = new Set<string>();
    let used = 0;
    for (const [key, rec] of want) {
      const cost = Number(rec.sizeBytes) * Math.max(1, this.o.workers);
      if (used + cost > this.o.memoryBudgetBytes) {
        over.add(key);
        continue;
      }
      used += cost;
      kept.set(key, rec);
    }
    for (const key of over) if (!this.overBudget.has(key)) this.log.warn({ version: key, budgetBytes: this.o.memoryBudgetBytes }, 'version not loaded: over the memory budget');
    this.overBudget = over;
    return kept;
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
    const warmReq = warmUpRequest(spec);
    const warm = await this.warmUp(spec, warmReq);
    if (typeof warm === 'string') {
      this.scheduler.removeVersion(spec.key);
      await this.pool.unload(spec.key);
      return fail(entry, `warm-up failed: ${warm}`);
    }
    // A tiny model (measured here) also runs on the event loop, skipping the hand-off to a worker.
    const inline = await this.scheduler.tryInline(spec, bytes, warmReq, warm);
    void this.events.publish({ ...base, kind: ModelEvent_Kind.WARMED });
    this.set(entry, VersionState.VERSION_STATE_READY);
    this.log.info({ model: name, version, batchable: spec.batchable, maxBatch: spec.maxBatchSize, inline }, 'version ready');
    void this.events.publish({ ...base, kind: ModelEvent_Kind.READY });
  }

  /** Runs one all-zero request of batch 1 on a worker; resolves with its run time (µs) or an error message. */
  private warmUp(spec: ModelSpec, req: DecodedRequest): Promise<number | string> {
    return new Promise((resolve) => {
      const now = performance.now();
      this.scheduler.submit({
        spec,
        req,
        deadline: now + 60_000,
        enqueuedAt: now,
        priority: 0,
        trace: null,
        answer: (err, _response, _queueMicros, computeMicros) => resolve(err ? err.message : computeMicros),
        started: false,
        queued: false,
        cancelled: false,
        cacheKey: null,
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
    this.replicaMirror?.close();
  }
}
