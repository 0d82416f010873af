/**
 * The router's one request path. Every front door (raw HTTP/2 and grpc-js
 * ModelInfer, ModelStreamInfer, REST) hands what it read to `accept`, which
 * builds the one request value (RouterRequest) and runs it:
 *
 *   resolve (routing-core.ts, a pure function of the routing table)
 *   → forward (replica-conn.ts: the replica's multiplexed link; one retry on
 *     another replica when the first could not take it)
 *   → answer (the door's `Answer`: the response bytes or a MeshError).
 *
 * Inside the router a deadline is one number: milliseconds on the monotonic
 * clock `performance.now()`; doors convert what they read (grpc-timeout,
 * grpc-js's Date, a REST header, a stream parameter) with libs/call-meta.
 */
import { randomBytes } from 'node:crypto';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Span, type SpanContext, type Tracer } from '@opentelemetry/api';
import { deadlineAfter, parsePriority, PRIORITY_HEADER } from '../../libs/call-meta/index.js';
import { CancelledError, codeName, DeadlineExceededError, InternalError, MeshError, ResourceExhaustedError, Status, UnavailableError } from '../../libs/errors/index.js';
import { epochMs, formatTraceparent, isSampled, parseTraceparent } from '../../libs/telemetry/index.js';
import type { LinkCaller, ReplicaConn } from './replica-conn.js';
import { scanRouteFields, type RouteFields } from './request-scan.js';
import { pickReplica, resolveTarget, spillAt, targetOf, type HeaderSource, type Route, type RoutingState, type Target } from './routing-core.js';
import type { RouterCounters } from './router-metrics.js';
import type { SampleRecorder } from './sample-recorder.js';
import { agrees } from './shadow-compare.js';
import { appendTiming } from './timing-params.js';

export type { HeaderSource } from './routing-core.js';

/**
 * A request's one terminal answer: the serialized ModelInferResponse (with
 * the router's timing parameters, GRPC_PREFIX_BYTES free before it for
 * frameInPlace), or the error as a libs/errors class. Called exactly once.
 */
export type Answer = (result: Uint8Array | MeshError) => void;

export interface PathOptions {
  /** Deadline given to requests that arrive without one, and the longest any gets (ms). */
  defaultTimeoutMs: number;
  tracer: Tracer;
  /** Share of requests without a sampled `traceparent` that start a trace. */
  traceRatio: number;
  /** Largest difference between single-column shadow and production outputs that still agrees. */
  shadowTolerance: number;
  /** Requests in flight through this router before new ones are shed with RESOURCE_EXHAUSTED. */
  maxInflight: number;
  /** Uniform in [0, 1): canary buckets, shadow share, replica choice, head sampling (tests fix it). */
  random?: () => number;
}

/** How long a shed caller is asked to wait before retrying (gRPC `grpc-retry-pushback-ms`). */
export const RETRY_PUSHBACK_MS = 100;

/** The metadata key that marks a golden probe (the monitor's): counted apart from traffic. */
export const PROBE_HEADER = 'x-infermesh-probe';

const NO_VALUES: never[] = [];
const fields: RouteFields = { modelName: '', modelVersion: '', timeoutMicros: -1 };

/**
 * One inference request inside the router, from the door that received it
 * to its answer: what the door read (the untouched bytes, route fields,
 * deadline, priority, trace context, probe flag, headers for a sticky canary
 * key), and where the path has taken it (route, replicas tried, the span).
 */
export class RouterRequest implements LinkCaller {
  /** Arrival, performance.now() ms. */
  readonly t0: number;
  /** The request's one deadline, performance.now() ms (capped at the router's default timeout). */
  readonly deadline: number;
  /** Where the path is taking it (set by resolve). */
  route: Route<ReplicaConn> | null = null;
  selector = '';
  canaried = false;
  /** Replicas tried so far (a retry goes elsewhere). */
  readonly tried: ReplicaConn[] = [];
  /** This request's id on the link of the replica tried last (0: not waiting there). */
  linkId = 0;
  sentAt = 0;
  span: Span | null = null;
  forward: Span | null = null;
  shadow: ShadowCall | null = null;
  done = false;
  private path: RequestPath | null = null;

