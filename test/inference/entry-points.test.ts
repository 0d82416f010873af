/**
 * A replica's three front doors — the raw HTTP/2 ModelInfer path (default),
 * grpc-js's ModelInfer handler (--http2-infer=false) and the router's
 * multiplexed Runtime stream — build their request with one constructor, so
 * they cannot disagree. One test per former disagreement: deadline capping,
 * the status of bytes that are not a ModelInferRequest, priority parsing.
 * The Runtime stream itself has two transports (runtime-link.ts on the raw
 * HTTP/2 streams, default; grpc-js's handler with --http2-link=false): the
 * same answers and the same bounds on both.
 * Real replicas (one per path) on one nats-server and registry.
 */
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInferRequest } from '../../libs/client/index.js';
import { deadlineAfter, parsePriority, remainingMsOf } from '../../libs/call-meta/index.js';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import { mlpModel, slowModel } from '../../libs/onnx-builder/index.js';
import { oip, RequestFrame, ResponseFrame } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

const MODEL_INFER = oip.GRPCInferenceServiceService.modelInfer.path;
const RUNTIME_INFER = '/infermesh.v1.Runtime/Infer';
/** The replicas' longest (and default) deadline. */
const CAP_MS = 100;

const mlp = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 3 });
// Nominally 400 ms (at least ~150 ms on a fast host): longer than the cap, whatever the host.
const slow = slowModel({ millis: 400 });
let mesh: Mesh;
let rawAddr: string;
let grpcJsAddr: string;
const versions: Record<string, number> = {};

const body = (model: string, inputs: { name: string; shape: number[]; data: number[] }[]) =>
  Buffer.from(oip.ModelInferRequest.encode(buildInferRequest(model, inputs.map((i) => ({ ...i, datatype: 'FP32' })))).finish());
const mlpBody = () => body('mlp', [{ name: 'features', shape: [1, 4], data: [0.1, 0.2, 0.3, 0.4] }]);
const slowBody = () => body('slow', [{ name: 'x', shape: [1, 1], data: [1] }]);

type Answer = { code: number; details: string };

