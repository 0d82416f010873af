import { createHash } from 'node:crypto';
import type { JetStreamManager, KV, ObjectStore } from 'nats';
import { BUCKET_MODELS, currentDeadline, keys, parseModelKey, retryTransient } from '../../libs/bus/index.js';
import { kvKeysWithMessages } from '../../libs/bus/kv-keys.js';
import { AbortedError, MeshError, NotFoundError, UnavailableError } from '../../libs/errors/index.js';
import { ProbeRecord, ReferenceProfile, TrafficRecord, VersionRecord, type ModelInfo } from '../../libs/proto/index.js';

/** How many previous targets of each alias are kept for rollback. */
const HISTORY_DEPTH = 10;

/**
 * The registry's state in NATS: version records and traffic records in the
 * `infermesh-models` KV bucket, model bytes in the `infermesh-artifacts`
 * Object Store under their SHA-256. Storage failures become UNAVAILABLE.
 *
 * On a NATS cluster a leader election makes JetStream answer "no responders"
 * or time out for a few seconds: every call retries those with backoff until
 * the call's deadline (libs/bus withDeadline, else 8 s). A write whose answer
 * was lost (timeout) may still have been stored: the record is read again and
 * compared with what was sent, so success and failure are reported as they
 * happened, never guessed. `kv` should read from the stream's leader (openBuckets
 * `leaderReads`): a follower's direct get can answer stale, or "no such key"
 * while it catches up after a restart (nats-server before 2.9.17), which would
 * refuse a promote of a version that exists or misreport a write's fate. Keys
 * are listed from the stream's subjects (kv-keys.ts), not through a consumer.
 */
export class ModelStore {
  constructor(private readonly kv: KV, private readonly artifacts: ObjectStore, private readonly jsm: JetStreamManager) {}

  /** Keys matching `filter` with a message (a value or a delete marker), from the stream's leader. */
  private keysWithMessages(filter: string): Promise<string[]> {
    return storage(() => kvKeysWithMessages(this.jsm, BUCKET_MODELS, filter));
  }

  /** Numbers in the last part of `keys` (`<model>.v.<n>`, `<model>.gone.<n>`). */
  private static numbers(found: string[]): number[] {
    return found.map((k) => Number(k.slice(k.lastIndexOf('.') + 1))).filter((v) => Number.isInteger(v) && v > 0);
  }

  /** A model's version records that hold a value now (deleted ones left out), by number. */
  private async liveVersions(name: string): Promise<VersionRecord[]> {
    const numbers = ModelStore.numbers(await this.keysWithMessages(keys.versions(name))).sort((a, b) => a - b);
    return (await Promise.all(numbers.map((v) => this.getVersion(name, v)))).filter((v): v is VersionRecord => v !== null);
  }

  /** Stores `bytes` under their SHA-256 unless already present; returns the digest. */
  async putArtifact(bytes: Uint8Array): Promise<string> {
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    await storage(async () => {
      const info = await this.artifacts.info(sha256);
      if (!info || info.size !== bytes.byteLength) await this.artifacts.putBlob({ name: sha256 }, bytes);
    });
    return sha256;
  }

  /** Writes `rec` as the model's next version (1, 2, …); returns the stored record. */
  async addVersion(rec: Omit<VersionRecord, 'version'>): Promise<VersionRecord> {
    for (let attempt = 0; attempt < 20; attempt++) {
      // Deleted versions' numbers count too: a number names one model file forever (a version key
      // with only a delete marker left counts as well).
      const versions = [...ModelStore.numbers(await this.keysWithMessages(keys.versions(rec.name))), ...(await this.deletedNumbers(rec.name))];
      const version = (versions.length ? Math.max(...versions) : 0) + 1;
      const full: VersionRecord = { ...rec, version };
      const key = keys.version(rec.name, version);
      const data = VersionRecord.encode(full).finish();
      try {
        await retryTransient(() => this.kv.create(key, data));
        return full;
      } catch (err) {
        // A create whose answer was lost may have been stored (then a retry says "key exists"): ours?
        if (await this.holds(key, data)) return full;
        if (!isConflict(err)) throw unavailable(err);
        // Another push took this number; take the next one.
      }
    }
    throw new AbortedError('too many concurrent pushes of this model; retry');
  }

  /** Numbers of a model's versions that hold a record now (deleted ones left out). */
  async versionNumbers(name: string): Promise<number[]> {
    return (await this.liveVersions(name)).map((v) => v.version);
  }

  /** Whether `key` holds exactly `data` now (a write whose fate was unknown landed). */
  private async holds(key: string, data: Uint8Array): Promise<boolean> {
    const e = await storage(() => this.kv.get(key)).catch(() => null);
    return !!e && e.operation === 'PUT' && Buffer.compare(Buffer.from(e.value), Buffer.from(data)) === 0;
  }

