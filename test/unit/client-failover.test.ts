/**
 * InferenceApi over several addresses, against real grpc-js servers on
 * loopback that answer ModelInfer as each case needs: round-robin, failover
 * on UNAVAILABLE (an answer or a closed port), no retry of anything else, and
 * one deadline for all attempts together.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { InferenceApi } from '../../libs/client/index.js';
import { oip } from '../../libs/proto/index.js';

type Behaviour = (reply: grpc.sendUnaryData<oip.ModelInferResponse>, req: oip.ModelInferRequest) => void;

interface TestServer {
  address: string;
  /** ModelInfer calls received. */
  calls: number;
  stop(): Promise<void>;
}

const servers: TestServer[] = [];
const apis: InferenceApi[] = [];

/** An OIP server whose ModelInfer answers as `behaviour` decides; readiness and metadata answer OK. */
async function serve(behaviour: Behaviour): Promise<TestServer> {
  const server = new grpc.Server();
  const s: TestServer = {
    address: '',
    calls: 0,
    stop: () => new Promise((resolve) => server.tryShutdown(() => resolve())),
  };
  server.addService(oip.GRPCInferenceServiceService, {
    serverReady: (_: unknown, cb: grpc.sendUnaryData<oip.ServerReadyResponse>) => cb(null, { ready: true }),
    modelReady: (_: unknown, cb: grpc.sendUnaryData<oip.ModelReadyResponse>) => cb(null, { ready: true }),
    modelMetadata: (call: grpc.ServerUnaryCall<oip.ModelMetadataRequest, oip.ModelMetadataResponse>, cb: grpc.sendUnaryData<oip.ModelMetadataResponse>) =>
      cb(null, oip.ModelMetadataResponse.fromPartial({ name: call.request.name, versions: ['1'] })),
    modelInfer: (call: grpc.ServerUnaryCall<oip.ModelInferRequest, oip.ModelInferResponse>, cb: grpc.sendUnaryData<oip.ModelInferResponse>) => {
      s.calls++;
      behaviour(cb, call.request);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  s.address = `127.0.0.1:${port}`;
  servers.push(s);
  return s;
}

const ok: Behaviour = (cb, req) => cb(null, oip.ModelInferResponse.fromPartial({ modelName: req.modelName, id: req.id }));
const fail =
  (code: grpc.status, metadata?: grpc.Metadata): Behaviour =>
  (cb) =>
    cb({ code, details: grpc.status[code], metadata });
const later =
  (ms: number, b: Behaviour): Behaviour =>
  (cb, req) =>
    setTimeout(() => b(cb, req), ms);

/** An address where nothing listens: a server's port once it has shut down. */
async function closedPort(): Promise<string> {
  const s = await serve(ok);
  await s.stop();
  return s.address;
}

function api(address: string | string[], o?: ConstructorParameters<typeof InferenceApi>[1]): InferenceApi {
  const a = new InferenceApi(address, o);
  apis.push(a);
  return a;
}

const request = (id: string) => oip.ModelInferRequest.fromPartial({ modelName: 'm', id });

async function codeOf(p: Promise<unknown>): Promise<{ code: grpc.status; err?: grpc.ServiceError; ms: number }> {
  const t0 = performance.now();
  try {
    await p;
    return { code: grpc.status.OK, ms: performance.now() - t0 };
  } catch (e) {
    return { code: (e as grpc.ServiceError).code, err: e as grpc.ServiceError, ms: performance.now() - t0 };
  }
}

afterEach(() => {
  for (const a of apis.splice(0)) a.close();
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

describe('InferenceApi over several addresses', () => {
  it('takes one address, a comma-separated list or an array', () => {
    expect(api('127.0.0.1:1').addresses).toEqual(['127.0.0.1:1']);
    expect(api(' 127.0.0.1:1, 127.0.0.1:2 ,').addresses).toEqual(['127.0.0.1:1', '127.0.0.1:2']);
    expect(api(['127.0.0.1:1', '127.0.0.1:2,127.0.0.1:3']).addresses).toEqual(['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']);
    expect(() => new InferenceApi(' , ')).toThrow(/no address/);
  });

  it('round-robin spreads calls over two healthy servers', async () => {
    const [a, b] = await Promise.all([serve(ok), serve(ok)]);
    const c = api([a!.address, b!.address]);
    for (let i = 0; i < 40; i++) expect((await c.inferRaw(request(`r${i}`))).id).toBe(`r${i}`);
    console.log(`client-failover: round-robin ${a!.calls} / ${b!.calls}`);
    expect(a!.calls + b!.calls).toBe(40);
    expect(a!.calls).toBeGreaterThanOrEqual(10);
    expect(b!.calls).toBeGreaterThanOrEqual(10);
  });

  it('every call succeeds when one of two servers answers UNAVAILABLE', async () => {
    const [down, up] = await Promise.all([serve(fail(grpc.status.UNAVAILABLE)), serve(ok)]);
    const c = api([down!.address, up!.address]);
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => codeOf(c.inferRaw(request(`u${i}`), { timeoutMs: 2_000 }))));
    expect(results.map((r) => grpc.status[r.code])).toEqual(Array(30).fill('OK'));
    expect(up!.calls).toBe(30);
    // Round-robin sent some calls to the failing server first: those were retried.
    expect(down!.calls).toBeGreaterThan(0);
  });

  it('every call succeeds when one address is a closed port', async () => {
    const [closed, up] = await Promise.all([closedPort(), serve(ok)]);
    const c = api(`${closed},${up!.address}`);
    for (let i = 0; i < 20; i++) expect((await codeOf(c.inferRaw(request(`c${i}`), { timeoutMs: 2_000 }))).code).toBe(grpc.status.OK);
    expect(up!.calls).toBe(20);
  });

  it('UNAVAILABLE everywhere: 1 + retries attempts, then UNAVAILABLE', async () => {
    const [a, b] = await Promise.all([serve(fail(grpc.status.UNAVAILABLE)), serve(fail(grpc.status.UNAVAILABLE))]);
    const r = await codeOf(api([a!.address, b!.address], { retries: 4 }).inferRaw(request('x')));
    expect(r.code).toBe(grpc.status.UNAVAILABLE);
    expect(a!.calls + b!.calls).toBe(5);
    const single = await serve(fail(grpc.status.UNAVAILABLE));
    expect((await codeOf(api(single.address).inferRaw(request('y')))).code).toBe(grpc.status.UNAVAILABLE);
    expect(single.calls).toBe(3); // the default: 2 retries
  });

  it.each([
    ['INVALID_ARGUMENT', fail(grpc.status.INVALID_ARGUMENT)],
    ['NOT_FOUND', fail(grpc.status.NOT_FOUND)],
    ['RESOURCE_EXHAUSTED', fail(grpc.status.RESOURCE_EXHAUSTED)],
    ['INTERNAL', fail(grpc.status.INTERNAL)],
  ])('%s is returned, not retried', async (name, behaviour) => {
    const [a, b] = await Promise.all([serve(behaviour), serve(behaviour)]);
    const r = await codeOf(api([a!.address, b!.address]).inferRaw(request('n')));
    expect(grpc.status[r.code]).toBe(name);
    expect(a!.calls + b!.calls).toBe(1);
  });

  it('RESOURCE_EXHAUSTED or UNAVAILABLE with grpc-retry-pushback-ms is returned with its trailer, not retried', async () => {
    for (const code of [grpc.status.RESOURCE_EXHAUSTED, grpc.status.UNAVAILABLE]) {
      const md = new grpc.Metadata();
      md.set('grpc-retry-pushback-ms', '250');
      const [a, b] = await Promise.all([serve(fail(code, md)), serve(ok)]);
      const r = await codeOf(api([a!.address, b!.address]).inferRaw(request('p')));
      expect(r.code).toBe(code);
      expect(r.err?.metadata.get('grpc-retry-pushback-ms')).toEqual(['250']);
      expect(a!.calls + b!.calls).toBe(1);
    }
  });

  it('DEADLINE_EXCEEDED is not retried', async () => {
    const [hang, up] = await Promise.all([serve(later(1_000, ok)), serve(ok)]);
    const r = await codeOf(api([hang!.address, up!.address]).inferRaw(request('d'), { timeoutMs: 200 }));
    expect(r.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(hang!.calls).toBe(1);
    expect(up!.calls).toBe(0);
    expect(r.ms).toBeLessThan(600);
  });

  it('one deadline bounds all attempts together', async () => {
    // Each attempt takes 120 ms to fail; ten retries would take 1.3 s, the deadline is 300 ms.
    const slowFail = later(120, fail(grpc.status.UNAVAILABLE));
    const [a, b] = await Promise.all([serve(slowFail), serve(slowFail)]);
    const r = await codeOf(api([a!.address, b!.address], { retries: 10 }).inferRaw(request('t'), { timeoutMs: 300 }));
    console.log(`client-failover: deadline 300 ms, ${a!.calls + b!.calls} attempts, ${grpc.status[r.code]} after ${r.ms.toFixed(0)} ms`);
    expect(['UNAVAILABLE', 'DEADLINE_EXCEEDED']).toContain(grpc.status[r.code]);
    expect(r.ms).toBeLessThan(300 + 250);
    expect(a!.calls + b!.calls).toBeLessThanOrEqual(3);
  });

  it('ready, modelReady and metadata still work against a single address', async () => {
    const s = await serve(ok);
    const c = api(s.address, 1_000);
    expect(await c.ready()).toBe(true);
    expect(await c.modelReady('m')).toBe(true);
    expect((await c.metadata('m')).name).toBe('m');
    expect((await c.infer('m', [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }], { id: 'i' })).response.id).toBe('i');
    expect(c.client).toBe(c.clients[0]);
  });
});