/** One ModelInfer through a replica's direct door (raw or grpc-js, by address). */
function direct(addr: string, bytes: Buffer, o: { deadlineMs?: number; priority?: string } = {}): Promise<Answer> {
  const c = new grpc.Client(addr, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  if (o.priority !== undefined) md.set('x-infermesh-priority', o.priority);
  return new Promise((resolve) => {
    c.makeUnaryRequest(MODEL_INFER, (b: Buffer) => b, (b: Buffer) => b, bytes, md, { deadline: Date.now() + (o.deadlineMs ?? 60_000) }, (err) => {
      c.close();
      resolve(err ? { code: err.code, details: err.details } : { code: 0, details: '' });
    });
  });
}

/** One item through the Runtime stream, as the router sends it. */
function stream(addr: string, model: string, bytes: Uint8Array, o: { timeoutMs?: number; priority?: number } = {}): Promise<Answer> {
  const c = new grpc.Client(addr, grpc.credentials.createInsecure());
  const call = c.makeBidiStreamRequest(RUNTIME_INFER, (b: Buffer) => b, (b: Buffer) => b);
  return new Promise((resolve, reject) => {
    call.on('data', (b: Buffer) => {
      const item = ResponseFrame.decode(b).items[0]!;
      call.end();
      c.close();
      resolve({ code: item.code, details: item.message });
    });
    call.on('error', reject);
    const frame = RequestFrame.encode({
      items: [{ id: 1, model, version: versions[model]!, timeoutMicros: (o.timeoutMs ?? 60_000) * 1000, traceparent: '', request: bytes, priority: o.priority ?? 0, cancel: false }],
    }).finish();
    call.write(Buffer.from(frame));
  });
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 1, inferenceArgs: ['--default-timeout-ms', String(CAP_MS)] });
  await mesh.addReplica(['--http2-infer=false', '--http2-link=false']);
  const [a, b] = mesh.replicas;
  expect(a!.info.modelInfer).toBe('http2');
  expect(b!.info.modelInfer).toBe('grpc-js');
  expect(a!.info.runtimeLink).toBe('http2');
  expect(b!.info.runtimeLink).toBe('grpc-js');
  rawAddr = String(a!.info.address);
  grpcJsAddr = String(b!.info.address);
  versions.mlp = (await mesh.clients.registry.push(mlp.bytes, { name: 'mlp', alias: 'production' })).version;
  versions.slow = (await mesh.clients.registry.push(slow.bytes, { name: 'slow', alias: 'production', batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 } })).version;
  // Each replica serves both models (direct ModelReady: the router is not involved).
  for (const addr of [rawAddr, grpcJsAddr]) {
    for (const m of ['mlp', 'slow']) {
      const until = Date.now() + 60_000;
      for (;;) {
        const ok = await new Promise<boolean>((resolve) => {
          const c = new grpc.Client(addr, grpc.credentials.createInsecure());
          const req = Buffer.from(oip.ModelReadyRequest.encode({ name: m, version: '' }).finish());
          c.makeUnaryRequest('/inference.GRPCInferenceService/ModelReady', (x: Buffer) => x, (x: Buffer) => x, req, (err, res) => {
            c.close();
            resolve(!err && !!res && oip.ModelReadyResponse.decode(res).ready);
          });
        });
        if (ok) break;
        if (Date.now() > until) throw new Error(`${m} not ready on ${addr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}, 120_000);
afterAll(async () => {
  await mesh?.stop();
});

describe('one request constructor behind every front door of a replica', () => {
  it('caps every deadline at the replica\'s longest: a 60 s call to a model slower than the cap is refused at once on all three doors', async () => {
    const answers = [await direct(rawAddr, slowBody()), await direct(grpcJsAddr, slowBody()), await stream(rawAddr, 'slow', slowBody())];
    for (const a of answers) expect(a).toEqual({ code: grpc.status.DEADLINE_EXCEEDED, details: 'deadline cannot be met: the queue ahead takes longer' });
    // The cap refuses only what cannot fit in it: a fast model with the same 60 s deadline is served on all three.
    const fast = [await direct(rawAddr, mlpBody()), await direct(grpcJsAddr, mlpBody()), await stream(rawAddr, 'mlp', mlpBody())];
    expect(fast).toEqual([{ code: 0, details: "" }, { code: 0, details: "" }, { code: 0, details: "" }]);
  });

  it('answers bytes that are not a ModelInferRequest INVALID_ARGUMENT naming the request, on all three doors', async () => {
    const junk = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    const answers = [await direct(rawAddr, junk), await direct(grpcJsAddr, junk), await stream(rawAddr, 'mlp', junk)];
    for (const a of answers) expect(a).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: 'request: malformed ModelInferRequest' });
  });

  it('parses x-infermesh-priority one way: "1.5" is INVALID_ARGUMENT naming the header on both direct doors; "1" is bulk and served', async () => {
    for (const addr of [rawAddr, grpcJsAddr]) {
      const bad = await direct(addr, mlpBody(), { priority: '1.5' });
      expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(bad.details.startsWith('x-infermesh-priority: ')).toBe(true);
      expect((await direct(addr, mlpBody(), { priority: '1' })).code).toBe(0);
    }
    // The stream carries the router's parsed number: the same parser takes it.
    expect((await stream(rawAddr, 'mlp', mlpBody(), { priority: 1 })).code).toBe(0);
  });
});

describe('libs/call-meta: the one priority parser and deadline normaliser (router and replicas)', () => {
  it('parsePriority: absent 0; decimal integers, capped at 255; anything else INVALID_ARGUMENT naming the header', () => {
    expect(parsePriority(undefined)).toBe(0);
    expect(parsePriority('0')).toBe(0);
    expect(parsePriority('3')).toBe(3);
    expect(parsePriority(Buffer.from('7'))).toBe(7);
    expect(parsePriority('1000')).toBe(255);
    expect(parsePriority(2)).toBe(2);
    for (const bad of ['1.5', '-1', 'high', '', '1e3', 1.5, -1]) {
      expect(() => parsePriority(bad), String(bad)).toThrow(InvalidArgumentError);
      try {
        parsePriority(bad);
      } catch (err) {
        expect((err as InvalidArgumentError).code).toBe(grpc.status.INVALID_ARGUMENT);
        expect((err as InvalidArgumentError).field).toBe('x-infermesh-priority');
      }
    }
  });

  it('deadlineAfter: monotonic milliseconds, capped; no budget gets the cap; a spent one is already past', () => {
    expect(deadlineAfter(50, 100, 1000)).toBe(1050);
    expect(deadlineAfter(60_000, 100, 1000)).toBe(1100);
    expect(deadlineAfter(Infinity, 100, 1000)).toBe(1100);
    expect(deadlineAfter(Number.NaN, 100, 1000)).toBe(1100);
    expect(deadlineAfter(-5, 100, 1000)).toBe(1000);
    expect(remainingMsOf(Infinity)).toBe(Infinity);
    expect(Math.abs(remainingMsOf(new Date(Date.now() + 1000)) - 1000)).toBeLessThan(50);
  });
});

type Ended = { status: number; message: string; items: { id: number; code: number; message: string }[] };

/**
 * A Runtime stream written by hand (node:http2): `chunks` as DATA; once
 * `answers` items came back it half-closes. Resolves when the stream closes,
 * with its grpc-status and the items answered.
 */
function rawStream(addr: string, chunks: Buffer[], answers = Infinity): Promise<Ended> {
  const session = http2.connect(`http://${addr}`);
  session.on('error', () => undefined);
  const req = session.request({ ':method': 'POST', ':path': RUNTIME_INFER, 'content-type': 'application/grpc', te: 'trailers' });
  let got = Buffer.alloc(0);
  const r: Ended = { status: -1, message: '', items: [] };
  const onHeaders = (h: http2.IncomingHttpHeaders) => {
    if (h['grpc-status'] === undefined) return;
    r.status = Number(h['grpc-status']);
    r.message = decodeURIComponent(String(h['grpc-message'] ?? ''));
    // The status ends the call; a server that did not reset the stream waits for our end.
    if (!req.writableEnded) req.end();
  };
  req.on('response', onHeaders);
  req.on('trailers', onHeaders);
  req.on('error', () => undefined);
  req.on('data', (b: Buffer) => {
    got = Buffer.concat([got, b]);
    while (got.length >= 5 && got.length >= 5 + got.readUInt32BE(1)) {
      const n = got.readUInt32BE(1);
      for (const it of ResponseFrame.decode(got.subarray(5, 5 + n)).items) r.items.push({ id: it.id, code: it.code, message: it.message });
      got = got.subarray(5 + n);
    }
    if (r.items.length >= answers && !req.writableEnded) req.end();
  });
  return new Promise((resolve) => {
    req.on('close', () => {
      session.close();
      resolve(r);
    });
    const write = (i: number) => {
      if (i < chunks.length && !req.destroyed && !req.writableEnded) req.write(chunks[i]!, () => setImmediate(write, i + 1));
    };
    write(0);
  });
}

const framed = (msg: Uint8Array, flag = 0) => {
  const b = Buffer.alloc(5 + msg.length);
  b[0] = flag;
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
};
const requestFrame = (ids: number[]) =>
  RequestFrame.encode({ items: ids.map((id) => ({ id, model: 'mlp', version: versions.mlp!, timeoutMicros: 10_000_000, traceparent: '', request: mlpBody(), priority: 0, cancel: false })) }).finish();

describe('the Runtime stream on both transports (raw HTTP/2, grpc-js)', () => {
  it('answers every item whatever the DATA chunks (two frames in one, a frame byte by byte); a half-close ends it OK', async () => {
    for (const addr of [rawAddr, grpcJsAddr]) {
      const split = framed(requestFrame([4]));
      const pieces = Array.from({ length: split.length }, (_, i) => split.subarray(i, i + 1));
      const r = await rawStream(addr, [Buffer.concat([framed(requestFrame([1, 2])), framed(requestFrame([3]))]), ...pieces], 4);
      expect(r.items.map((i) => [i.id, i.code]).sort(), addr).toEqual([[1, 0], [2, 0], [3, 0], [4, 0]]);
      expect(r.status, addr).toBe(grpc.status.OK);
    }
  });

  it('a frame that is not a RequestFrame ends the stream INVALID_ARGUMENT; one declared over the link limit RESOURCE_EXHAUSTED before its body arrives; the replica serves on', async () => {
    for (const addr of [rawAddr, grpcJsAddr]) {
      const bad = await rawStream(addr, [framed(Buffer.from([0x0a, 0x05, 0x08]))]);
      expect(bad.status, addr === rawAddr ? 'raw' : 'grpc-js').toBe(grpc.status.INVALID_ARGUMENT);
      // 1 GiB declared, 16 bytes sent: refused at the prefix, nothing waits for the rest.
      const huge = Buffer.alloc(21);
      huge.writeUInt32BE(1 << 30, 1);
      const big = await rawStream(addr, [huge]);
      expect(big.status, addr).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect((await stream(addr, 'mlp', mlpBody())).code, addr).toBe(0);
    }
    // Compressed messages: no router compresses the link; the raw transport says so.
    const gz = await rawStream(rawAddr, [framed(requestFrame([1]), 1)]);
    expect(gz).toMatchObject({ status: grpc.status.UNIMPLEMENTED, message: 'runtime stream: compressed messages are not accepted' });
  });
});
