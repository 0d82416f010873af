/**
 * The registry's curation and model-making RPCs: optimize (a cheaper version
 * held to an accuracy gate), compose (pipelines and ensembles as one graph),
 * tags, archive, delete, retention and artifact garbage collection. Every
 * change is a lifecycle event with actor and reason, stored before the answer.
 */
import type * as grpc from '@grpc/grpc-js';
import { checkName, type EventPublisher } from '../../libs/bus/index.js';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../../libs/errors/index.js';
import type { CallContext } from '../../libs/grpc/index.js';
import {
  ModelEvent_Kind,
  type ApplyRetentionRequest,
  type ApplyRetentionResponse,
  type ArchiveVersionRequest,
  type BenchPoint,
  type CollectGarbageRequest,
  type CollectGarbageResponse,
  type ComposeModelRequest,
  type DeleteVersionRequest,
  type DeleteVersionResponse,
  type GateResult,
  type Lineage,
  type OptimizeModelRequest,
  type OptimizeModelResponse,
  type RetainedVersion,
  type SetTagsRequest,
  type TrafficRecord,
  type VersionRecord,
} from '../../libs/proto/index.js';
import type { ModelStore } from './model-store.js';
import { referenceFormat } from './reference-parse.js';
import { validateModel, type ReferenceRowSample, type ValidateOptions } from './validate.js';
import type { ChildBenchPoint, ComposeCombine, OptimizeMethod, Workshop } from './workshop.js';

type Unary = <Req, Res>(fn: (req: Req, ctx: CallContext) => Promise<Res>) => grpc.handleUnaryCall<Req, Res>;

/** What the registry's own handlers share with these. */
export interface CurationContext {
  store: ModelStore;
  events: EventPublisher;
  workshop: Workshop;
  validate: ValidateOptions;
  unary: Unary;
  /** Checks a field's extra role (management-roles.ts). */
  field(ctx: CallContext, rpc: string, name: string): void;
  reasonOf(given: string, otherwise: string): string;
  actorOf(ctx: CallContext): string;
  by(ctx: CallContext): { actor?: string };
  /** Largest `data` an OptimizeModel call may carry. */
  maxDataBytes: number;
}

const TAG_KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const MAX_TAGS = 32;
const METHODS: readonly string[] = ['graph', 'fp16', 'int8', 'prune'];
/** Default minimum age of an artifact before GC may remove it: a push in flight stores its file before its record. */
const GC_MIN_AGE_S = 3600;

/** Checks tags: keys `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`, values ≤ 256 characters without control characters. */
export function checkTags(tags: Record<string, string>, field: string): Record<string, string> {
  for (const [k, v] of Object.entries(tags)) {
    if (!TAG_KEY_RE.test(k)) throw new InvalidArgumentError(field, `key "${k.slice(0, 64)}" must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}`);
    if (v.length > 256 || /[\u0000-\u001f\u007f]/.test(v)) throw new InvalidArgumentError(field, `value of "${k}" must be at most 256 characters without control characters`);
  }
  if (Object.keys(tags).length > MAX_TAGS) throw new InvalidArgumentError(field, `at most ${MAX_TAGS} tags per version`);
  return tags;
}

/** Why a version cannot go: aliases (and their rollback history), canary, shadow; `derived` adds versions made from it. */
export async function dependents(store: ModelStore, name: string, version: number, derived: boolean): Promise<string[]> {
  const why: string[] = [];
  const t: TrafficRecord | undefined = (await store.getTraffic(name))?.rec;
  for (const [alias, v] of Object.entries(t?.aliases ?? {})) if (v === version) why.push(`alias ${alias}`);
  for (const [alias, h] of Object.entries(t?.history ?? {})) if (h.versions.includes(version)) why.push(`rollback history of alias ${alias}`);
  if (t?.canary?.version === version) why.push('the canary');
  if (t?.shadow?.version === version) why.push('the shadow');
  if (derived) {
    for (const m of await store.modelNames()) {
      for (const v of (await store.getModel(m).catch(() => null))?.versions ?? []) {
        if (v.lineage?.derivedFrom.some((d) => d.name === name && d.version === version)) why.push(`derived version ${m}@${v.version}`);
      }
    }
  }
  return why;
}

async function versionOf(store: ModelStore, name: string, version: number): Promise<VersionRecord> {
  if (!version) throw new InvalidArgumentError('version', 'must be a version number ≥ 1');
  const rec = await store.getVersion(name, version);
  if (rec) return rec;
  const known = await store.versionNumbers(name);
  throw new NotFoundError(known.length ? `model ${name} has no version ${version}` : `model ${name} not found`);
}

