import * as grpc from '@grpc/grpc-js';
import { NAME_RE, checkName } from '../../libs/bus/index.js';
import { codeName, MeshError, NotFoundError, Status, toStatus, UnavailableError } from '../../libs/errors/index.js';
import { frameInPlace, unary, type RawUnaryHandler } from '../../libs/grpc/index.js';
import { oip } from '../../libs/proto/index.js';
import type { ReplicaConn } from './replica-conn.js';
import { checkSelector, scanRouteFields, type RouteFields } from './request-scan.js';
import type { Route, RoutingTable } from './routing-table.js';
import { agrees } from './shadow-compare.js';
import { appendTiming } from './timing-params.js';
import type { RouterCounters } from './router-metrics.js';
import { randomBytes } from 'node:crypto';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Span, type SpanContext, type Tracer } from '@opentelemetry/api';
import { epochMs, formatTraceparent, isSampled, parseTraceparent } from '../../libs/telemetry/index.js';

import type { SampleRecorder } from './sample-recorder.js';

export interface FrontOptions {
  /** Deadline given to requests that arrive without one. */
  defaultTimeoutMs: number;
  serverVersion: string;
  tracer: Tracer;
  /** Share of requests without a sampled `traceparent` that start a trace. */
  traceRatio: number;
  /** Largest difference between single-column shadow and production outputs that still agrees. */
  shadowTolerance: number;
  /** Requests in flight through this router before new ones are shed with RESOURCE_EXHAUSTED. */
  maxInflight: number;
}

/** How long a shed caller is asked to wait before retrying (gRPC `grpc-retry-pushback-ms`). */
export const RETRY_PUSHBACK_MS = 100;

/** 32-bit FNV-1a of a routing key: the same key always lands in the same canary bucket. */
function bucketOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % 10_000;
}

/** Splits `model@alias` into name and selector; a model_version, when set, wins. */
function selectorOf(f: RouteFields): { name: string; selector: string } {
  const at = f.modelName.indexOf('@');
  if (at < 0) return { name: f.modelName, selector: f.modelVersion };
  return { name: f.modelName.slice(0, at), selector: f.modelVersion || f.modelName.slice(at + 1) };
}

/**
 * Power of two choices on outstanding requests, skipping the replica already
 * tried and ejected ones, unless ejection would take out most replicas (then
 * ejection is ignored: serving on a slow replica beats serving on none).
 */
function pick(replicas: ReplicaConn[], tried: ReplicaConn | null): ReplicaConn | null {
  const n = replicas.length;
  if (n === 0) return null;
  if (n === 1) return replicas[0] === tried ? null : replicas[0]!;
  const now = performance.now();
  let ejected = 0;
  for (let i = 0; i < n; i++) if (replicas[i]!.ejectedUntil > now) ejected++;
  const skipEjected = ejected > 0 && ejected * 2 <= n;
  const usable = (r: ReplicaConn) => r !== tried && !(skipEjected && r.ejectedUntil > now);
  let a = replicas[(Math.random() * n) | 0]!;
  let b = replicas[(Math.random() * n) | 0]!;
  if (!usable(a)) a = b;
  if (!usable(b)) b = a;
  if (!usable(a)) {
    for (const r of replicas) if (usable(r)) return r;
    return null;
  }
  return a.outstanding <= b.outstanding ? a : b;
}

/**
 * Why `name` and `selector` route nowhere: INVALID_ARGUMENT naming the field
 * (`selectorField`: where the selector came from) when either is malformed,
 * else NOT_FOUND. Only checked values are echoed, so messages stay short.
 */
function notFound(table: RoutingTable, name: string, selector: string, selectorField: string): MeshError {
  if (!NAME_RE.test(name)) return checkNameError(name);
  try {
    checkSelector(selector, selectorField);
  } catch (err) {
    return err as MeshError;
  }
  if (!table.model(name)) return new NotFoundError(`model ${name} not found`);
  return new NotFoundError(/^\d+$/.test(selector) ? `model ${name} has no version ${selector}` : selector ? `model ${name} has no alias ${selector}` : `model ${name} has no version to serve`);
}

function checkNameError(name: string): MeshError {
  try {
    checkName(name, 'model_name');
  } catch (err) {
    return err as MeshError;
  }
  return new NotFoundError(`model ${name} not found`);
}

/** Request headers as the router reads them: grpc-js Metadata, or the REST gateway's HTTP headers. */
export interface HeaderSource {
  get(key: string): (string | Buffer)[];
}