  /** Builds the request; throws INVALID_ARGUMENT (malformed message, bad priority) naming the field. */
  constructor(
    /** The serialized ModelInferRequest exactly as the caller sent it. */
    readonly bytes: Buffer,
    readonly headers: HeaderSource,
    /** Milliseconds the caller gives it (Infinity: none given); the `timeout` parameter may narrow it. */
    remainingMs: number,
    readonly answer: Answer,
    defaultTimeoutMs: number,
  ) {
    this.t0 = performance.now();
    scanRouteFields(bytes, fields);
    // Triton's per-request `timeout` parameter (µs) narrows the caller's deadline; 0 means none.
    if (fields.timeoutMicros > 0 && fields.timeoutMicros / 1000 < remainingMs) remainingMs = fields.timeoutMicros / 1000;
    this.deadline = deadlineAfter(remainingMs, defaultTimeoutMs, this.t0);
    this.target = targetOf(fields.modelName, fields.modelVersion);
    this.priority = priorityOf(headers);
    const tp = headers.get('traceparent');
    this.traceparent = tp.length ? String(tp[0]) : '';
    this.parent = this.traceparent ? parseTraceparent(this.traceparent) : null;
    this.probe = headers.get(PROBE_HEADER).length > 0;
  }

  readonly target: Target;
  /** 0 (real-time) to 255 (bulk), from x-infermesh-priority (libs/call-meta). */
  readonly priority: number;
  /** The caller's traceparent header ('' when none); only a well-formed one travels on. */
  readonly traceparent: string;
  readonly parent: SpanContext | null;
  /** A golden probe: counted apart, kept out of drift, evaluation and the latency and error windows. */
  readonly probe: boolean;

  /** The caller went away: frees the router's slot at once and the replica's queue slot if it has not started. */
  readonly cancel = (): void => {
    if (this.done || this.path === null) return;
    const replica = this.tried[this.tried.length - 1];
    if (replica && this.linkId) replica.cancel(this.linkId);
    else this.path.finish(this, new CancelledError('cancelled by the caller'), 0, 0, 0);
  };

  /** The replica link's answer (LinkCaller). */
  replied(result: Uint8Array | MeshError, queueUs: number, computeUs: number): void {
    this.linkId = 0;
    this.path!.replied(this, result, queueUs, computeUs);
  }

  /** @internal The path running this request. */
  attach(path: RequestPath): void {
    this.path = path;
  }
}

function priorityOf(headers: HeaderSource): number {
  const v = headers.get(PRIORITY_HEADER);
  return v.length === 0 ? 0 : parsePriority(v[0]);
}

/** The shared answer of a shed request (a constant: shedding must stay cheap). */
function overloaded(max: number): MeshError {
  return new ResourceExhaustedError(`router overloaded (${max} requests in flight); retry after ${RETRY_PUSHBACK_MS} ms`);
}

export class RequestPath {
  private readonly random: () => number;
  private readonly shed: MeshError;

  constructor(
    private readonly state: RoutingState<ReplicaConn>,
    private readonly samples: SampleRecorder,
    private readonly o: PathOptions,
    private readonly counters: RouterCounters,
  ) {
    this.random = o.random ?? Math.random;
    this.shed = overloaded(o.maxInflight);
  }

  /**
   * The one entry of every front door: builds the RouterRequest from what
   * the door read and runs it. `answer` is called exactly once, possibly
   * before this returns. Returns the request while it is in flight (its
   * `cancel` is for a caller that goes away), else null.
   */
  accept(bytes: Buffer, headers: HeaderSource, remainingMs: number, answer: Answer): RouterRequest | null {
    let req: RouterRequest;
    try {
      req = new RouterRequest(bytes, headers, remainingMs, answer, this.o.defaultTimeoutMs);
    } catch (err) {
      answer(err instanceof MeshError ? err : new InternalError('internal error', { cause: err }));
      return null;
    }
    this.run(req);
    return req.done ? null : req;
  }

