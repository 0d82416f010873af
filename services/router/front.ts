/**
 * The router's gRPC front doors. Each turns what arrived into the one
 * request path's input (RequestPath.accept in request-path.ts: the bytes,
 * the headers, the caller's time left) and turns the path's one answer (a
 * serialized ModelInferResponse or a libs/errors class) into gRPC:
 *
 *   - ModelInfer off the raw HTTP/2 streams (rawModelInfer, the default);
 *   - ModelInfer through grpc-js's handler (`--http2-infer=false`);
 *   - ModelStreamInfer, Triton's stream (model-stream-infer.ts).
 *
 * The REST gateway (rest-server.ts) is the fourth door. The other methods of
 * the OIP service (readiness, metadata) read the routing table directly.
 */
import * as grpc from '@grpc/grpc-js';
import { remainingMsOf } from '../../libs/call-meta/index.js';
import { checkName } from '../../libs/bus/index.js';
import { MeshError, Status, toStatus, UnavailableError } from '../../libs/errors/index.js';
import { frameInPlace, unary, type RawUnaryHandler } from '../../libs/grpc/index.js';
import { oip } from '../../libs/proto/index.js';
import { RETRY_PUSHBACK_MS, type Answer, type RequestPath } from './request-path.js';
import { noRoute, targetOf } from './routing-core.js';
import type { RoutingTable } from './routing-table.js';
import { TRITON_EXTENSIONS } from './triton-service.js';

export interface FrontOptions {
  serverVersion: string;
}

/** Trailers of a shed call: when to retry. */
export const PUSHBACK_TRAILERS = { 'grpc-retry-pushback-ms': String(RETRY_PUSHBACK_MS) };

/** ModelInfer for serveRawUnary: the answer's bytes are framed where appendTiming left room, not copied. */
export function rawModelInfer(path: RequestPath): RawUnaryHandler {
  return (request, headers, deadlineMs, reply) => {
    const answer: Answer = (r) => {
      if (r instanceof MeshError) reply(r.code, r.message, null, r.code === Status.RESOURCE_EXHAUSTED ? PUSHBACK_TRAILERS : undefined);
      else reply(0, '', frameInPlace(r));
    };
    const req = path.accept(request, headers, remainingMsOf(deadlineMs), answer);
    return req === null ? null : req.cancel;
  };
}

/** The gRPC status of an error answer: its libs/errors code and message, with the retry pushback when shed. */
export function grpcStatusOf(err: MeshError): Partial<grpc.StatusObject> {
  const st = toStatus(err);
  if (err.code === Status.RESOURCE_EXHAUSTED) st.metadata!.set('grpc-retry-pushback-ms', String(RETRY_PUSHBACK_MS));
  return st;
}

/** ModelInfer through grpc-js's own handler (`--http2-infer=false`): the same path, the same answers. */
export function grpcModelInfer(path: RequestPath) {
  return (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
    const req = path.accept(call.request, call.metadata, remainingMsOf(call.getDeadline()), (r) => {
      if (r instanceof MeshError) cb(grpcStatusOf(r));
      else cb(null, Buffer.from(r.buffer, r.byteOffset, r.byteLength));
    });
    if (req) call.once('cancelled', req.cancel);
  };
}

/** The router's Open Inference Protocol service over gRPC. */
export function frontHandlers(table: RoutingTable, path: RequestPath, o: FrontOptions, streams: { modelStreamInfer: grpc.handleBidiStreamingCall<Buffer, Buffer> }) {
  const find = (name: string, version: string) => {
    const t = targetOf(name, version);
    checkName(t.name, 'name');
    const r = table.resolve(t.name, t.selector);
    if (!r) throw noRoute(table, t.name, t.selector, 'name', version ? 'version' : 'name');
    return r;
  };

  return {
    modelInfer: grpcModelInfer(path),
    modelStreamInfer: streams.modelStreamInfer,
    serverLive: unary<oip.ServerLiveRequest, oip.ServerLiveResponse>(async () => ({ live: true })),
    serverReady: unary<oip.ServerReadyRequest, oip.ServerReadyResponse>(async () => ({ ready: table.notReadyReason() === '' })),
    modelReady: unary<oip.ModelReadyRequest, oip.ModelReadyResponse>(async (req) => {
      const r = find(req.name, req.version);
      // An unloaded model (RepositoryModelUnload) is not ready, though replicas keep it warm.
      return { ready: r.replicas.length > 0 && table.model(r.record.name)?.unloaded !== true };
    }),
    serverMetadata: unary<oip.ServerMetadataRequest, oip.ServerMetadataResponse>(async () => ({
      name: 'infermesh',
      version: o.serverVersion,
      extensions: [...TRITON_EXTENSIONS],
    })),
    modelMetadata: unary<oip.ModelMetadataRequest, oip.ModelMetadataResponse>(async (req) => {
      const r = find(req.name, req.version);
      const rec = r.record;
      if (!rec.inputs.length) throw new UnavailableError('model metadata not available');
      return {
        name: rec.name,
        versions: table.versionsOf(rec.name).map((v) => String(v.version)),
        platform: 'onnxruntime_onnx',
        inputs: rec.inputs.map((s) => ({ name: s.name, datatype: s.datatype, shape: s.shape })),
        outputs: rec.outputs.map((s) => ({ name: s.name, datatype: s.datatype, shape: s.shape })),
      };
    }),
  };
}

/** The OIP service definition with ModelInfer and ModelStreamInfer passing requests and responses through as bytes. */
export function rawInferService(): grpc.ServiceDefinition {
  const def = oip.GRPCInferenceServiceService;
  const raw = { requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b };
  return {
    ...def,
    modelInfer: { ...def.modelInfer, ...raw },
    modelStreamInfer: { ...def.modelStreamInfer, ...raw },
  } as unknown as grpc.ServiceDefinition;
}