/** The one terminal answer of a request: a serialized ModelInferResponse when `code` is OK. */
export type InferReply = (code: number, message: string, response: Uint8Array | null) => void;

/**
 * The router's request path, shared by gRPC and REST: takes a serialized
 * ModelInferRequest, reads only what routing needs, forwards the bytes
 * untouched over a replica's multiplexed stream and replies with the
 * replica's encoded answer. A request the replica could not take (stream
 * broken, version not ready there) is retried once on another replica while
 * its deadline allows; inference is idempotent.
 */
export function createInferPath(table: RoutingTable, samples: SampleRecorder, o: FrontOptions, counters: RouterCounters) {
  const fields: RouteFields = { modelName: '', modelVersion: '' };

  /** Routes one request; returns a function that cancels it (the caller went away). */
  const infer = (buf: Buffer, headers: HeaderSource, deadlineMs: number, reply: InferReply): (() => void) | null => {
    const t0 = performance.now();
    let route: Route | undefined;
    let name: string;
    let selector: string;
    try {
      const sel = selectorOf(scanRouteFields(buf, fields));
      name = sel.name;
      selector = sel.selector;
      route = NAME_RE.test(name) ? table.resolve(name, selector) : undefined;
      if (!route) throw notFound(table, name, selector, fields.modelVersion ? 'model_version' : 'model_name');
    } catch (err) {
      const st = toStatus(err);
      reply(st.code, st.details, null);
      return null;
    }
    const budgetMs = Math.min(deadlineMs - Date.now(), o.defaultTimeoutMs);
    if (budgetMs <= 0) {
      reply(Status.DEADLINE_EXCEEDED, 'deadline exceeded before routing', null);
      return null;
    }
    // A golden probe (the monitor's): counted apart, kept out of drift, evaluation and the latency and error windows.
    const probe = headers.get('x-infermesh-probe').length > 0;
    if (counters.inflight + counters.receiving >= o.maxInflight) {
      counters.shed++;
      // Shed at once: a fast, cheap answer the caller can back off on.
      samples.record(route.record.name, route.record.version, Math.round((performance.now() - t0) * 1000), Status.RESOURCE_EXHAUSTED, buf, null, '', 0, 0, probe);
      reply(Status.RESOURCE_EXHAUSTED, `router overloaded (${o.maxInflight} requests in flight); retry after ${RETRY_PUSHBACK_MS} ms`, null);
      return null;
    }
    counters.inflight++;
    const end = t0 + budgetMs;
    const md = headers.get('traceparent');
    const clientTp = md.length ? String(md[0]) : '';
    const pr = headers.get('x-infermesh-priority');
    const priority = pr.length ? Math.min(255, Math.max(0, Number(pr[0]) | 0)) : 0;

    // Canary and shadow apply to production traffic: no version named, or the production alias.
    let mirror: Route | null = null;
    let canaried = false;
    if (selector === '' || selector === 'production') {
      const m = table.model(name)!;
      const c = m.canary;
      if (c) {
        let bucket: number;
        if (c.keyHeader) {
          const k = headers.get(c.keyHeader);
          bucket = k.length ? bucketOf(String(k[0])) : (Math.random() * 10_000) | 0;
        } else bucket = (Math.random() * 10_000) | 0;
        if (bucket < c.basisPoints) {
          route = c.route;
          canaried = true;
        }
      }
      if (m.shadow && m.shadow.route !== route && Math.random() * 10_000 < m.shadow.basisPoints) mirror = m.shadow.route;
    }
    const version = route.record.version;
    const modelName = route.record.name;

    // Tracing is decided before any span exists: unsampled requests pay nothing.
    const parent = clientTp ? parseTraceparent(clientTp) : null;
    let span: Span | null = null;
    if (parent ? isSampled(parent) : o.traceRatio > 0 && Math.random() < o.traceRatio) {
      span = o.tracer.startSpan(
        'ModelInfer',
        {
          kind: SpanKind.SERVER,
          startTime: epochMs(t0),
          attributes: {
            'rpc.system': 'grpc',
            'rpc.method': 'ModelInfer',
            'infermesh.model': modelName,
            'infermesh.version': version,
            'infermesh.selector': selector,
            'infermesh.canary': canaried,
            'infermesh.shadowed': mirror !== null,
          },
        },
        parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT,
      );
    }
    const traceId = span ? span.spanContext().traceId : '';
    let tried: ReplicaConn | null = null;
    let attempts = 0;
    let sentId = 0;
    let done = false;
    let shadowDone: ((production: Uint8Array | null) => void) | null = null;
    if (mirror) shadowDone = startShadow(mirror, modelName, version, buf, span ? formatTraceparent(span.spanContext()) : clientTp, end);

    const finish = (code: number, message: string, response: Uint8Array | null, replicaUs: number, queueUs: number, computeUs: number) => {
      done = true;
      counters.inflight--;
      if (code === Status.CANCELLED) counters.cancelled++;
      const now = performance.now();
      const totalUs = Math.round((now - t0) * 1000);
      reply(
        code,
        message,
        code === 0 ? appendTiming(response!, [totalUs, totalUs - replicaUs, replicaUs - queueUs - computeUs, queueUs, computeUs], traceId) : null,
      );
      // Bookkeeping after the answer is on its way. Spans (sampled or slow requests) wait for the next
      // turn, after the frames of this one are written: the caller never waits for them.
      const slow = !probe && totalUs > samples.slowFloor(modelName);
      if (!span && !slow) samples.record(modelName, version, totalUs, code, buf, response, traceId, queueUs, computeUs, probe);
      else setImmediate(() => {
        let tid = traceId;
        if (slow) {
          // Among this window's slowest: keep it, with a trace even if the head sampler said no.
          const b = { queue: queueUs, compute: computeUs, network: Math.max(0, replicaUs - queueUs - computeUs), router: Math.max(0, totalUs - replicaUs) };
          if (!tid) tid = traceAfterTheFact(o.tracer, parent, t0, now, modelName, version, selector, code, b);
          samples.recordSlow(modelName, version, totalUs, code, tid, b);
        }
        samples.record(modelName, version, totalUs, code, buf, response, tid, queueUs, computeUs, probe);
        if (span) {
          span.setAttribute('rpc.grpc.status_code', code);
          if (code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, message: codeName(code) });
          span.end(epochMs(now));
        }
      });
      shadowDone?.(code === 0 ? response : null);
    };
    const attempt = () => {
      const replica = pick(route!.replicas, tried);
      if (!replica) {
        const msg = tried ? `no other ready replica for model ${modelName} version ${version}` : `no ready replica for model ${modelName} version ${version}`;
        return finish(Status.UNAVAILABLE, msg, null, 0, 0, 0);
      }
      tried = replica;
      attempts++;
      const sent = performance.now();
      const fwd = span
        ? o.tracer.startSpan('forward', { kind: SpanKind.CLIENT, startTime: epochMs(sent), attributes: { 'infermesh.replica': replica.id, 'infermesh.attempt': attempts } }, trace.setSpan(ROOT_CONTEXT, span))
        : null;
      // Only a well-formed traceparent travels on (a caller's arbitrary header would cost link bytes).
      const tp = fwd ? formatTraceparent(fwd.spanContext()) : parent ? clientTp : '';
      sentId = replica.send(modelName, version, Math.max(1, Math.floor((end - sent) * 1000)), tp, buf, priority, (code, message, response, queueUs, computeUs) => {
        const replicaUs = Math.round((performance.now() - sent) * 1000);
        if (fwd) {
          fwd.setAttributes({ 'infermesh.queue_us': queueUs, 'infermesh.compute_us': computeUs, 'rpc.grpc.status_code': code });
          fwd.end();
        }
        if (code === Status.UNAVAILABLE && attempts < 2 && end - performance.now() > 1) return attempt();
        finish(code, message, response, replicaUs, queueUs, computeUs);
      });
    };
    attempt();
    return done
      ? null
      : () => {
          // Frees the router's slot at once and the replica's queue slot if the request has not started.
          if (!done && tried && sentId) tried.cancel(sentId);
        };
  };

  /**
   * Sends a mirrored copy of the request to the shadow version (as bulk
   * priority, so it never delays production work on a shared replica) and
   * returns the callback that receives production's answer; once both are in,
   * their agreement and the shadow's latency go to the monitor.
   */
  const startShadow = (mirror: Route, model: string, productionVersion: number, buf: Buffer, traceparent: string, end: number) => {
    const replica = pick(mirror.replicas, null);
    if (!replica) return null;
    const t0 = performance.now();
    let prod: Uint8Array | null | undefined;
    let shadow: { code: number; response: Uint8Array | null; micros: number } | undefined;
    const settle = () => {
      if (prod === undefined || shadow === undefined) return;
      samples.recordShadow(model, {
        version: mirror.record.version,
        productionVersion,
        agree: shadow.code === 0 && prod !== null && agrees(prod, shadow.response!, o.shadowTolerance),
        latencyMicros: shadow.micros,
        code: shadow.code,
      });
    };
    replica.send(model, mirror.record.version, Math.max(1, Math.floor((end - t0) * 1000)), traceparent, buf, 1, (code, _message, response) => {
      shadow = { code, response, micros: Math.round((performance.now() - t0) * 1000) };
      settle();
    });
    return (production: Uint8Array | null) => {
      prod = production;
      settle();
    };
  };

  return infer;
}

