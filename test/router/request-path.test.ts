/**
 * The router's one request value and path without sockets: what every door's
 * request is built from (priority, deadline, Triton's timeout parameter, the
 * route fields), and resolve → forward → answer against fake replica links.
 */
import { trace } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { buildInferRequest } from '../../libs/client/index.js';
import { InvalidArgumentError, MeshError, NotFoundError, Status, UnavailableError } from '../../libs/errors/index.js';
import { oip, VersionRecord } from '../../libs/proto/index.js';
import type { LinkCaller, ReplicaConn } from '../../services/router/replica-conn.js';
import { RequestPath, RouterRequest } from '../../services/router/request-path.js';
import type { RouterCounters } from '../../services/router/router-metrics.js';
import type { ModelRoutes, RoutingState } from '../../services/router/routing-core.js';
import type { SampleRecorder } from '../../services/router/sample-recorder.js';

const bytes = (params: Record<string, oip.InferParameter> = {}) => {
  const r = buildInferRequest('m', [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }], { id: 'q' });
  r.parameters = params;
  return Buffer.from(oip.ModelInferRequest.encode(r).finish());
};
const headers = (h: Record<string, string> = {}) => ({ get: (k: string) => (k in h ? [h[k]!] : []) });
const build = (h: Record<string, string>, remainingMs = Infinity, b = bytes()) => new RouterRequest(b, headers(h), remainingMs, () => undefined, 1000);