function benchPoints(points: readonly ChildBenchPoint[]): BenchPoint[] {
  return points.map((p) => ({ batch: p.batch, runs: p.runs, p50Ms: p.p50Ms, p99Ms: p.p99Ms, rowsPerS: p.rowsPerS }));
}

const pct = (x: number) => `${(x * 100).toFixed(2)}%`;

/** The handlers of OptimizeModel, ComposeModel, SetTags, ArchiveVersion, DeleteVersion, ApplyRetention and CollectGarbage. */
export function curationHandlers(c: CurationContext) {
  const { store, events, unary } = c;

  /** Stores a registry-made version: validated like a push, with lineage and (when the source had one) its reference profile. */
  const storeMade = async (
    ctx: CallContext,
    name: string,
    bytes: Uint8Array,
    made: { description: string; tags: Record<string, string>; lineage: Lineage; like: VersionRecord; referenceFrom?: VersionRecord; reason: string },
  ): Promise<VersionRecord> => {
    const sig = await validateModel(bytes, c.validate);
    const sha256 = await store.putArtifact(bytes);
    const version = await store.addVersion({
      ...made.like,
      name,
      sha256,
      sizeBytes: bytes.byteLength,
      inputs: sig.inputs,
      outputs: sig.outputs,
      batchable: sig.batchable,
      batching: sig.batchable ? made.like.batching : { maxBatchSize: 1, maxQueueDelayMicros: 0 },
      description: made.description,
      createdAtMs: Date.now(),
      createdBy: c.actorOf(ctx),
      tags: made.tags,
      lineage: made.lineage,
      archived: false,
      archivedAtMs: 0,
    });
    // The inputs are the source's, so its reference (drift baseline and gate rows) holds for the new version too.
    const ref = made.referenceFrom ? await store.getReference(made.referenceFrom.name, made.referenceFrom.version) : null;
    if (ref) await store.putReference({ ...ref, name, version: version.version, createdAtMs: Date.now() });
    await events.publish({ name, version: version.version, kind: ModelEvent_Kind.REGISTERED, reason: made.reason, ...c.by(ctx) });
    return version;
  };

  return {
    optimizeModel: unary<OptimizeModelRequest, OptimizeModelResponse>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      if (!METHODS.includes(req.method)) throw new InvalidArgumentError('method', 'must be graph, fp16, int8 or prune');
      const method = req.method as OptimizeMethod;
      if (req.force) c.field(ctx, 'OptimizeModel', 'force');
      const sparsity = req.sparsity || 0.5;
      if (method === 'prune' && !(sparsity > 0 && sparsity < 1)) throw new InvalidArgumentError('sparsity', 'must be in (0, 1)');
      const level = req.level || 'basic';
      if (level !== 'basic' && level !== 'extended') throw new InvalidArgumentError('level', 'must be basic or extended (the portable levels; layout and all are machine-specific)');
      if (!(req.maxAbsDiff >= 0 && Number.isFinite(req.maxAbsDiff))) throw new InvalidArgumentError('max_abs_diff', 'must be a finite number ≥ 0');
      const minAgreement = req.minAgreement || 0.99;
      if (!(minAgreement > 0 && minAgreement <= 1)) throw new InvalidArgumentError('min_agreement', 'must be in (0, 1]');
      const threshold = req.threshold || 0.5;
      if (!Number.isFinite(threshold)) throw new InvalidArgumentError('threshold', 'must be finite');
      if (req.data.byteLength > c.maxDataBytes) throw new InvalidArgumentError('data', `at most ${c.maxDataBytes} bytes`);
      const tags = checkTags(req.tags, 'tags');
      if (req.description.length > 1000) throw new InvalidArgumentError('description', 'at most 1000 characters');
      const rec = await versionOf(store, name, req.version);
      let sample: ReferenceRowSample | undefined;
      let data: { bytes: Uint8Array; format: 'csv' | 'jsonl' } | undefined;
      if (req.data.byteLength) data = { bytes: req.data, format: referenceFormat(req.dataFormat) as 'csv' | 'jsonl' };
      else {
        const ref = await store.getReference(name, rec.version);
        if (!ref?.sampleSha256) {
          throw new FailedPreconditionError(`model ${name} version ${rec.version} has no reference rows to gate on: push it with --reference, or pass --data`);
        }
        const raw = await store.getArtifact(ref.sampleSha256);
        const values = new Float64Array(raw.byteLength / 8);
        new Uint8Array(values.buffer).set(raw.subarray(0, values.length * 8));
        sample = { rows: ref.sampleRows, width: ref.sampleWidth, values };
      }
      const bytes = await store.getArtifact(rec.sha256);
      ctx.signal.throwIfAborted();
      const r = await c.workshop.optimize({
        bytes,
        method,
        sparsity,
        level,
        inputs: rec.inputs,
        outputs: rec.outputs,
        batchable: rec.batchable,
        threshold,
        ...(sample ? { sample } : {}),
        ...(data ? { data } : {}),
        skipBench: req.skipBench,
        benchMs: 300,
      });
      const methodLabel = method === 'prune' ? `prune=${sparsity}` : method === 'graph' ? `graph:${level}` : method;
      const over: string[] = [];
      if (req.maxAbsDiff > 0 && r.gate.maxAbsDiff > req.maxAbsDiff) over.push(`max abs diff ${r.gate.maxAbsDiff.toPrecision(3)} > ${req.maxAbsDiff}`);
      if (r.gate.agreement < minAgreement) over.push(`agreement ${pct(r.gate.agreement)} < ${pct(minAgreement)} (${r.gate.decision})`);
      const gate: GateResult = {
        rows: r.gate.rows,
        maxAbsDiff: r.gate.maxAbsDiff,
        meanAbsDiff: r.gate.meanAbsDiff,
        agreement: r.gate.agreement,
        decision: r.gate.decision,
        source: data ? 'data' : 'reference',
        maxAbsDiffLimit: req.maxAbsDiff,
        minAgreement,
        forced: over.length > 0 && req.force,
        metric: r.gate.metric?.name ?? '',
        metricOriginal: r.gate.metric?.original ?? 0,
        metricCandidate: r.gate.metric?.candidate ?? 0,
        metricDelta: r.gate.metric ? r.gate.metric.candidate - r.gate.metric.original : 0,
      };
      if (over.length && !req.force) {
        throw new FailedPreconditionError(
          `${methodLabel} of ${name}@${rec.version} refused by the accuracy gate on ${gate.rows} ${gate.source} rows: ${over.join('; ')} ` +
            `(max abs diff ${gate.maxAbsDiff.toPrecision(3)}, mean ${gate.meanAbsDiff.toPrecision(3)}, agreement ${pct(gate.agreement)}); nothing stored (--force stores it anyway)`,
        );
      }
      const response: OptimizeModelResponse = {
        version: undefined,
        method: methodLabel,
        originalBytes: bytes.byteLength,
        candidateBytes: r.bytes.byteLength,
        originalGzipBytes: r.originalGzip,
        candidateGzipBytes: r.candidateGzip,
        gate,
        originalBench: benchPoints(r.originalBench),
        candidateBench: benchPoints(r.candidateBench),
        notes: r.notes,
      };
      if (req.dryRun) return response;
      const lineage: Lineage = { operation: 'optimize', method: methodLabel, derivedFrom: [{ name, version: rec.version }], gate };
      response.version = await storeMade(ctx, name, r.bytes, {
        description: req.description || `${methodLabel} of version ${rec.version}`,
        tags: { ...rec.tags, ...tags },
        lineage,
        like: rec,
        referenceFrom: rec,
        reason: `${methodLabel} of version ${rec.version}: agreement ${pct(gate.agreement)} on ${gate.rows} rows, max abs diff ${gate.maxAbsDiff.toPrecision(3)}${gate.forced ? ' (forced past the gate)' : ''}`,
      });
      return response;
    }),

    composeModel: unary<ComposeModelRequest, VersionRecord>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      if (req.mode !== 'pipeline' && req.mode !== 'ensemble') throw new InvalidArgumentError('mode', 'must be pipeline or ensemble');
      if (req.parts.length < 2 || req.parts.length > 16) throw new InvalidArgumentError('parts', 'must name 2 to 16 versions');
      const tags = checkTags(req.tags, 'tags');
      let combine: ComposeCombine = { kind: 'mean' };
      const kind = req.combine || 'mean';
      if (req.mode === 'ensemble') {
        if (kind === 'weighted') {
          if (req.weights.length !== req.parts.length || !req.weights.every((w) => Number.isFinite(w) && w >= 0) || req.weights.every((w) => w === 0)) {
            throw new InvalidArgumentError('weights', `one finite weight ≥ 0 per part (${req.parts.length}), not all 0`);
          }
          combine = { kind: 'weighted', weights: [...req.weights] };
        } else if (kind === 'vote') combine = { kind: 'vote', threshold: req.threshold || 0.5 };
        else if (kind === 'mean' || kind === 'max') combine = { kind };
        else throw new InvalidArgumentError('combine', 'must be mean, weighted, max or vote');
      }
      const maps: (Record<string, string> | undefined)[] = [];
      for (const m of req.maps) {
        const x = /^(\d+):([^=]+)=(.+)$/.exec(m);
        const step = x ? Number(x[1]) - 1 : -1;
        if (!x || step < 1 || step >= req.parts.length) throw new InvalidArgumentError('maps', `"${m.slice(0, 80)}" is not step:input=output with step 2..${req.parts.length}`);
        (maps[step] ??= {})[x[2]!] = x[3]!;
      }
      const records: VersionRecord[] = [];
      for (const [i, p] of req.parts.entries()) {
        const pn = checkName(p.name, `parts[${i}].name`);
        let v = p.version;
        if (!v) {
          const t = (await store.getTraffic(pn))?.rec;
          v = t?.aliases.production ?? Math.max(0, ...(await store.versionNumbers(pn)));
          if (!v) throw new NotFoundError(`model ${pn} not found`);
        }
        const rec = await versionOf(store, pn, v);
        if (rec.archived) throw new FailedPreconditionError(`part ${pn}@${v} is archived; restore it first`);
        records.push(rec);
      }
      const parts = await Promise.all(records.map(async (r) => ({ label: `${r.name}@${r.version}`, bytes: await store.getArtifact(r.sha256) })));
      ctx.signal.throwIfAborted();
      const bytes = await c.workshop.compose({ mode: req.mode, parts, combine, maps });
      const method = req.mode === 'pipeline' ? 'pipeline' : `ensemble:${kind}${kind === 'weighted' ? `=${req.weights.join(',')}` : ''}`;
      const labels = records.map((r) => `${r.name}@${r.version}`).join(req.mode === 'pipeline' ? ' → ' : ', ');
      return storeMade(ctx, name, bytes, {
        description: req.description || `${method} of ${labels}`,
        tags,
        lineage: { operation: 'compose', method, derivedFrom: records.map((r) => ({ name: r.name, version: r.version })), gate: undefined },
        like: { ...records[0]!, cacheEntries: 0, replicas: 0 },
        referenceFrom: records[0]!,
        reason: `${method} of ${labels}`,
      });
    }),

    setTags: unary<SetTagsRequest, VersionRecord>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      checkTags(req.set, 'set');
      for (const k of req.remove) if (!TAG_KEY_RE.test(k)) throw new InvalidArgumentError('remove', `key "${k.slice(0, 64)}" must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}`);
      const reason = c.reasonOf(req.reason, '');
      await versionOf(store, name, req.version);
      let changed: string[] = [];
      const rec = await store.updateVersion(name, req.version, (r) => {
        const next = { ...r.tags, ...req.set };
        for (const k of req.remove) delete next[k];
        checkTags(next, 'set');
        changed = [...Object.entries(req.set).filter(([k, v]) => r.tags[k] !== v).map(([k, v]) => `${k}=${v}`), ...req.remove.filter((k) => k in r.tags).map((k) => `-${k}`)];
        if (changed.length === 0) return false;
        r.tags = next;
      });
      if (changed.length) await events.publish({ name, version: req.version, kind: ModelEvent_Kind.TAGGED, reason: reason || changed.join(' '), ...c.by(ctx) });
      return rec;
    }),

    archiveVersion: unary<ArchiveVersionRequest, VersionRecord>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      const reason = c.reasonOf(req.reason, req.restore ? 'restored' : 'archived');
      await versionOf(store, name, req.version);
      if (!req.restore) {
        const why = await dependents(store, name, req.version, false);
        if (why.length) throw new FailedPreconditionError(`model ${name} version ${req.version} cannot be archived: ${why.join(', ')} point(s) at it`);
      }
      let changed = false;
      const rec = await store.updateVersion(name, req.version, (r) => {
        if (r.archived === !req.restore) return false;
        changed = true;
        r.archived = !req.restore;
        r.archivedAtMs = req.restore ? 0 : Date.now();
      });
      if (changed) await events.publish({ name, version: req.version, kind: req.restore ? ModelEvent_Kind.RESTORED : ModelEvent_Kind.ARCHIVED, reason, ...c.by(ctx) });
      return rec;
    }),

    deleteVersion: unary<DeleteVersionRequest, DeleteVersionResponse>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      const reason = c.reasonOf(req.reason, 'deleted');
      const rec = await versionOf(store, name, req.version);
      const why = await dependents(store, name, req.version, true);
      if (why.length) throw new FailedPreconditionError(`model ${name} version ${req.version} cannot be deleted: ${why.join(', ')} depend(s) on it`);
      await store.deleteVersion(rec);
      await events.publish({ name, version: req.version, kind: ModelEvent_Kind.DELETED, reason, ...c.by(ctx) });
      return { deleted: rec };
    }),

    applyRetention: unary<ApplyRetentionRequest, ApplyRetentionResponse>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      if (req.delete) c.field(ctx, 'ApplyRetention', 'delete');
      if (req.keepLast < 1) throw new InvalidArgumentError('keep_last', 'must be at least 1');
      const reason = c.reasonOf(req.reason, `retention: keep the newest ${req.keepLast} unaliased versions`);
      const model = await store.getModel(name);
      const out: ApplyRetentionResponse = { archived: [], deleted: [], kept: [] };
      const keep = (version: number, why: string) => out.kept.push({ version, why } satisfies RetainedVersion);
      let counted = 0;
      for (const v of [...model.versions].sort((a, b) => b.version - a.version)) {
        const pinned = await dependents(store, name, v.version, false);
        if (pinned.length) {
          keep(v.version, pinned.join(', '));
          continue;
        }
        // Archive mode counts and acts on live versions only; delete mode on all.
        if (!req.delete && v.archived) continue;
        if (counted < req.keepLast) {
          counted++;
          keep(v.version, `newest ${req.keepLast}`);
          continue;
        }
        if (req.delete) {
          const derived = (await dependents(store, name, v.version, true)).filter((w) => w.startsWith('derived'));
          if (derived.length) {
            keep(v.version, derived.join(', '));
            continue;
          }
          if (!req.dryRun) {
            await store.deleteVersion(v);
            await events.publish({ name, version: v.version, kind: ModelEvent_Kind.DELETED, reason, ...c.by(ctx) });
          }
          out.deleted.push(v.version);
        } else {
          if (!req.dryRun) {
            await store.updateVersion(name, v.version, (r) => {
              if (r.archived) return false;
              r.archived = true;
              r.archivedAtMs = Date.now();
            });
            await events.publish({ name, version: v.version, kind: ModelEvent_Kind.ARCHIVED, reason, ...c.by(ctx) });
          }
          out.archived.push(v.version);
        }
      }
      return out;
    }),

    collectGarbage: unary<CollectGarbageRequest, CollectGarbageResponse>(async (req, ctx) => {
      const minAgeS = req.minAgeSet ? req.minAgeS : GC_MIN_AGE_S;
      const referenced = new Set<string>();
      for (const m of await store.modelNames()) {
        for (const v of (await store.getModel(m).catch(() => null))?.versions ?? []) {
          referenced.add(v.sha256);
          const ref = await store.getReference(m, v.version);
          if (ref?.sampleSha256) referenced.add(ref.sampleSha256);
        }
      }
      const before = await store.artifactBytes();
      const objects = await store.listArtifacts();
      const now = Date.now();
      const gone = objects.filter((o) => !referenced.has(o.name) && now - o.mtimeMs >= minAgeS * 1000);
      // Which deleted versions each removed file belonged to, for their models' history.
      const owners = new Map<string, VersionRecord[]>();
      if (gone.length) for (const d of await store.deletedRecords()) owners.set(d.sha256, [...(owners.get(d.sha256) ?? []), d]);
      let freed = 0;
      if (!req.dryRun) {
        for (const o of gone) {
          await store.deleteArtifact(o.name);
          freed += o.size;
          for (const d of owners.get(o.name) ?? []) {
            await events.publish({ name: d.name, version: d.version, kind: ModelEvent_Kind.ARTIFACT_FREED, reason: `artifact ${o.name.slice(0, 12)} removed (${o.size} bytes)`, ...c.by(ctx) });
          }
        }
      } else freed = gone.reduce((a, o) => a + o.size, 0);
      return {
        objectsScanned: objects.length,
        objectsRemoved: gone.length,
        bytesFreed: freed,
        storeBytesBefore: before,
        storeBytesAfter: req.dryRun ? before : await store.artifactBytes(),
        removed: gone.map((o) => o.name),
      };
    }),
  };
}
