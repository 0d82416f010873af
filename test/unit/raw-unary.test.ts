/**
 * serveRawUnary against real grpc-js clients on loopback: the method served
 * off the raw HTTP/2 streams answers like a grpc-js server would (status,
 * percent-encoded message, trailers, deadline, cancel, size limit, gzip),
 * and every other method still reaches grpc-js on the same port.
 */
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGrpcServer, frameCopy, listen, parseGrpcTimeout, serveRawUnary, type RawReply } from '../../libs/grpc/index.js';
import { Status } from '../../libs/errors/index.js';

const PATH = '/test.Raw/Call';
const OTHER = '/test.Raw/Other';
const MAX = 4096;
const id = (b: Buffer) => b;
let server: grpc.Server;
let port = 0;
let client: grpc.Client;
/** What the handler saw, per call (by the request's first byte). */
const seen: { deadlineMs: number; priority: string[] }[] = [];
let cancelled = 0;
let held: RawReply | null = null;

beforeAll(async () => {
  server = createGrpcServer({ maxMessageBytes: MAX });
  const def = (path: string) => ({ path, requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id });
  server.addService({ Call: def(PATH), Other: def(OTHER) } as unknown as grpc.ServiceDefinition, {
    Call: (_c: unknown, cb: grpc.sendUnaryData<Buffer>) => cb({ code: Status.INTERNAL, details: 'grpc-js handler reached' }),
    Other: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.concat([Buffer.from('other:'), call.request])),
  });
  port = await listen(server, '127.0.0.1', 0);
  const ok = serveRawUnary(
    server,
    PATH,
    (req, headers, deadlineMs, reply) => {
      seen.push({ deadlineMs, priority: headers.get('x-priority').map(String) });
      const cmd = req.toString();
      if (cmd === 'hold') {
        held = reply;
        return () => cancelled++;
      }
      if (cmd.startsWith('fail:')) reply(Status.INVALID_ARGUMENT, cmd.slice(5), null, { 'grpc-retry-pushback-ms': '7' });
      else if (cmd === 'big') reply(0, '', frameCopy(Buffer.alloc(MAX + 1)));
      else reply(0, '', frameCopy(Buffer.concat([Buffer.from('echo:'), req])));
      return null;
    },
    { maxMessageBytes: MAX },
  );
  expect(ok).toBe(true);
  client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
});
afterAll(() => {
  client?.close();
  server?.forceShutdown();
});

function call(path: string, body: Buffer, o: { deadlineMs?: number; md?: grpc.Metadata; c?: grpc.Client } = {}) {
  return new Promise<{ err: grpc.ServiceError | null; res?: Buffer; trailers?: grpc.Metadata }>((resolve) => {
    let trailers: grpc.Metadata | undefined;
    const opts: grpc.CallOptions = o.deadlineMs ? { deadline: Date.now() + o.deadlineMs } : {};
    const c = (o.c ?? client).makeUnaryRequest(path, id, id, body, o.md ?? new grpc.Metadata(), opts, (err, res) => resolve({ err, res, trailers: err?.metadata ?? trailers }));
    c.on('status', (s: grpc.StatusObject) => (trailers = s.metadata));
  });
}