  async getVersion(name: string, version: number): Promise<VersionRecord | null> {
    const e = await storage(() => this.kv.get(keys.version(name, version)));
    return e && e.operation === 'PUT' && e.value.length ? VersionRecord.decode(e.value) : null;
  }

  async getTraffic(name: string): Promise<{ rec: TrafficRecord; revision: number } | null> {
    const e = await storage(() => this.kv.get(keys.traffic(name)));
    return e && e.operation === 'PUT' && e.value.length ? { rec: TrafficRecord.decode(e.value), revision: e.revision } : null;
  }

  /**
   * Points `alias` at `version` by compare-and-set on the traffic record.
   * With `expected` set, the alias must point there now, else ABORTED (also
   * when it moves between the read and the write); without it, a lost race is
   * retried on fresh state. With `resume`, the model's `unloaded` flag is
   * cleared in the same write (`resumed` says whether it was set), even when
   * the alias already points at `version`.
   */
  async setAlias(name: string, alias: string, version: number, actor: string, expected?: number, resume = false): Promise<{ rec: TrafficRecord; previous: number | undefined; resumed: boolean }> {
    let previous: number | undefined;
    let resumed = false;
    const rec = await this.updateTraffic(name, actor, (r) => {
      previous = r.aliases[alias];
      if (expected !== undefined && expected !== 0 && previous !== expected) {
        throw new AbortedError(`alias ${alias} of ${name} points to ${previous ?? 'nothing'}, not ${expected}`);
      }
      resumed = resume && r.unloaded;
      if (resumed) r.unloaded = false;
      if (previous === version) return resumed ? undefined : false;
      if (previous !== undefined) {
        const h = (r.history[alias] ??= { versions: [] });
        h.versions = [...h.versions, previous].slice(-HISTORY_DEPTH);
      }
      r.aliases[alias] = version;
    });
    return { rec, previous, resumed };
  }

