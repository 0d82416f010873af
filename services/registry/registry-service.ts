import { checkName, withDeadline, type EventPublisher } from '../../libs/bus/index.js';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, ResourceExhaustedError } from '../../libs/errors/index.js';
import { AccessPolicy, clientStream as grpcClientStream, unary as grpcUnary, type CallContext } from '../../libs/grpc/index.js';
import {
  ModelEvent_Kind,
  type ListModelsRequest,
  type GetModelRequest,
  type ModelInfo,
  type PushModelRequest,
  type PushModelResponse,
  type RegistryServer,
  type SetAliasRequest,
  type ListModelsResponse,
  type PushHeader,
  type RollbackRequest,
  type SetCanaryRequest,
  type SetShadowRequest,
  type GetHistoryRequest,
  type GetHistoryResponse,
  type GetReferenceRequest,
  type ReferenceProfile,
  type SetProbeRequest,
  type SetModelServingRequest,
  type ProbeRecord,
  oip,
  RegistryService,
} from '../../libs/proto/index.js';
import type { NatsConnection } from 'nats';
import { readHistory } from './history.js';
import type { ModelStore } from './model-store.js';
import type { ReplicaView } from './replica-view.js';
import { validateModel, type ReferenceData, type ValidateOptions } from './validate.js';
import { MAX_REFERENCE_BYTES, referenceFormat } from './reference-parse.js';
import { checkTags, curationHandlers } from './curation.js';
import { Workshop } from './workshop.js';

export interface RegistryOptions extends ValidateOptions {
  maxModelBytes: number;
  /** Cap on a push's reference data (default 64 MiB); more is RESOURCE_EXHAUSTED. */
  maxReferenceBytes?: number;
  /** Who the registry says made a change when the call carries no token (open management plane). */
  actor: string;
  /**
   * Who may write, by the role table (libs/grpc/management-roles.ts): PushModel
   * and SetProbe need `push`; SetAlias, Rollback, SetCanary, SetShadow and a
   * push that sets an alias, and SetModelServing need `promote` (admin has all). The token's subject
   * is recorded as the actor. Default: open.
   */
  access?: AccessPolicy;
  /** Time limit of one optimization or composition (its child process is killed after); default 5 min. */
  workTimeoutMs?: number;
}

export const DEFAULT_ALIAS = 'production';

// Storage calls retry JetStream's leader elections until the caller's deadline (libs/bus retry.ts).
const unary = <Req, Res>(fn: (req: Req, ctx: CallContext) => Promise<Res>) => grpcUnary<Req, Res>((req, ctx) => withDeadline(ctx.deadline, () => fn(req, ctx)));
const clientStream = <Req, Res>(fn: (stream: AsyncIterable<Req>, ctx: CallContext) => Promise<Res>) =>
  grpcClientStream<Req, Res>((stream, ctx) => withDeadline(ctx.deadline, () => fn(stream, ctx)));

const HEADER_RE = /^[a-z0-9][a-z0-9_.-]{0,127}$/;
/** Longest reason a change is recorded with. */
const MAX_REASON_CHARS = 500;

export interface RegistryDeps {
  store: ModelStore;
  events: EventPublisher;
  replicas: ReplicaView;
  nc: NatsConnection;
}