  private run(req: RouterRequest): void {
    const { counters, o } = this;
    let r;
    try {
      r = resolveTarget(this.state, req.target, req.headers, this.random);
    } catch (err) {
      req.done = true;
      req.answer(err as MeshError);
      return;
    }
    const route = r.route;
    req.route = route;
    req.selector = req.target.selector;
    req.canaried = r.canaried;
    if (req.deadline <= req.t0) {
      req.done = true;
      req.answer(new DeadlineExceededError('deadline exceeded before routing'));
      return;
    }
    if (counters.inflight + counters.receiving >= o.maxInflight) {
      counters.shed++;
      req.done = true;
      // Shed at once: a fast, cheap answer the caller can back off on.
      this.samples.record(route.record.name, route.record.version, Math.round((performance.now() - req.t0) * 1000), Status.RESOURCE_EXHAUSTED, req.bytes, null, '', 0, 0, req.probe);
      req.answer(this.shed);
      return;
    }
    counters.inflight++;
    req.attach(this);
    // Tracing is decided before any span exists: unsampled requests pay nothing.
    const parent = req.parent;
    if (parent ? isSampled(parent) : o.traceRatio > 0 && this.random() < o.traceRatio) {
      req.span = o.tracer.startSpan(
        'ModelInfer',
        {
          kind: SpanKind.SERVER,
          startTime: epochMs(req.t0),
          attributes: {
            'rpc.system': 'grpc',
            'rpc.method': 'ModelInfer',
            'infermesh.model': route.record.name,
            'infermesh.version': route.record.version,
            'infermesh.selector': req.selector,
            'infermesh.canary': r.canaried,
            'infermesh.shadowed': r.mirror !== null,
          },
        },
        parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT,
      );
    }
    if (r.mirror) req.shadow = this.startShadow(req, r.mirror);
    this.forward(req);
  }

  /** Sends the request to a replica of its route it has not tried yet; UNAVAILABLE when none is left. */
  private forward(req: RouterRequest): void {
    const route = req.route!;
    const now = performance.now();
    const replica = pickReplica(route.replicas, req.tried, now, this.random, spillAt(route.computeUs));
    if (!replica) {
      const { name, version } = route.record;
      const msg = req.tried.length ? `no other ready replica for model ${name} version ${version}` : `no ready replica for model ${name} version ${version}`;
      return this.finish(req, new UnavailableError(msg), 0, 0, 0);
    }
    if (req.tried.push(replica) > 1) this.counters.retried++;
    req.sentAt = now;
    const fwd = req.span
      ? this.o.tracer.startSpan('forward', { kind: SpanKind.CLIENT, startTime: epochMs(now), attributes: { 'infermesh.replica': replica.id, 'infermesh.attempt': req.tried.length } }, trace.setSpan(ROOT_CONTEXT, req.span))
      : null;
    req.forward = fwd;
    // Only a well-formed traceparent travels on (a caller's arbitrary header would cost link bytes).
    const tp = fwd ? formatTraceparent(fwd.spanContext()) : req.parent ? req.traceparent : '';
    req.linkId = replica.send(route.record.name, route.record.version, Math.max(1, Math.floor((req.deadline - now) * 1000)), tp, req.bytes, req.priority, req);
  }

  /** @internal A replica's answer to the request's latest attempt. */
  replied(req: RouterRequest, result: Uint8Array | MeshError, queueUs: number, computeUs: number): void {
    if (req.done) return;
    const code = result instanceof MeshError ? result.code : 0;
    const replicaUs = Math.round((performance.now() - req.sentAt) * 1000);
    const fwd = req.forward;
    if (fwd) {
      fwd.setAttributes({ 'infermesh.queue_us': queueUs, 'infermesh.compute_us': computeUs, 'rpc.grpc.status_code': code });
      fwd.end();
      req.forward = null;
    }
    if (code === 0 && computeUs > 0) {
      // The version's compute time, for how many calls may wait on an awake replica (spillAt).
      const route = req.route!;
      route.computeUs = route.computeUs > 0 ? route.computeUs + (computeUs - route.computeUs) / 8 : computeUs;
    }
    // The replica could not take it (link broken, version not ready there): once more elsewhere,
    // while the deadline allows. Inference is idempotent.
    if (code === Status.UNAVAILABLE && req.tried.length < 2 && req.deadline - performance.now() > 1) return this.forward(req);
    this.finish(req, result, replicaUs, queueUs, computeUs);
  }

