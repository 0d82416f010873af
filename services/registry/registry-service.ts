import { checkName, type EventPublisher } from '../../libs/bus/index.js';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, ResourceExhaustedError } from '../../libs/errors/index.js';
import { clientStream, unary } from '../../libs/grpc/index.js';
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
import { validateModel, type ValidateOptions } from './validate.js';

export interface RegistryOptions extends ValidateOptions {
  maxModelBytes: number;
  /** Who the registry says made a change (until tokens with subjects exist). */
  actor: string;
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
  const setAlias = async (name: string, alias: string, version: number, expected?: number): Promise<ModelInfo> => {
    await servable(name, version);
    const { previous } = await store.setAlias(name, alias, version, o.actor, expected);
    if (previous !== version) void events.publish({ name, version, kind: ModelEvent_Kind.PROMOTED, alias });
    return store.getModel(name);
  };

  return {
    pushModel: clientStream<PushModelRequest, PushModelResponse>(async (stream, ctx) => {
      let header: PushHeader | undefined;
      const chunks: Uint8Array[] = [];
      let size = 0;
      for await (const msg of stream) {
        const part = msg.part;
        if (!header) {
          if (part?.$case !== 'header') throw new InvalidArgumentError('header', 'the first message must be a header');
          header = part.value;
          checkName(header.name, 'header.name');
          if (header.alias) checkName(header.alias, 'header.alias');
          continue;
        }
        if (part?.$case !== 'chunk') throw new InvalidArgumentError('chunk', 'only the first message may be a header');
        size += part.value.byteLength;
        if (size > o.maxModelBytes) throw new ResourceExhaustedError(`model larger than ${o.maxModelBytes} bytes`);
        chunks.push(part.value);
      }
      if (!header) throw new InvalidArgumentError('header', 'missing');
      if (size === 0) throw new InvalidArgumentError('chunk', 'no model bytes');
      ctx.signal.throwIfAborted();
      const bytes = Buffer.concat(chunks, size);
      const sig = await validateModel(bytes, o);
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
        createdBy: o.actor,
        batchable: sig.batchable,
        cacheEntries: header.cacheEntries,
        replicas: header.replicas,
      });
      await events.publish({ name: version.name, version: version.version, kind: ModelEvent_Kind.REGISTERED });
      if (header.alias) await setAlias(version.name, header.alias, version.version);
      return { version };
    }),

    listModels: unary<ListModelsRequest, ListModelsResponse>(async () => {
      const names = await store.modelNames();
      return { models: await Promise.all(names.map((n) => store.getModel(n))) };
    }),

    getModel: unary<GetModelRequest, ModelInfo>(async (req) => store.getModel(checkName(req.name, 'name'))),

    setAlias: unary<SetAliasRequest, ModelInfo>(async (req) => {
      const name = checkName(req.name, 'name');
      const alias = checkName(req.alias || DEFAULT_ALIAS, 'alias');
      if (!req.version) throw new InvalidArgumentError('version', 'must be a version number ≥ 1');
      return setAlias(name, alias, req.version, req.expectedVersion || undefined);
    }),

    rollback: unary<RollbackRequest, ModelInfo>(async (req) => {
      const name = checkName(req.name, 'name');
      const alias = checkName(req.alias || DEFAULT_ALIAS, 'alias');
      let to = 0;
      await store.getModel(name);
      await store.updateTraffic(name, o.actor, (rec) => {
        const h = rec.history[alias]?.versions ?? [];
        if (h.length === 0) throw new FailedPreconditionError(`alias ${alias} of ${name} has no previous version`);
        to = h[h.length - 1]!;
        rec.history[alias] = { versions: h.slice(0, -1) };
        rec.aliases[alias] = to;
      });
      void events.publish({ name, version: to, kind: ModelEvent_Kind.ROLLED_BACK, alias });
      return store.getModel(name);
    }),

    setCanary: unary<SetCanaryRequest, ModelInfo>(async (req) => {
      const name = checkName(req.name, 'name');
      if (req.clear) {
        if (req.reason.length > 500) throw new InvalidArgumentError('reason', 'at most 500 characters');
        await store.getModel(name);
        let was = 0;
        await store.updateTraffic(name, o.actor, (rec) => {
          was = rec.canary?.version ?? 0;
          rec.canary = undefined;
        });
        if (was && req.reason) void events.publish({ name, version: was, kind: ModelEvent_Kind.ROLLED_BACK, alias: 'canary', reason: req.reason });
        return store.getModel(name);
      }
      if (!(req.weightPercent > 0 && req.weightPercent <= 100)) throw new InvalidArgumentError('weight_percent', 'must be in (0, 100]');
      if (req.keyHeader && !HEADER_RE.test(req.keyHeader)) throw new InvalidArgumentError('key_header', 'must be a lower-case gRPC metadata key');
      await servable(name, req.version);
      await store.updateTraffic(name, o.actor, (rec) => {
        rec.canary = { version: req.version, weightPercent: req.weightPercent, keyHeader: req.keyHeader };
      });
      void events.publish({ name, version: req.version, kind: ModelEvent_Kind.CANARIED, reason: `${req.weightPercent}%` });
      return store.getModel(name);
    }),

    setShadow: unary<SetShadowRequest, ModelInfo>(async (req) => {
      const name = checkName(req.name, 'name');
      if (req.clear) {
        await store.getModel(name);
        await store.updateTraffic(name, o.actor, (rec) => void (rec.shadow = undefined));
        return store.getModel(name);
      }
      if (!(req.percent > 0 && req.percent <= 100)) throw new InvalidArgumentError('percent', 'must be in (0, 100]');
      await servable(name, req.version);
      await store.updateTraffic(name, o.actor, (rec) => {
        rec.shadow = { version: req.version, percent: req.percent };
      });
      void events.publish({ name, version: req.version, kind: ModelEvent_Kind.SHADOWED, reason: `${req.percent}%` });
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

    setProbe: unary<SetProbeRequest, ProbeRecord>(async (req) => {
      const p = req.probe;
      if (!p) throw new InvalidArgumentError('probe', 'missing');
      const name = checkName(p.name, 'probe.name');
      await store.getModel(name);
      if (req.clear) {
        await store.setProbe(name, null);
        return p;
      }
      const probe = checkProbe(p, name, o.actor);
      await store.setProbe(name, probe);
      return probe;
    }),
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