/**
 * Records a slow request's router span after it finished, under a sampled
 * parent (the caller's ids when it sent a traceparent, else new ones), so the
 * slowest requests always have a trace even when the head sampler dropped
 * them. The replica took no spans for it; the breakdown is in the attributes.
 */
function traceAfterTheFact(tracer: Tracer, parent: SpanContext | null, t0: number, end: number, model: string, version: number, selector: string, code: number, b: { queue: number; compute: number; network: number; router: number }): string {
  const ctx: SpanContext = {
    traceId: parent?.traceId ?? randomBytes(16).toString('hex'),
    spanId: parent?.spanId ?? randomBytes(8).toString('hex'),
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
  };
  const span = tracer.startSpan(
    'ModelInfer',
    {
      kind: SpanKind.SERVER,
      startTime: epochMs(t0),
      attributes: {
        'infermesh.model': model,
        'infermesh.version': version,
        'infermesh.selector': selector,
        'infermesh.slow': true,
        'infermesh.queue_us': b.queue,
        'infermesh.compute_us': b.compute,
        'infermesh.network_us': b.network,
        'infermesh.router_us': b.router,
        'rpc.grpc.status_code': code,
      },
    },
    trace.setSpanContext(ROOT_CONTEXT, ctx),
  );
  span.end(epochMs(end));
  return span.spanContext().traceId;
}