  /** @internal Answers the request, then does the bookkeeping (samples, spans, shadow) after the answer is on its way. */
  finish(req: RouterRequest, result: Uint8Array | MeshError, replicaUs: number, queueUs: number, computeUs: number): void {
    if (req.done) return;
    req.done = true;
    const { counters, samples } = this;
    counters.inflight--;
    const ok = !(result instanceof MeshError);
    const code = ok ? 0 : result.code;
    if (code === Status.CANCELLED) counters.cancelled++;
    const now = performance.now();
    const totalUs = Math.round((now - req.t0) * 1000);
    const span = req.span;
    const traceId = span ? span.spanContext().traceId : '';
    const response = ok ? result : null;
    req.answer(ok ? appendTiming(result, [totalUs, totalUs - replicaUs, replicaUs - queueUs - computeUs, queueUs, computeUs], traceId) : result);
    const { name, version } = req.route!.record;
    // Spans (sampled or slow requests) wait for the next turn, after the frames of this one are
    // written: the caller never waits for them.
    const slow = !req.probe && totalUs > samples.slowFloor(name);
    if (!span && !slow) samples.record(name, version, totalUs, code, req.bytes, response, traceId, queueUs, computeUs, req.probe);
    else setImmediate(() => {
      let tid = traceId;
      if (slow) {
        // Among this window's slowest: keep it, with a trace even if the head sampler said no.
        const b = { queue: queueUs, compute: computeUs, network: Math.max(0, replicaUs - queueUs - computeUs), router: Math.max(0, totalUs - replicaUs) };
        if (!tid) tid = traceAfterTheFact(this.o.tracer, req.parent, req.t0, now, name, version, req.selector, code, b);
        samples.recordSlow(name, version, totalUs, code, tid, b);
      }
      samples.record(name, version, totalUs, code, req.bytes, response, tid, queueUs, computeUs, req.probe);
      if (span) {
        span.setAttribute('rpc.grpc.status_code', code);
        if (code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, message: codeName(code) });
        span.end(epochMs(now));
      }
    });
    req.shadow?.production(response);
  }

  /**
   * Sends a mirrored copy of the request to the shadow version (as bulk
   * priority, so it never delays production work on a shared replica); once
   * production's answer is in too, their agreement and the shadow's latency
   * go to the monitor.
   */
  private startShadow(req: RouterRequest, mirror: Route<ReplicaConn>): ShadowCall | null {
    const replica = pickReplica(mirror.replicas, NO_VALUES, performance.now(), this.random);
    if (!replica) return null;
    const s = new ShadowCall(this.samples, this.o.shadowTolerance, req.route!.record.name, req.route!.record.version, mirror.record.version);
    const tp = req.span ? formatTraceparent(req.span.spanContext()) : req.traceparent;
    replica.send(req.route!.record.name, mirror.record.version, Math.max(1, Math.floor((req.deadline - s.t0) * 1000)), tp, req.bytes, 1, s);
    return s;
  }
}

/** A mirrored request: waits for both answers, then records how they compare. */
class ShadowCall implements LinkCaller {
  readonly t0 = performance.now();
  private prod: Uint8Array | null | undefined;
  private code = -1;
  private response: Uint8Array | null = null;
  private micros = 0;


  constructor(
    private readonly samples: SampleRecorder,
    private readonly tolerance: number,
    private readonly model: string,
    private readonly productionVersion: number,
    private readonly version: number,
  ) {}

  replied(result: Uint8Array | MeshError): void {
    this.code = result instanceof MeshError ? result.code : 0;
    this.response = result instanceof MeshError ? null : result;
    this.micros = Math.round((performance.now() - this.t0) * 1000);
    this.settle();
  }

  production(response: Uint8Array | null): void {
    this.prod = response;
    this.settle();
  }

  private settle(): void {
    if (this.prod === undefined || this.code < 0) return;
    this.samples.recordShadow(this.model, {
      version: this.version,
      productionVersion: this.productionVersion,
      agree: this.code === 0 && this.prod !== null && agrees(this.prod, this.response!, this.tolerance),
      latencyMicros: this.micros,
      code: this.code,
    });
  }
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