/** The Registry gRPC service: push, list, show, alias moves, rollback, canary, shadow, history. */
export function registryHandlers({ store, events, replicas, nc }: RegistryDeps, o: RegistryOptions): RegistryServer {
  const access = o.access ?? AccessPolicy.open();
  /** Fields whose role the table lists apart from their RPC's (checked before anything is stored). */
  const field = (ctx: CallContext, rpc: string, name: string): void => access.checkField('Registry', rpc, name, ctx.metadata);
  /** The reason a change is recorded with: the caller's, else what changed. */
  const reasonOf = (given: string, otherwise: string): string => {
    if (given.length > MAX_REASON_CHARS) throw new InvalidArgumentError('reason', `at most ${MAX_REASON_CHARS} characters`);
    return given || otherwise;
  };
  /** Who made the change: the token's subject, else the registry's own name. */
  const actorOf = (ctx: CallContext): string => ctx.subject ?? o.actor;
  /** The event field naming a token's subject (events otherwise carry the publisher's name). */
  const by = (ctx: CallContext): { actor?: string } => (ctx.subject !== undefined ? { actor: ctx.subject } : {});
  /** NOT_FOUND for an unknown version; FAILED_PRECONDITION for one that failed on a replica. */
  const servable = async (name: string, version: number): Promise<void> => {
    await servableVersion(name, version);
    const failed = replicas.failure(name, version);
    if (failed) throw new FailedPreconditionError(`model ${name} version ${version} failed to load: ${failed}`);
  };
  const servableVersion = async (name: string, version: number): Promise<void> => {
    const rec = await store.getVersion(name, version);
    if (!rec) {
      const known = await store.versionNumbers(name);
      throw new NotFoundError(known.length ? `model ${name} has no version ${version}` : `model ${name} not found`);
    }
    if (rec.archived) throw new FailedPreconditionError(`model ${name} version ${version} is archived; restore it first (models archive --restore)`);
  };
  // Every change's event is stored before the call answers, so `models history` right after shows it
  // (publish never throws: with NATS down the event waits in the publisher's outbox, in order).
  const setAlias = async (ctx: CallContext, name: string, alias: string, version: number, reason: string, expected?: number): Promise<ModelInfo> => {
    await servable(name, version);
    // A move of `production` (promote, RepositoryModelLoad) also ends an unload (SetModelServing).
    const { previous, resumed } = await store.setAlias(name, alias, version, actorOf(ctx), expected, alias === DEFAULT_ALIAS);
    const why = reason || (previous ? `was version ${previous}` : 'new alias');
    if (previous !== version) await events.publish({ name, version, kind: ModelEvent_Kind.PROMOTED, alias, reason: why, ...by(ctx) });
    if (resumed) await events.publish({ name, version: 0, kind: ModelEvent_Kind.SERVING_RESUMED, reason: reason || `alias ${alias} set to version ${version}`, ...by(ctx) });
    return store.getModel(name);
  };

  const curation = curationHandlers({
    store,
    events,
    workshop: new Workshop(o.workTimeoutMs ?? 300_000),
    validate: o,
    unary,
    field,
    reasonOf,
    actorOf,
    by,
    maxDataBytes: o.maxReferenceBytes ?? MAX_REFERENCE_BYTES,
  });

  // Every RPC's role comes from the one table (libs/grpc/management-roles.ts).
  return access.guardService('Registry', RegistryService, {
    ...curation,
    pushModel: clientStream<PushModelRequest, PushModelResponse>(async (stream, ctx) => {
      let header: PushHeader | undefined;
      const chunks: Uint8Array[] = [];
      let size = 0;
      const refChunks: Uint8Array[] = [];
      let refSize = 0;
      const maxRefBytes = o.maxReferenceBytes ?? MAX_REFERENCE_BYTES;
      for await (const msg of stream) {
        const part = msg.part;
        if (!header) {
          if (part?.$case !== 'header') throw new InvalidArgumentError('header', 'the first message must be a header');
          header = part.value;
          checkName(header.name, 'header.name');
          checkModelSettings(header);
          if (header.alias) {
            field(ctx, 'PushModel', 'header.alias');
            checkName(header.alias, 'header.alias');
          }
          if (header.referenceFormat) referenceFormat(header.referenceFormat);
          checkTags(header.tags, 'header.tags');
          continue;
        }
        if (part?.$case === 'reference') {
          refSize += part.value.byteLength;
          if (refSize > maxRefBytes) throw new ResourceExhaustedError(`reference data larger than ${maxRefBytes} bytes`);
          refChunks.push(part.value);
          continue;
        }
        if (part?.$case !== 'chunk') throw new InvalidArgumentError('chunk', 'only the first message may be a header');
        if (refChunks.length) throw new InvalidArgumentError('chunk', 'model chunks must come before the reference data');
        size += part.value.byteLength;
        if (size > o.maxModelBytes) throw new ResourceExhaustedError(`model larger than ${o.maxModelBytes} bytes`);
        chunks.push(part.value);
      }
      if (!header) throw new InvalidArgumentError('header', 'missing');
      if (size === 0) throw new InvalidArgumentError('chunk', 'no model bytes');
      ctx.signal.throwIfAborted();
      const bytes = Buffer.concat(chunks, size);
      if (header.referenceFormat && refSize === 0) throw new InvalidArgumentError('reference', 'header.reference_format is set but no reference data was sent');
      const reference: ReferenceData | undefined = refSize ? { data: Buffer.concat(refChunks, refSize), format: referenceFormat(header.referenceFormat) } : undefined;
      const sig = await validateModel(bytes, o, reference);
      const sha256 = await store.putArtifact(bytes);
      const batching = header.batching ?? { maxBatchSize: 0, maxQueueDelayMicros: 0 };
      const version = await store.addVersion({
        name: header.name,
        sha256,
        sizeBytes: size,
        inputs: sig.inputs,
        outputs: sig.outputs,
        batching: sig.batchable ? batching : { maxBatchSize: 1, maxQueueDelayMicros: 0 },
        description: header.description,
        createdAtMs: Date.now(),
        createdBy: actorOf(ctx),
        batchable: sig.batchable,
        cacheEntries: header.cacheEntries,
        replicas: header.replicas,
        tags: header.tags,
        lineage: undefined,
        archived: false,
        archivedAtMs: 0,
        segmentBy: header.segmentBy,
        cost: header.cost,
      });
      if (sig.reference) {
        const { sample, ...profile } = sig.reference;
        // A sample of the rows is kept for `infermesh optimize`'s accuracy gate, as an artifact like the model.
        const kept = sample ? { sampleSha256: await store.putArtifact(new Uint8Array(sample.values.buffer, sample.values.byteOffset, sample.values.byteLength)), sampleRows: sample.rows, sampleWidth: sample.width } : {};
        await store.putReference({ name: version.name, version: version.version, createdAtMs: Date.now(), sampleSha256: '', sampleRows: 0, sampleWidth: 0, ...profile, ...kept });
      }
      await events.publish({ name: version.name, version: version.version, kind: ModelEvent_Kind.REGISTERED, ...by(ctx) });
      if (header.alias) await setAlias(ctx, version.name, header.alias, version.version, `pushed as version ${version.version}`);
      return { version };
    }),

    listModels: unary<ListModelsRequest, ListModelsResponse>(async () => {
      const names = await store.modelNames();
      return { models: await Promise.all(names.map((n) => store.getModel(n))) };
    }),

    getModel: unary<GetModelRequest, ModelInfo>(async (req) => store.getModel(checkName(req.name, 'name'))),

    setAlias: unary<SetAliasRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      const alias = checkName(req.alias || DEFAULT_ALIAS, 'alias');
      if (!req.version) throw new InvalidArgumentError('version', 'must be a version number ≥ 1');
      return setAlias(ctx, name, alias, req.version, reasonOf(req.reason, ''), req.expectedVersion || undefined);
    }),

    rollback: unary<RollbackRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      const alias = checkName(req.alias || DEFAULT_ALIAS, 'alias');
      const given = reasonOf(req.reason, '');
      let to = 0;
      let from = 0;
      await store.getModel(name);
      await store.updateTraffic(name, actorOf(ctx), (rec) => {
        const h = rec.history[alias]?.versions ?? [];
        if (h.length === 0) throw new FailedPreconditionError(`alias ${alias} of ${name} has no previous version`);
        to = h[h.length - 1]!;
        from = rec.aliases[alias] ?? 0;
        rec.history[alias] = { versions: h.slice(0, -1) };
        rec.aliases[alias] = to;
      });
      await events.publish({ name, version: to, kind: ModelEvent_Kind.ROLLED_BACK, alias, reason: given || `back from version ${from}`, ...by(ctx) });
      return store.getModel(name);
    }),

    setCanary: unary<SetCanaryRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      if (req.clear) {
        field(ctx, 'SetCanary', 'clear');
        const reason = reasonOf(req.reason, 'canary cleared');
        await store.getModel(name);
        let was = 0;
        await store.updateTraffic(name, actorOf(ctx), (rec) => {
          was = rec.canary?.version ?? 0;
          rec.canary = undefined;
        });
        // Clearing no canary changes nothing, so it records nothing.
        if (was) await events.publish({ name, version: was, kind: ModelEvent_Kind.ROLLED_BACK, alias: 'canary', reason, ...by(ctx) });
        return store.getModel(name);
      }
      const reason = reasonOf(req.reason, `${req.weightPercent}%`);
      if (!(req.weightPercent > 0 && req.weightPercent <= 100)) throw new InvalidArgumentError('weight_percent', 'must be in (0, 100]');
      if (req.keyHeader && !HEADER_RE.test(req.keyHeader)) throw new InvalidArgumentError('key_header', 'must be a lower-case gRPC metadata key');
      await servable(name, req.version);
      await store.updateTraffic(name, actorOf(ctx), (rec) => {
        rec.canary = { version: req.version, weightPercent: req.weightPercent, keyHeader: req.keyHeader };
      });
      await events.publish({ name, version: req.version, kind: ModelEvent_Kind.CANARIED, reason, ...by(ctx) });
      return store.getModel(name);
    }),

    setShadow: unary<SetShadowRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      if (req.clear) {
        field(ctx, 'SetShadow', 'clear');
        const reason = reasonOf(req.reason, 'shadow cleared');
        await store.getModel(name);
        let was = 0;
        await store.updateTraffic(name, actorOf(ctx), (rec) => {
          was = rec.shadow?.version ?? 0;
          rec.shadow = undefined;
        });
        if (was) await events.publish({ name, version: was, kind: ModelEvent_Kind.ROLLED_BACK, alias: 'shadow', reason, ...by(ctx) });
        return store.getModel(name);
      }
      if (!(req.percent > 0 && req.percent <= 100)) throw new InvalidArgumentError('percent', 'must be in (0, 100]');
      const reason = reasonOf(req.reason, `${req.percent}%`);
      await servable(name, req.version);
      await store.updateTraffic(name, actorOf(ctx), (rec) => {
        rec.shadow = { version: req.version, percent: req.percent };
      });
      await events.publish({ name, version: req.version, kind: ModelEvent_Kind.SHADOWED, reason, ...by(ctx) });
      return store.getModel(name);
    }),

    // Triton's RepositoryModelUnload (through the router) and its reverse: one flag on the traffic record
    // that routers read (TrafficRecord.unloaded); replicas keep the versions loaded.
    setModelServing: unary<SetModelServingRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      const reason = reasonOf(req.reason, req.serving ? 'serving again' : 'unloaded');
      await store.getModel(name);
      let changed = false;
      await store.updateTraffic(name, actorOf(ctx), (rec) => {
        changed = rec.unloaded === req.serving;
        if (!changed) return false;
        rec.unloaded = !req.serving;
      });
      // Nothing changed (already so): nothing recorded.
      if (changed) await events.publish({ name, version: 0, kind: req.serving ? ModelEvent_Kind.SERVING_RESUMED : ModelEvent_Kind.SERVING_STOPPED, reason, ...by(ctx) });
      return store.getModel(name);
    }),

    getHistory: unary<GetHistoryRequest, GetHistoryResponse>(async (req) => ({ events: await readHistory(nc, checkName(req.name, 'name')) })),

    getReference: unary<GetReferenceRequest, ReferenceProfile>(async (req) => {
      const name = checkName(req.name, 'name');
      if (!req.version) throw new InvalidArgumentError('version', 'must be a version number ≥ 1');
      const ref = await store.getReference(name, req.version);
      if (!ref) {
        await servableVersion(name, req.version);
        throw new NotFoundError(`model ${name} version ${req.version} has no reference profile`);
      }
      return ref;
    }),

    setProbe: unary<SetProbeRequest, ProbeRecord>(async (req, ctx) => {
      const p = req.probe;
      if (!p) throw new InvalidArgumentError('probe', 'missing');
      const name = checkName(p.name, 'probe.name');
      if (req.clear) {
        field(ctx, 'SetProbe', 'clear');
        const reason = reasonOf(req.reason, 'probe removed');
        await store.getModel(name);
        await store.setProbe(name, null);
        await events.publish({ name, version: 0, kind: ModelEvent_Kind.PROBE_CLEARED, reason, ...by(ctx) });
        return p;
      }
      const reason = reasonOf(req.reason, 'probe stored');
      await store.getModel(name);
      const probe = checkProbe(p, name, actorOf(ctx));
      await store.setProbe(name, probe);
      await events.publish({ name, version: 0, kind: ModelEvent_Kind.PROBE_SET, reason, ...by(ctx) });
      return probe;
    }),
  });
}