  /**
   * Applies `change` to the model's traffic record by compare-and-set,
   * retrying on a lost race with fresh state. `change` may throw to refuse,
   * or return false when there is nothing to write.
   */
  async updateTraffic(name: string, actor: string, change: (rec: TrafficRecord) => void | false): Promise<TrafficRecord> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const cur = await this.getTraffic(name);
      const rec = cur ? TrafficRecord.fromPartial(cur.rec) : TrafficRecord.fromPartial({ name });
      // `false`: nothing to change (e.g. the alias already points there).
      if (change(rec) === false) return rec;
      rec.updatedAtMs = Date.now();
      rec.updatedBy = actor;
      const data = TrafficRecord.encode(rec).finish();
      const key = keys.traffic(name);
      // The same bytes (same revision expected) are sent again after a transient failure, never a
      // recomputed change: if the first send was stored, the compare-and-set refuses the copy.
      try {
        await retryTransient(() => (cur ? this.kv.update(key, data, cur.revision) : this.kv.create(key, data)));
        return rec;
      } catch (err) {
        // Stored after all (its answer lost, a retry then refused as a conflict)? The record says.
        if (await this.landed(key, data, cur?.revision ?? 0)) return rec;
        if (!isConflict(err)) throw unavailable(err);
      }
    }
    throw new AbortedError(`traffic of ${name} is changing too often; retry`);
  }

  /**
   * After a write to `key` (expecting revision `from`) failed: whether the
   * record now holds `data`. Reads until the answer is known or the deadline
   * passes; then the write's fate is unknown and UNAVAILABLE says so.
   */
  private async landed(key: string, data: Uint8Array, from: number): Promise<boolean> {
    try {
      const e = await retryTransient(() => this.kv.get(key), { deadline: Math.max(currentDeadline(), Date.now() + 1_000) });
      if (!e || e.operation !== 'PUT') return false;
      return e.revision > from && Buffer.compare(Buffer.from(e.value), Buffer.from(data)) === 0;
    } catch (err) {
      throw new UnavailableError('model storage unavailable: the change may or may not have been stored; read the model again before retrying', { cause: err });
    }
  }

  /** One model's versions and traffic; NOT_FOUND when it has no version. */
  async getModel(name: string): Promise<ModelInfo> {
    const versions = await this.liveVersions(name);
    if (versions.length === 0) throw new NotFoundError(`model ${name} not found`);
    const traffic = await this.getTraffic(name);
    return { name, versions, traffic: traffic?.rec };
  }

  /** Stores a version's reference profile (written once, at push). */
  async putReference(profile: ReferenceProfile): Promise<void> {
    await storage(() => this.kv.put(keys.reference(profile.name, profile.version), ReferenceProfile.encode(profile).finish()));
  }

  /** A version's reference profile, or null when it was pushed without one. */
  async getReference(name: string, version: number): Promise<ReferenceProfile | null> {
    const e = await storage(() => this.kv.get(keys.reference(name, version)));
    return e && e.operation === 'PUT' && e.value.length ? ReferenceProfile.decode(e.value) : null;
  }

  /** Stores (or with null, removes) a model's golden probe. */
  async setProbe(name: string, probe: ProbeRecord | null): Promise<void> {
    await storage(async () => {
      if (probe) await this.kv.put(keys.probe(name), ProbeRecord.encode(probe).finish());
      else await this.kv.delete(keys.probe(name));
    });
  }

  /** The model file stored under `sha256`; NOT_FOUND when the object store lacks it. */
  async getArtifact(sha256: string): Promise<Uint8Array> {
    const bytes = await storage(() => this.artifacts.getBlob(sha256));
    if (!bytes) throw new NotFoundError(`artifact ${sha256.slice(0, 12)} is not in the object store`);
    return bytes;
  }

  /** Every object in the artifacts store: name, size, and when it was stored (ms). */
  async listArtifacts(): Promise<{ name: string; size: number; mtimeMs: number }[]> {
    return storage(async () => (await this.artifacts.list()).filter((i) => !i.deleted).map((i) => ({ name: i.name, size: i.size, mtimeMs: Date.parse(i.mtime) })));
  }

  /** Removes an artifact (its chunks are purged). */
  async deleteArtifact(sha256: string): Promise<void> {
    await storage(() => this.artifacts.delete(sha256));
  }

  /** Bytes the artifacts' stream holds on disk. */
  async artifactBytes(): Promise<number> {
    return storage(async () => (await this.artifacts.status()).size);
  }

  /**
   * Changes a version's record by compare-and-set (retried on a lost race).
   * `change` may throw to refuse, or return false when nothing changes.
   * NOT_FOUND for an unknown version.
   */
  async updateVersion(name: string, version: number, change: (rec: VersionRecord) => void | false): Promise<VersionRecord> {
    const key = keys.version(name, version);
    for (let attempt = 0; attempt < 10; attempt++) {
      const e = await storage(() => this.kv.get(key));
      if (!e || e.operation !== 'PUT' || !e.value.length) throw new NotFoundError(`model ${name} has no version ${version}`);
      const rec = VersionRecord.decode(e.value);
      if (change(rec) === false) return rec;
      const data = VersionRecord.encode(rec).finish();
      try {
        await retryTransient(() => this.kv.update(key, data, e.revision));
        return rec;
      } catch (err) {
        if (await this.landed(key, data, e.revision)) return rec;
        if (!isConflict(err)) throw unavailable(err);
      }
    }
    throw new AbortedError(`version ${version} of ${name} is changing too often; retry`);
  }

  /**
   * Deletes a version: its record is kept under the deleted key first (so its
   * number is never reused), then the version and reference keys are deleted.
   */
  async deleteVersion(rec: VersionRecord): Promise<void> {
    await storage(async () => {
      await this.kv.put(keys.deleted(rec.name, rec.version), VersionRecord.encode(rec).finish());
      await this.kv.delete(keys.version(rec.name, rec.version));
      await this.kv.delete(keys.reference(rec.name, rec.version));
    });
  }

  /** Numbers of a model's deleted versions. */
  async deletedNumbers(name: string): Promise<number[]> {
    return ModelStore.numbers(await this.keysWithMessages(keys.deletedAll(name)));
  }

  /** Every deleted version's record, of every model. */
  async deletedRecords(): Promise<VersionRecord[]> {
    const found = await this.keysWithMessages('*.gone.*');
    const out: VersionRecord[] = [];
    for (const k of found) {
      const e = await storage(() => this.kv.get(k));
      if (e && e.operation === 'PUT' && e.value.length) out.push(VersionRecord.decode(e.value));
    }
    return out;
  }

  /** A deleted version's record (what it was), or null. */
  async getDeleted(name: string, version: number): Promise<VersionRecord | null> {
    const e = await storage(() => this.kv.get(keys.deleted(name, version)));
    return e && e.operation === 'PUT' && e.value.length ? VersionRecord.decode(e.value) : null;
  }

  /** Names of all models with at least one version. */
  async modelNames(): Promise<string[]> {
    const names = new Set<string>();
    for (const k of await this.keysWithMessages('*.v.*')) {
      const p = parseModelKey(k);
      if (p?.kind === 'version') names.add(p.name);
    }
    // A model whose every version was deleted has marker messages left, and no version.
    const live = await Promise.all([...names].map(async (n) => ((await this.liveVersions(n)).length > 0 ? n : null)));
    return live.filter((n): n is string => n !== null).sort();
  }
}

function isConflict(err: unknown): boolean {
  const s = String((err as Error)?.message ?? err);
  return s.includes('wrong last sequence') || s.includes('key exists') || (err as { api_error?: { err_code?: number } })?.api_error?.err_code === 10071;
}

function unavailable(err: unknown): MeshError {
  return err instanceof MeshError ? err : new UnavailableError('model storage unavailable', { cause: err });
}

/** Runs a storage call, retrying JetStream's transient failures until the call's deadline; other failures become UNAVAILABLE. */
async function storage<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await retryTransient(fn);
  } catch (err) {
    throw unavailable(err);
  }
}