describe('serveRawUnary', () => {
  it('answers the method itself, with headers read and a deadline taken from grpc-timeout', async () => {
    const md = new grpc.Metadata();
    md.set('x-priority', '3');
    const before = Date.now();
    const r = await call(PATH, Buffer.from('hi'), { deadlineMs: 5_000, md });
    expect(r.err).toBeNull();
    expect(r.res!.toString()).toBe('echo:hi');
    const s = seen.at(-1)!;
    expect(s.priority).toEqual(['3']);
    expect(s.deadlineMs).toBeGreaterThan(before + 4_000);
    expect(s.deadlineMs).toBeLessThanOrEqual(Date.now() + 5_000);
    await call(PATH, Buffer.from('x'));
    expect(seen.at(-1)!.deadlineMs).toBe(Infinity);
  });

  it('an error is a trailers-only answer: code, percent-encoded message, extra trailers', async () => {
    const r = await call(PATH, Buffer.from('fail:field “x” is 100% wrong'));
    expect(r.err?.code).toBe(Status.INVALID_ARGUMENT);
    expect(r.err?.details).toBe('field “x” is 100% wrong');
    expect(r.trailers?.get('grpc-retry-pushback-ms')).toEqual(['7']);
  });

  it('other methods on the same port are still grpc-js', async () => {
    const r = await call(OTHER, Buffer.from('z'));
    expect(r.err).toBeNull();
    expect(r.res!.toString()).toBe('other:z');
  });

  it('a request over the limit is RESOURCE_EXHAUSTED naming the sizes; an answer over it too', async () => {
    const r = await call(PATH, Buffer.alloc(MAX + 10));
    expect(r.err?.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(r.err?.details).toBe(`request: message of ${MAX + 10} bytes is larger than the limit of ${MAX} bytes`);
    const a = await call(PATH, Buffer.from('big'));
    expect(a.err?.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(a.err?.details).toContain('response: message of');
    // The server is unharmed.
    expect((await call(PATH, Buffer.from('ok'))).res!.toString()).toBe('echo:ok');
  });

  it('a gzip-compressed request is decompressed', async () => {
    const gz = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_compression_algorithm': 2 });
    const r = await call(PATH, Buffer.from('squeezed'.repeat(50)), { c: gz });
    gz.close();
    expect(r.err).toBeNull();
    expect(r.res!.toString()).toBe(`echo:${'squeezed'.repeat(50)}`);
  });

  it('a caller that goes away before the answer runs the cancel function once; a late answer is dropped', async () => {
    const before = cancelled;
    const c = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const pending = new Promise<grpc.ServiceError | null>((resolve) => {
      const ca = c.makeUnaryRequest(PATH, id, id, Buffer.from('hold'), (err) => resolve(err));
      setTimeout(() => ca.cancel(), 100);
    });
    expect((await pending)?.code).toBe(Status.CANCELLED);
    await new Promise((r) => setTimeout(r, 100));
    expect(cancelled).toBe(before + 1);
    held!(0, '', frameCopy(Buffer.from('late')));
    c.close();
    expect((await call(PATH, Buffer.from('after'))).res!.toString()).toBe('echo:after');
  });

  it('a body that is not gRPC, or a malformed grpc-timeout, gets a clear answer', async () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    const ask = (headers: http2.OutgoingHttpHeaders, body: Buffer) =>
      new Promise<http2.IncomingHttpHeaders>((resolve) => {
        const req = s.request({ ':method': 'POST', ':path': PATH, ...headers });
        let h: http2.IncomingHttpHeaders = {};
        req.on('response', (x) => (h = { ...h, ...x }));
        req.on('trailers', (x) => (h = { ...h, ...x }));
        req.on('data', () => undefined);
        req.on('close', () => resolve(h));
        req.end(body);
      });
    expect((await ask({ 'content-type': 'text/plain' }, Buffer.from('x')))[':status']).toBe(415);
    const frame = Buffer.from([0, 0, 0, 0, 1, 0x41]);
    const t = await ask({ 'content-type': 'application/grpc', 'grpc-timeout': '1x' }, frame);
    expect(t['grpc-status']).toBe(String(Status.INTERNAL));
    expect(t['grpc-message']).toContain('grpc-timeout');
    const trunc = await ask({ 'content-type': 'application/grpc' }, Buffer.from([0, 0, 0, 0, 9, 0x41]));
    expect(trunc['grpc-status']).toBe(String(Status.INTERNAL));
    expect(trunc['grpc-message']).toBe('request: message truncated');
    const none = await ask({ 'content-type': 'application/grpc' }, Buffer.alloc(0));
    expect(none['grpc-status']).toBe(String(Status.UNIMPLEMENTED));
    s.close();
  });

  it('parses grpc-timeout units', () => {
    expect(parseGrpcTimeout('2S')).toBe(2000);
    expect(parseGrpcTimeout('150m')).toBe(150);
    expect(parseGrpcTimeout('1H')).toBe(3_600_000);
    expect(parseGrpcTimeout('3M')).toBe(180_000);
    expect(parseGrpcTimeout('500u')).toBe(0.5);
    expect(parseGrpcTimeout('1000000n')).toBe(1);
    expect(parseGrpcTimeout('123456789S')).toBeNaN();
    expect(parseGrpcTimeout('5')).toBeNaN();
  });
});