/** Checks a golden probe: an OIP request for this model, finite expected values, a sane interval. */
function checkProbe(p: ProbeRecord, name: string, actor: string): ProbeRecord {
  let req: oip.ModelInferRequest;
  try {
    req = oip.ModelInferRequest.decode(p.request);
  } catch {
    throw new InvalidArgumentError('probe.request', 'is not a protobuf ModelInferRequest');
  }
  if (req.inputs.length === 0) throw new InvalidArgumentError('probe.request', 'has no inputs');
  if (req.modelName !== '' && req.modelName !== name) throw new InvalidArgumentError('probe.request.model_name', `must be ${name}`);
  if (p.expected.length === 0) throw new InvalidArgumentError('probe.expected', 'must list the expected output values');
  if (p.expected.length > 4096) throw new InvalidArgumentError('probe.expected', 'at most 4096 values');
  if (!p.expected.every(Number.isFinite)) throw new InvalidArgumentError('probe.expected', 'values must be finite');
  if (!(p.tolerance >= 0 && Number.isFinite(p.tolerance))) throw new InvalidArgumentError('probe.tolerance', 'must be a finite number ≥ 0');
  if (p.intervalMs < 1000) throw new InvalidArgumentError('probe.interval_ms', 'must be at least 1000');
  req.modelName = name;
  return {
    ...p,
    request: oip.ModelInferRequest.encode(req).finish(),
    updatedAtMs: Date.now(),
    updatedBy: actor,
  };
}

/** What a segment parameter may be called (an OIP request parameter key). */
const SEGMENT_BY_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** Checks the header's segment parameter and cost model (README "Segments", "Cost model"); INVALID_ARGUMENT naming the field. */
function checkModelSettings(header: PushHeader): void {
  if (header.segmentBy !== '' && !SEGMENT_BY_RE.test(header.segmentBy)) throw new InvalidArgumentError('header.segment_by', 'must be 1-64 characters of [A-Za-z0-9_.-]');
  const cost = header.cost;
  if (!cost) return;
  for (const [field, v] of [['cost_fp', cost.costFp], ['cost_fn', cost.costFn], ['value_tp', cost.valueTp]] as const) {
    if (!(Number.isFinite(v) && v >= 0)) throw new InvalidArgumentError(`header.cost.${field}`, 'must be a finite number ≥ 0');
  }
}
