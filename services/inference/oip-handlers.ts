import type * as grpc from '@grpc/grpc-js';
import { checkName } from '../../libs/bus/index.js';
import { PRIORITY_HEADER, remainingMsOf } from '../../libs/call-meta/index.js';
import { NotFoundError, toStatus } from '../../libs/errors/index.js';
import { frameCopy, unary, type RawUnaryHandler } from '../../libs/grpc/index.js';
import { oip, VersionState } from '../../libs/proto/index.js';
import { inferRequest, type Arrival, type InferRequest, type NonFinitePolicy, type RequestContext } from './infer-request.js';
import type { ModelManager } from './model-manager.js';
import type { Scheduler } from './scheduler.js';

export interface OipOptions {
  defaultTimeoutMs: number;
  nonFinite: NonFinitePolicy;
  serverVersion: string;
  /** False while draining: ModelInfer is refused UNAVAILABLE, ServerReady says false. */
  ready: () => boolean;
}

/**
 * The Open Inference Protocol served directly by a replica (the router is
 * the usual front door; this serves `infermesh bench` and direct callers).
 * ModelInfer answers with bytes already encoded by the scheduler.
 */
export function oipHandlers(manager: ModelManager, scheduler: Scheduler, o: OipOptions) {
  const ctx = requestContext(manager, o);
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
    modelInfer: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const md = call.metadata;
      const arrival: Arrival = { bytes: call.request, remainingMs: remainingMsOf(call.getDeadline()), priority: first(md.get(PRIORITY_HEADER)), traceparent: first(md.get('traceparent')) };
      let req: InferRequest;
      try {
        req = inferRequest(ctx, arrival, (err, response) => (err ? cb(toStatus(err)) : cb(null, Buffer.from(response!.buffer, response!.byteOffset, response!.byteLength))));
      } catch (err) {
        return cb(toStatus(err));
      }
      scheduler.submit(req);
      if (req.queued) call.once('cancelled', () => scheduler.cancel(req));
    },
  };
}

/**
 * ModelInfer for serveRawUnary (the same answers as the grpc-js handler
 * above, without grpc-js's per-call machinery); a caller that goes away
 * frees its queue slot.
 */
export function rawModelInfer(manager: ModelManager, scheduler: Scheduler, o: OipOptions): RawUnaryHandler {
  const ctx = requestContext(manager, o);
  return (bytes, headers, deadlineMs, reply) => {
    const arrival: Arrival = { bytes, remainingMs: remainingMsOf(deadlineMs), priority: first(headers.get(PRIORITY_HEADER)), traceparent: first(headers.get('traceparent')) };
    let req: InferRequest;
    try {
      req = inferRequest(ctx, arrival, (err, response) => {
        if (!err) return reply(0, '', frameCopy(response!));
        const st = toStatus(err);
        reply(st.code, st.details, null);
      });
    } catch (err) {
      const st = toStatus(err);
      reply(st.code, st.details, null);
      return null;
    }
    scheduler.submit(req);
    return req.queued ? () => scheduler.cancel(req) : null;
  };
}

function requestContext(manager: ModelManager, o: OipOptions): RequestContext {
  return { manager, accepting: o.ready, defaultTimeoutMs: o.defaultTimeoutMs, nonFinite: o.nonFinite };
}

function first(v: (string | Buffer)[]): string | Buffer | undefined {
  return v.length === 0 ? undefined : v[0];
}

/** The OIP service definition with ModelInfer's request and response passed through as bytes (decoded by inferRequest). */
export function oipServiceRawResponse(): grpc.ServiceDefinition {
  const def = oip.GRPCInferenceServiceService;
  return {
    ...def,
    modelInfer: { ...def.modelInfer, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b },
  } as unknown as grpc.ServiceDefinition;
}