function pushback(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('grpc-retry-pushback-ms', String(RETRY_PUSHBACK_MS));
  return md;
}

/** Trailers of a shed call: when to retry. */
export const PUSHBACK_TRAILERS = { 'grpc-retry-pushback-ms': String(RETRY_PUSHBACK_MS) };

/** ModelInfer for serveRawUnary: the answer's bytes are framed where appendTiming left room, not copied. */
export function rawModelInfer(infer: ReturnType<typeof createInferPath>): RawUnaryHandler {
  return (request, headers, deadlineMs, reply) =>
    infer(request, headers, deadlineMs, (code, message, response) => {
      if (code === 0) reply(0, '', frameInPlace(response!));
      else reply(code, message, null, code === Status.RESOURCE_EXHAUSTED ? PUSHBACK_TRAILERS : undefined);
    });
}

/** The router's Open Inference Protocol service over gRPC. */
export function frontHandlers(table: RoutingTable, infer: ReturnType<typeof createInferPath>, o: FrontOptions) {
  const modelInfer = (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
    const d = call.getDeadline();
    const deadlineMs = d instanceof Date ? d.getTime() : Number.isFinite(d) ? Number(d) : Infinity;
    const cancel = infer(call.request, call.metadata, deadlineMs, (code, message, response) => {
      if (code === 0) cb(null, Buffer.from(response!.buffer, response!.byteOffset, response!.byteLength));
      else if (code === Status.RESOURCE_EXHAUSTED) cb({ code, details: message, metadata: pushback() });
      else cb({ code, details: message });
    });
    if (cancel) call.once('cancelled', cancel);
  };

  const find = (name: string, version: string) => {
    const sel = selectorOf({ modelName: name, modelVersion: version });
    checkName(sel.name, 'name');
    const r = table.resolve(sel.name, sel.selector);
    if (!r) throw notFound(table, sel.name, sel.selector, version ? 'version' : 'name');
    return r;
  };

  return {
    modelInfer,
    serverLive: unary<oip.ServerLiveRequest, oip.ServerLiveResponse>(async () => ({ live: true })),
    serverReady: unary<oip.ServerReadyRequest, oip.ServerReadyResponse>(async () => ({ ready: table.notReadyReason() === '' })),
    modelReady: unary<oip.ModelReadyRequest, oip.ModelReadyResponse>(async (req) => ({ ready: find(req.name, req.version).replicas.length > 0 })),
    serverMetadata: unary<oip.ServerMetadataRequest, oip.ServerMetadataResponse>(async () => ({
      name: 'infermesh',
      version: o.serverVersion,
      extensions: [],
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

/** The OIP service definition with ModelInfer passing request and response through as bytes. */
export function rawInferService(): grpc.ServiceDefinition {
  const def = oip.GRPCInferenceServiceService;
  return {
    ...def,
    modelInfer: { ...def.modelInfer, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b },
  } as unknown as grpc.ServiceDefinition;
}