describe('RouterRequest: one constructor for every door', () => {
  it('priority through libs/call-meta: "1.5", "-1", "high" refused naming the header (the router once read "1.5" as 1), large values capped', () => {
    expect(build({}).priority).toBe(0);
    expect(build({ 'x-infermesh-priority': '7' }).priority).toBe(7);
    expect(build({ 'x-infermesh-priority': '300' }).priority).toBe(255);
    for (const bad of ['1.5', '-1', 'high', '']) {
      let err: unknown;
      try {
        build({ 'x-infermesh-priority': bad });
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(InvalidArgumentError);
      expect((err as InvalidArgumentError).field, bad).toBe('x-infermesh-priority');
    }
  });

  it('one deadline on the monotonic clock: the caller\'s time left, capped by the default; Triton\'s timeout parameter (µs) narrows it', () => {
    const none = build({});
    expect(none.deadline - none.t0).toBeCloseTo(1000, 5);
    const short = build({}, 50);
    expect(short.deadline - short.t0).toBeCloseTo(50, 5);
    const long = build({}, 60_000);
    expect(long.deadline - long.t0).toBeCloseTo(1000, 5);
    const spent = build({}, -5);
    expect(spent.deadline).toBe(spent.t0);
    const triton = build({}, 500, bytes({ timeout: { parameterChoice: { $case: 'int64Param', value: 20_000 } } }));
    expect(triton.deadline - triton.t0).toBeCloseTo(20, 5);
    // 0 means no timeout, as in Triton.
    const zero = build({}, 500, bytes({ timeout: { parameterChoice: { $case: 'int64Param', value: 0 } } }));
    expect(zero.deadline - zero.t0).toBeCloseTo(500, 5);
  });

  it('route fields, probe flag and trace context are read once, at the door', () => {
    const r = build({ 'x-infermesh-probe': '1', traceparent: '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01' });
    expect(r.target).toEqual({ name: 'm', selector: '', selectorField: 'model_name' });
    expect(r.probe).toBe(true);
    expect(r.parent?.traceId).toBe('0123456789abcdef0123456789abcdef');
  });
});

/** A replica link that answers with what `script` says, in the next turn. */
function fakeReplica(id: string, script: (n: number) => Uint8Array | MeshError, computeUs = 20) {
  let n = 0;
  const sent: { timeoutMicros: number; priority: number }[] = [];
  const link = {
    id,
    outstanding: 0,
    ejectedUntil: 0,
    sent,
    send(_model: string, _version: number, timeoutMicros: number, _tp: string, _req: Uint8Array, priority: number, caller: LinkCaller) {
      sent.push({ timeoutMicros, priority });
      const r = script(n++);
      setImmediate(() => caller.replied(r, 10, computeUs));
      return n;
    },
    cancel() {},
  };
  return link as typeof link & ReplicaConn;
}

function pathWith(replicas: ReplicaConn[], counters: RouterCounters = { inflight: 0, receiving: 0, shed: 0, cancelled: 0, retried: 0 }, maxInflight = 100) {
  const route = { record: VersionRecord.fromPartial({ name: 'm', version: 3 }), replicas, computeUs: 0 };
  const m: ModelRoutes<ReplicaConn> = { byVersion: new Map([[3, route]]), aliases: new Map(), fallback: route, canary: null, shadow: null };
  const state: RoutingState<ReplicaConn> = { model: (name) => (name === 'm' ? m : undefined) };
  const samples = { record() {}, recordSlow() {}, recordShadow() {}, slowFloor: () => Infinity } as unknown as SampleRecorder;
  // random() = 0: both draws take replicas[0] (power of two choices is tested in routing-core).
  const path = new RequestPath(state, samples, { defaultTimeoutMs: 1000, tracer: trace.getTracer('test'), traceRatio: 0, shadowTolerance: 0, maxInflight, random: () => 0 }, counters);
  return Object.assign(path, { route });
}

const answerOf = (path: RequestPath, b = bytes(), h: Record<string, string> = {}) =>
  new Promise<Uint8Array | MeshError>((resolve) => path.accept(b, headers(h), Infinity, resolve));

describe('RequestPath: resolve → forward → answer', () => {
  const ok = oip.ModelInferResponse.encode(oip.ModelInferResponse.fromPartial({ modelName: 'm', modelVersion: '3', id: 'q' })).finish();

  it('answers the replica\'s bytes with the router\'s timing parameters; priority and time left travel on', async () => {
    const a = fakeReplica('a', () => ok);
    const r = await answerOf(pathWith([a]), bytes(), { 'x-infermesh-priority': '4' });
    const res = oip.ModelInferResponse.decode(r as Uint8Array);
    expect(res.id).toBe('q');
    expect(res.parameters['infermesh.queue_us']?.parameterChoice).toEqual({ $case: 'int64Param', value: 10 });
    expect(a.sent[0]!.priority).toBe(4);
    expect(a.sent[0]!.timeoutMicros).toBeGreaterThan(900_000);
    expect(a.sent[0]!.timeoutMicros).toBeLessThanOrEqual(1_000_000);
  });

  it('a replica that cannot take it (UNAVAILABLE) is retried once on another, never the same', async () => {
    const a = fakeReplica('a', () => new UnavailableError('replica stream ended'));
    const b = fakeReplica('b', () => ok);
    const counters = { inflight: 0, receiving: 0, shed: 0, cancelled: 0, retried: 0 };
    expect(await answerOf(pathWith([a, b], counters))).toBeInstanceOf(Uint8Array);
    expect([a.sent.length, b.sent.length]).toEqual([1, 1]);
    // Counted (infermesh_router_retried_requests_total): what replicas saw beyond the callers' calls.
    expect(counters.retried).toBe(1);
    const only = fakeReplica('only', () => new UnavailableError('replica stream ended'));
    const alone = { inflight: 0, receiving: 0, shed: 0, cancelled: 0, retried: 0 };
    const err = await answerOf(pathWith([only], alone));
    expect(alone.retried).toBe(0);
    expect((err as MeshError).code).toBe(Status.UNAVAILABLE);
    expect(only.sent.length).toBe(1);
  });

  it('learns the version\'s compute time from the answers: calls wait on an awake replica only while the model is tiny', async () => {
    for (const [computeUs, spill] of [[20, 8], [5_000, 1]] as const) {
      const a = fakeReplica('a', () => ok, computeUs);
      const b = fakeReplica('b', () => ok, computeUs);
      const path = pathWith([a, b]);
      // Three calls already on a: not known yet, so only an idle replica is preferred: b.
      a.outstanding = 3;
      await answerOf(path);
      expect([a.sent.length, b.sent.length], `${computeUs} µs`).toEqual([0, 1]);
      expect(path.route.computeUs).toBe(computeUs);
      // Known: a tiny model's call waits on a (3 < 8 outstanding); a 5 ms model's goes to the idle b.
      await answerOf(path);
      expect(spill === 8 ? a.sent.length : b.sent.length, `${computeUs} µs`).toBe(spill === 8 ? 1 : 2);
    }
  });

  it('errors are libs/errors classes: NOT_FOUND, INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED when shed', async () => {
    const path = pathWith([fakeReplica('a', () => ok)]);
    expect(await answerOf(path, Buffer.from(oip.ModelInferRequest.encode(oip.ModelInferRequest.fromPartial({ modelName: 'nope' })).finish()))).toBeInstanceOf(NotFoundError);
    expect(((await answerOf(path, Buffer.from([0x0a, 0x05, 0x61]))) as InvalidArgumentError).field).toBe('request');
    expect(((await answerOf(path, bytes(), { 'x-infermesh-priority': '1.5' })) as InvalidArgumentError).field).toBe('x-infermesh-priority');
    const counters = { inflight: 5, receiving: 0, shed: 0, cancelled: 0, retried: 0 };
    const shed = await answerOf(pathWith([fakeReplica('a', () => ok)], counters, 5));
    expect((shed as MeshError).code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(counters.shed).toBe(1);
  });
});
