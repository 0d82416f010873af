import { checkName, type EventPublisher } from '../../libs/bus/index.js';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, ResourceExhaustedError } from '../../libs/errors/index.js';
import { AccessPolicy, clientStream, unary, type CallContext } from '../../libs/grpc/index.js';
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
  type ProbeRecord,
  oip,
} from '../../libs/proto/index.js';
import type { NatsConnection } from 'nats';
import { readHistory } from './history.js';
import type { ModelStore } from './model-store.js';
import type { ReplicaView } from './replica-view.js';
import { validateModel, type ReferenceData, type ValidateOptions } from './validate.js';
import { MAX_REFERENCE_BYTES, referenceFormat } from './reference-parse.js';

export interface RegistryOptions extends ValidateOptions {
  maxModelBytes: number;
  /** Cap on a push's reference data (default 64 MiB); more is RESOURCE_EXHAUSTED. */
  maxReferenceBytes?: number;
  /** Who the registry says made a change when the call carries no token (open management plane). */
  actor: string;
  /**
   * Who may write: PushModel and SetProbe need the `push` role; SetAlias,
   * Rollback, SetCanary and SetShadow need `promote` (admin has all). The
   * token's subject is recorded as the actor. Default: open.
   */
  access?: AccessPolicy;
}

export const DEFAULT_ALIAS = 'production';

const HEADER_RE = /^[a-z0-9][a-z0-9_.-]{0,127}$/;

export interface RegistryDeps {
  store: ModelStore;
  events: EventPublisher;
  replicas: ReplicaView;
  nc: NatsConnection;
}

/** The Registry gRPC service: push, list, show, alias moves, rollback, canary, shadow, history. */
export function registryHandlers({ store, events, replicas, nc }: RegistryDeps, o: RegistryOptions): RegistryServer {
  const access = o.access ?? AccessPolicy.open();
  const pushGuard = access.guard('push');
  const promoteGuard = access.guard('promote');
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
    if (!(await store.getVersion(name, version))) {
      const known = await store.versionNumbers(name);
      throw new NotFoundError(known.length ? `model ${name} has no version ${version}` : `model ${name} not found`);
    }
  };
  const setAlias = async (ctx: CallContext, name: string, alias: string, version: number, expected?: number): Promise<ModelInfo> => {
    await servable(name, version);
    const { previous } = await store.setAlias(name, alias, version, actorOf(ctx), expected);
    if (previous !== version) void events.publish({ name, version, kind: ModelEvent_Kind.PROMOTED, alias, ...by(ctx) });
    return store.getModel(name);
  };

  return {
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
          if (header.alias) checkName(header.alias, 'header.alias');
          if (header.referenceFormat) referenceFormat(header.referenceFormat);
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
      });
      if (sig.reference) await store.putReference({ name: version.name, version: version.version, createdAtMs: Date.now(), ...sig.reference });
      await events.publish({ name: version.name, version: version.version, kind: ModelEvent_Kind.REGISTERED, ...by(ctx) });
      if (header.alias) await setAlias(ctx, version.name, header.alias, version.version);
      return { version };
    }, pushGuard),

    listModels: unary<ListModelsRequest, ListModelsResponse>(async () => {
      const names = await store.modelNames();
      return { models: await Promise.all(names.map((n) => store.getModel(n))) };
    }),

    getModel: unary<GetModelRequest, ModelInfo>(async (req) => store.getModel(checkName(req.name, 'name'))),

    setAlias: unary<SetAliasRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      const alias = checkName(req.alias || DEFAULT_ALIAS, 'alias');
      if (!req.version) throw new InvalidArgumentError('version', 'must be a version number ≥ 1');
      return setAlias(ctx, name, alias, req.version, req.expectedVersion || undefined);
    }, promoteGuard),

    rollback: unary<RollbackRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      const alias = checkName(req.alias || DEFAULT_ALIAS, 'alias');
      let to = 0;
      await store.getModel(name);
      await store.updateTraffic(name, actorOf(ctx), (rec) => {
        const h = rec.history[alias]?.versions ?? [];
        if (h.length === 0) throw new FailedPreconditionError(`alias ${alias} of ${name} has no previous version`);
        to = h[h.length - 1]!;
        rec.history[alias] = { versions: h.slice(0, -1) };
        rec.aliases[alias] = to;
      });
      void events.publish({ name, version: to, kind: ModelEvent_Kind.ROLLED_BACK, alias, ...by(ctx) });
      return store.getModel(name);
    }, promoteGuard),

    setCanary: unary<SetCanaryRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      if (req.clear) {
        if (req.reason.length > 500) throw new InvalidArgumentError('reason', 'at most 500 characters');
        await store.getModel(name);
        let was = 0;
        await store.updateTraffic(name, actorOf(ctx), (rec) => {
          was = rec.canary?.version ?? 0;
          rec.canary = undefined;
        });
        if (was && req.reason) void events.publish({ name, version: was, kind: ModelEvent_Kind.ROLLED_BACK, alias: 'canary', reason: req.reason, ...by(ctx) });
        return store.getModel(name);
      }
      if (!(req.weightPercent > 0 && req.weightPercent <= 100)) throw new InvalidArgumentError('weight_percent', 'must be in (0, 100]');
      if (req.keyHeader && !HEADER_RE.test(req.keyHeader)) throw new InvalidArgumentError('key_header', 'must be a lower-case gRPC metadata key');
      await servable(name, req.version);
      await store.updateTraffic(name, actorOf(ctx), (rec) => {
        rec.canary = { version: req.version, weightPercent: req.weightPercent, keyHeader: req.keyHeader };
      });
      void events.publish({ name, version: req.version, kind: ModelEvent_Kind.CANARIED, reason: `${req.weightPercent}%`, ...by(ctx) });
      return store.getModel(name);
    }, promoteGuard),

    setShadow: unary<SetShadowRequest, ModelInfo>(async (req, ctx) => {
      const name = checkName(req.name, 'name');
      if (req.clear) {
        await store.getModel(name);
        await store.updateTraffic(name, actorOf(ctx), (rec) => void (rec.shadow = undefined));
        return store.getModel(name);
      }
      if (!(req.percent > 0 && req.percent <= 100)) throw new InvalidArgumentError('percent', 'must be in (0, 100]');
      await servable(name, req.version);
      await store.updateTraffic(name, actorOf(ctx), (rec) => {
        rec.shadow = { version: req.version, percent: req.percent };
      });
      void events.publish({ name, version: req.version, kind: ModelEvent_Kind.SHADOWED, reason: `${req.percent}%`, ...by(ctx) });
      return store.getModel(name);
    }, promoteGuard),

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
      await store.getModel(name);
      if (req.clear) {
        await store.setProbe(name, null);
        return p;
      }
      const probe = checkProbe(p, name, actorOf(ctx));
      await store.setProbe(name, probe);
      return probe;
    }, pushGuard),
  };
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
