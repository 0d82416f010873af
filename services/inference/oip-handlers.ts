import type * as grpc from '@grpc/grpc-js';
import { checkName } from '../../libs/bus/index.js';
import { InvalidArgumentError, NotFoundError, Status, toStatus, UnavailableError } from '../../libs/errors/index.js';
import { frameCopy, unary, type RawHeaders, type RawUnaryHandler } from '../../libs/grpc/index.js';
import { oip, VersionState } from '../../libs/proto/index.js';
import type { SpanContext } from '@opentelemetry/api';
import { isSampled, parseTraceparent } from '../../libs/telemetry/index.js';
import { decodeRequest, type NonFinitePolicy } from './infer-request.js';
import type { ModelManager } from './model-manager.js';
import type { Job, Scheduler } from './scheduler.js';

export interface OipOptions {
  defaultTimeoutMs: number;
  nonFinite: NonFinitePolicy;
  serverVersion: string;
  ready: () => boolean;
}

/**
 * The Open Inference Protocol served directly by a replica (the router is
 * the usual front door; this serves `infermesh bench` and direct callers).
 * ModelInfer answers with bytes already encoded by the scheduler.
 */
export function oipHandlers(manager: ModelManager, scheduler: Scheduler, o: OipOptions) {
  const find = (name: string, version: string) => {
    checkName(name, 'name');
    const e = manager.resolve(name, version);
    if (!e || !e.spec) throw new NotFoundError(version ? `model ${name} version ${version} not found` : `model ${name} not found`);
    return e;
  };
  return {
    serverLive: unary<oip.ServerLiveRequest, oip.ServerLiveResponse>(async () => ({ live: true })),
    serverReady: unary<oip.ServerReadyRequest, oip.ServerReadyResponse>(async () => ({ ready: o.ready() })),
    modelReady: unary<oip.ModelReadyRequest, oip.ModelReadyResponse>(async (req) => ({
      ready: find(req.name, req.version).state === VersionState.VERSION_STATE_READY,
    })),
    serverMetadata: unary<oip.ServerMetadataRequest, oip.ServerMetadataResponse>(async () => ({
      name: 'infermesh-inference',
      version: o.serverVersion,
      extensions: [],
    })),
    modelMetadata: unary<oip.ModelMetadataRequest, oip.ModelMetadataResponse>(async (req) => {
      const e = find(req.name, req.version);
      return {
        name: e.spec.name,
        versions: [e.spec.versionString],
        platform: 'onnxruntime_onnx',
        inputs: e.spec.inputs.map((s) => ({ name: s.name, datatype: s.datatype, shape: s.shape })),
        outputs: e.spec.outputs.map((s) => ({ name: s.name, datatype: s.datatype, shape: s.shape })),
      };
    }),
    modelInfer: (call: grpc.ServerUnaryCall<oip.ModelInferRequest, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const d = call.getDeadline();
      const deadlineMs = d instanceof Date ? d.getTime() : Number.isFinite(d) ? Number(d) : Infinity;
      try {
        scheduler.submit(
          inferJob(manager, o, call.request, deadlineMs, call.metadata, (code, message, response) => {
            if (code === Status.OK) cb(null, Buffer.from(response!.buffer, response!.byteOffset, response!.byteLength));
            else cb({ code, details: message });
          }),
        );
      } catch (err) {
        cb(toStatus(err));
      }
    },
  };
}

/**
 * The scheduler job for one ModelInfer, whichever path it came by (grpc-js's
 * handler or serveRawUnary). Throws a MeshError, before anything is queued,
 * for a bad name, an unknown or unready version, or invalid inputs.
 */
function inferJob(manager: ModelManager, o: OipOptions, req: oip.ModelInferRequest, deadlineMs: number, headers: RawHeaders, done: Job['done']): Job {
  checkName(req.modelName, 'model_name');
  const e = manager.resolve(req.modelName, req.modelVersion);
  if (!e || !e.spec) throw new NotFoundError(req.modelVersion ? `model ${req.modelName} version ${req.modelVersion} not found` : `model ${req.modelName} not found`);
  if (e.state !== VersionState.VERSION_STATE_READY) throw new UnavailableError(`model ${req.modelName} is not ready`);
  const decoded = decodeRequest(e.spec, req, o.nonFinite);
  const now = performance.now();
  return {
    spec: e.spec,
    req: decoded,
    enqueuedAt: now,
    deadline: now + Math.min(deadlineMs - Date.now(), o.defaultTimeoutMs),
    priority: priorityOf(headers),
    trace: sampledParent(headers),
    done,
  };
}

/**
 * ModelInfer for serveRawUnary (the same answers as the grpc-js handler
 * above, without grpc-js's per-call machinery); a caller that goes away
 * frees its queue slot.
 */
export function rawModelInfer(manager: ModelManager, scheduler: Scheduler, o: OipOptions): RawUnaryHandler {
  return (bytes, headers, deadlineMs, reply) => {
    let job: Job;
    try {
      let req: oip.ModelInferRequest;
      try {
        req = oip.ModelInferRequest.decode(bytes);
      } catch {
        throw new InvalidArgumentError('request', 'malformed ModelInferRequest');
      }
      job = inferJob(manager, o, req, deadlineMs, headers, (code, message, response) => (code === Status.OK ? reply(0, '', frameCopy(response!)) : reply(code, message, null)));
    } catch (err) {
      const st = toStatus(err);
      reply(st.code, st.details, null);
      return null;
    }
    scheduler.submit(job);
    return () => scheduler.cancel(job);
  };
}

/** `x-infermesh-priority` metadata: 0 (default, real-time) or a positive bulk level. */
export function priorityOf(md: RawHeaders): number {
  const v = md.get(PRIORITY_HEADER);
  if (v.length === 0) return 0;
  const n = Number(v[0]);
  return Number.isInteger(n) && n > 0 ? Math.min(n, 255) : 0;
}

export const PRIORITY_HEADER = 'x-infermesh-priority';

/** The caller's span context when its `traceparent` is sampled, else null. */
function sampledParent(md: RawHeaders): SpanContext | null {
  const v = md.get('traceparent');
  const c = v.length ? parseTraceparent(String(v[0])) : null;
  return isSampled(c) ? c : null;
}

/** The OIP service definition with ModelInfer's response passed through as encoded bytes. */
export function oipServiceRawResponse(): grpc.ServiceDefinition {
  const def = oip.GRPCInferenceServiceService;
  return {
    ...def,
    modelInfer: { ...def.modelInfer, responseSerialize: (b: Buffer) => b },
  } as unknown as grpc.ServiceDefinition;
}
