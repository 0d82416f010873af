/**
 * serveRawUnary against real grpc-js clients on loopback: the method served
 * off the raw HTTP/2 streams answers like a grpc-js server would (status,
 * percent-encoded message, trailers, deadline, cancel, size limit, gzip),
 * and every other method still reaches grpc-js on the same port.
 */
import http2 from 'node:http2';
import zlib from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGrpcServer, frameCopy, listen, parseGrpcTimeout, serveRawUnary, type RawLoad, type RawReply } from '../../libs/grpc/index.js';
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
      if (cmd === 'throw') throw new Error('handler bug');
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

/** One call over a raw HTTP/2 stream: `send` writes the body as it likes; resolves with headers, trailers and body. */
function rawCall(headers: http2.OutgoingHttpHeaders, send: (req: http2.ClientHttp2Stream) => unknown, session?: http2.ClientHttp2Session) {
  const s = session ?? http2.connect(`http://127.0.0.1:${port}`);
  return new Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer }>((resolve) => {
    const req = s.request({ ':method': 'POST', ':path': PATH, ...headers });
    let h: http2.IncomingHttpHeaders = {};
    const body: Buffer[] = [];
    req.on('response', (x) => (h = { ...h, ...x }));
    req.on('trailers', (x) => (h = { ...h, ...x }));
    req.on('data', (b: Buffer) => body.push(b));
    req.on('error', () => undefined);
    req.on('close', () => {
      if (!session) s.close();
      resolve({ headers: h, body: Buffer.concat(body) });
    });
    void send(req);
  });
}

async function until(ok: () => boolean, ms = 2_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
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
    await until(() => cancelled > before);
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

  it('a body in many DATA chunks (prefix split too) is put together; a single chunk is used as it is', async () => {
    const msg = Buffer.alloc(3000, 'abcdefgh');
    const framed = Buffer.concat([Buffer.from([0, 0, 0, 0x0b, 0xb8]), msg]);
    const pieces = [framed.subarray(0, 2), framed.subarray(2, 4), framed.subarray(4, 700), framed.subarray(700)];
    const r = await rawCall({ 'content-type': 'application/grpc' }, async (req) => {
      for (const p of pieces) {
        req.write(p);
        await new Promise((res) => setTimeout(res, 5));
      }
      req.end();
    });
    expect(r.headers['grpc-status']).toBe('0');
    expect(r.body.subarray(5).toString()).toBe(`echo:${msg.toString()}`);
  });

  it('bytes past the declared message end the call at once, before the caller stops sending', async () => {
    const r = await rawCall({ 'content-type': 'application/grpc' }, (req) => {
      req.write(Buffer.from([0, 0, 0, 0, 2, 0x41, 0x42, 0, 0, 0]));
      // Never ended: the answer must not wait for the end of the stream.
    });
    expect(r.headers['grpc-status']).toBe(String(Status.RESOURCE_EXHAUSTED));
    expect(r.headers['grpc-message']).toContain('more than the one message of 2 bytes');
  });

  it('a body still arriving when grpc-timeout passes gets DEADLINE_EXCEEDED from the headers on', async () => {
    const t0 = Date.now();
    const r = await rawCall({ 'content-type': 'application/grpc', 'grpc-timeout': '300m' }, (req) => {
      req.write(Buffer.from([0, 0, 0, 0, 9, 0x41]));
    });
    expect(r.headers['grpc-status']).toBe(String(Status.DEADLINE_EXCEEDED));
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('gzip is inflated off the event loop and bounded: past the limit → RESOURCE_EXHAUSTED; deflate works; an unknown encoding is named briefly', async () => {
    const gz = (b: Buffer, f: (b: Buffer) => Buffer = zlib.gzipSync) => {
      const c = f(b);
      const prefix = Buffer.from([1, 0, 0, 0, 0]);
      prefix.writeUInt32BE(c.length, 1);
      return Buffer.concat([prefix, c]);
    };
    // More at once than inflate together: the rest wait their turn, each still answered.
    const bomb = gz(Buffer.alloc(64 * MAX));
    const bombs = await Promise.all(Array.from({ length: 10 }, () => rawCall({ 'content-type': 'application/grpc', 'grpc-encoding': 'gzip' }, (req) => req.end(bomb))));
    for (const b of bombs) {
      expect(b.headers['grpc-status']).toBe(String(Status.RESOURCE_EXHAUSTED));
      expect(b.headers['grpc-message']).toContain('decompressed message larger than the limit');
    }
    const ok = await rawCall({ 'content-type': 'application/grpc', 'grpc-encoding': 'deflate' }, (req) => req.end(gz(Buffer.from('pressed'), zlib.deflateSync)));
    expect(ok.body.subarray(5).toString()).toBe('echo:pressed');
    const odd = await rawCall({ 'content-type': 'application/grpc', 'grpc-encoding': 'x'.repeat(5000) }, (req) => req.end(gz(Buffer.from('a'))));
    expect(odd.headers['grpc-status']).toBe(String(Status.UNIMPLEMENTED));
    expect(String(odd.headers['grpc-message']).length).toBeLessThan(120);
  });

  it('a handler that throws costs its own call (INTERNAL), not the process', async () => {
    const r = await call(PATH, Buffer.from('throw'));
    expect(r.err?.code).toBe(Status.INTERNAL);
    expect((await call(PATH, Buffer.from('fine'))).res!.toString()).toBe('echo:fine');
  });

  it('calls still receiving count toward the in-flight limit; a call over it is refused at its headers', async () => {
    const counters: RawLoad = { inflight: 0, receiving: 0, shed: 0 };
    const srv = createGrpcServer({ maxMessageBytes: MAX });
    const p = await listen(srv, '127.0.0.1', 0);
    expect(serveRawUnary(srv, PATH, (req, _h, _d, reply) => (reply(0, '', frameCopy(req)), null), { maxMessageBytes: MAX, load: { counters, maxInflight: 2, shedTrailers: { 'grpc-retry-pushback-ms': '9' } } })).toBe(true);
    const s = http2.connect(`http://127.0.0.1:${p}`);
    const slow = [0, 1].map(() => {
      const req = s.request({ ':method': 'POST', ':path': PATH, 'content-type': 'application/grpc' });
      req.on('error', () => undefined);
      req.write(Buffer.from([0, 0, 0, 0, 9]));
      return req;
    });
    await until(() => counters.receiving === 2);
    const shed = await rawCall({ 'content-type': 'application/grpc' }, (req) => req.end(Buffer.from([0, 0, 0, 0, 1, 0x41])), s);
    expect(shed.headers['grpc-status']).toBe(String(Status.RESOURCE_EXHAUSTED));
    expect(shed.headers['grpc-retry-pushback-ms']).toBe('9');
    expect(counters.shed).toBe(1);
    // Callers that go away mid-body free their slots.
    for (const r of slow) r.close(http2.constants.NGHTTP2_CANCEL);
    await until(() => counters.receiving === 0);
    const after = await rawCall({ 'content-type': 'application/grpc' }, (req) => req.end(Buffer.from([0, 0, 0, 0, 1, 0x41])), s);
    expect(after.headers['grpc-status']).toBe('0');
    s.close();
    srv.forceShutdown();
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
