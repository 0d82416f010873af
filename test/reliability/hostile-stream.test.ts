/**
 * Hostile streams against a real router (and the replica behind it): what a
 * caller sends on the wire must never cost the router more than its own
 * call, and never fail anyone else's. Raw HTTP/2 frames come from Debian's
 * python3-h2 (hostile-h2-client.py); grpc-js and grpcio cannot send them.
 * Meanwhile other callers score small requests (no client retries) and must
 * see no failure.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { channelOptions, rawBytes } from '../../libs/grpc/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { oip } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { alive, outcome, type Outcome } from './helpers.js';

const run = promisify(execFile);
const CLIENT = path.join(import.meta.dirname, 'hostile-h2-client.py');
const INFER_PATH = '/inference.GRPCInferenceService/ModelInfer';
const LIMIT = 4 * 1024 * 1024;
const MiB = 1024 * 1024;

let mesh: Mesh;
let raw: grpc.Client;
let port = 0;
// Output as wide as the input: a large request has an equally large answer (both directions of the link).
const model = mlpModel({ inputs: 8, hidden: [16], outputs: 8, seed: 12 });
const small = [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: [1, 0, 1, 0, 1, 0, 1, 0] }];

/** A serialized ModelInferRequest for `rows` rows of `model` (raw FP32 contents). */
function request(rows: number, o: { name?: string; version?: string } = {}): Buffer {
  const msg = oip.ModelInferRequest.fromPartial({
    modelName: o.name ?? 'wide',
    modelVersion: o.version ?? '',
    inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 8] }],
    rawInputContents: [Buffer.alloc(rows * 32, 0x3c)],
  });
  return Buffer.from(oip.ModelInferRequest.encode(msg).finish());
}

function sendRaw(bytes: Buffer, timeoutMs = 20_000): Promise<Outcome> {
  return outcome(
    new Promise((resolve, reject) => {
      raw.makeUnaryRequest(INFER_PATH, rawBytes.serialize, rawBytes.deserialize, bytes, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(err) : resolve(res),
      );
    }),
  );
}

/**
 * Other callers: small requests in a loop, no retries (a failure must show),
 * every outcome kept. They score another model on the same replica, so they
 * share the router→replica link with the hostile calls but not its queue.
 */
function bystanders(callers = 4) {
  const answers: Outcome[] = [];
  let stop = false;
  const loop = async () => {
    while (!stop) answers.push(await outcome(mesh.clients.router.infer('side', small, { timeoutMs: 5_000, retries: 0 })));
  };
  const loops = Array.from({ length: callers }, loop);
  return {
    answers,
    async stop() {
      stop = true;
      await Promise.all(loops);
      return answers;
    },
  };
}

function p99(xs: Outcome[]): number {
  const ms = xs.map((x) => x.ms).sort((a, b) => a - b);
  return ms[Math.min(ms.length - 1, Math.floor(ms.length * 0.99))] ?? 0;
}

const failed = (xs: Outcome[]) => xs.filter((x) => x.code !== 0).map((x) => `${grpc.status[x.code] ?? x.code}: ${x.details}`);

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

async function h2client(...args: (string | number)[]): Promise<{ status: number | null; message: string | null; reset: number | null; sent: number; seconds: number }> {
  const { stdout } = await run('/usr/bin/python3', [CLIENT, args[0]!.toString(), '127.0.0.1', String(port), ...args.slice(1).map(String)], { timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 1 });
  port = Number(mesh.router.info.grpcPort);
  raw = new grpc.Client(mesh.routerAddr, grpc.credentials.createInsecure(), channelOptions(64 * MiB));
  await mesh.clients.registry.push(model.bytes, { name: 'wide', alias: 'production' });
  await mesh.clients.registry.push(model.bytes, { name: 'side', alias: 'production' });
  await mesh.waitReady('wide');
  await mesh.waitReady('side');
}, 60_000);
afterAll(async () => {
  raw?.close();
  await mesh?.stop();
});

describe('hostile streams', () => {
  it('a valid message followed by 256 MiB more on the same stream: answered at once, router RSS grows < 64 MiB', async () => {
    const pid = mesh.router.proc.pid!;
    const others = bystanders(2);
    const base = rssBytes(pid);
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 20);
    const r = await h2client('overlong', request(1).toString('hex'), 256 * MiB);
    clearInterval(sampler);
    peak = Math.max(peak, rssBytes(pid));
    const answers = await others.stop();
    console.log(`hostile-stream: over-long body answered ${r.status} after ${r.sent} bytes in ${r.seconds.toFixed(3)} s; router RSS +${((peak - base) / MiB).toFixed(1)} MiB`);
    expect(r.status === grpc.status.RESOURCE_EXHAUSTED || r.reset !== null, JSON.stringify(r)).toBe(true);
    expect(r.sent).toBeLessThan(64 * MiB);
    expect(peak - base).toBeLessThan(64 * MiB);
    expect(alive(mesh.router)).toBe(true);
    expect(failed(answers)).toEqual([]);
  });

  it('a body trickling in with grpc-timeout: 2S gets DEADLINE_EXCEEDED within 2.5 s', async () => {
    const r = await h2client('trickle', request(1).toString('hex'), '2S', 0.2);
    expect(r.status, JSON.stringify(r)).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(r.seconds).toBeLessThan(2.5);
    expect(alive(mesh.router)).toBe(true);
  });

  it('200 small gzip requests inflating to ~4 MiB: refused or answered, others see no failure and p99 < 250 ms', async () => {
    const framed = (msg: Buffer) => {
      const gz = zlib.gzipSync(msg);
      const prefix = Buffer.from([1, 0, 0, 0, 0]);
      prefix.writeUInt32BE(gz.length, 1);
      return Buffer.concat([prefix, gz]);
    };
    // Just past the limit once inflated (a bomb), and just under it (a real message for an unknown model).
    const bomb = framed(Buffer.alloc(LIMIT + 4096));
    const under = framed(Buffer.concat([Buffer.from([0x0a, 6]), Buffer.from('absent'), Buffer.from([0x1a, 0x80, 0x80, 0xf8, 0x01]), Buffer.alloc(LIMIT - 128 * 1024)]));
    const others = bystanders(4);
    await new Promise((r) => setTimeout(r, 200));
    const session = http2.connect(`http://${mesh.routerAddr}`);
    const ask = (body: Buffer) =>
      new Promise<{ status: string; ms: number }>((resolve) => {
        const t0 = performance.now();
        const req = session.request({ ':method': 'POST', ':path': INFER_PATH, 'content-type': 'application/grpc', 'grpc-encoding': 'gzip', te: 'trailers' });
        let status = '';
        req.on('response', (h) => (status ||= String(h['grpc-status'] ?? '')));
        req.on('trailers', (h) => (status ||= String(h['grpc-status'] ?? '')));
        req.on('data', () => undefined);
        req.on('error', () => undefined);
        req.on('close', () => resolve({ status, ms: performance.now() - t0 }));
        req.end(body);
      });
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => ask(i % 2 ? bomb : under)));
    const floodMs = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 200));
    const answers = await others.stop();
    session.close();
    const bombs = results.filter((_, i) => i % 2 === 1);
    console.log(
      `hostile-stream: 200 gzip requests (${bomb.length} and ${under.length} bytes on the wire) answered in ${floodMs.toFixed(0)} ms; bombs ${JSON.stringify(countBy(bombs.map((b) => b.status)))}, ` +
        `others ${answers.length} calls, p99 ${p99(answers).toFixed(1)} ms`,
    );
    for (const b of bombs) expect(b.status).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    // Quickly, each: a bomb costs inflating up to the limit, no more.
    expect(Math.max(...bombs.map((b) => b.ms))).toBeLessThan(10_000);
    for (const u of results.filter((_, i) => i % 2 === 0)) expect(u.status).toBe(String(grpc.status.NOT_FOUND));
    expect(failed(answers)).toEqual([]);
    expect(answers.length).toBeGreaterThan(20);
    expect(p99(answers)).toBeLessThan(250);
  });

  it('a 100 KB model_version or alias gets INVALID_ARGUMENT naming the field, in a short message', async () => {
    const cases: [string, Buffer, string][] = [
      ['version of letters', request(1, { version: 'v'.repeat(100_000) }), 'model_version'],
      ['version of digits', request(1, { version: '9'.repeat(100_000) }), 'model_version'],
      ['@alias', request(1, { name: `wide@${'a'.repeat(100_000)}` }), 'model_name'],
      ['name', request(1, { name: 'n'.repeat(100_000) }), 'model_name'],
    ];
    for (const [what, bytes, field] of cases) {
      const o = await sendRaw(bytes);
      expect(grpc.status[o.code], `${what}: ${o.details.slice(0, 300)}`).toBe('INVALID_ARGUMENT');
      expect(o.details.length, what).toBeLessThan(200);
      expect(o.details, what).toContain(field);
    }
  });

  it('8 × 1 MB requests at once and one just under 4 MiB succeed or fail alone: nobody else sees UNAVAILABLE', async () => {
    const others = bystanders(4);
    const mb = request(32_768);
    const nearLimit = request(Math.floor((LIMIT - 256) / 32));
    expect(nearLimit.length).toBeLessThan(LIMIT);
    const big = await Promise.all([...Array.from({ length: 8 }, () => sendRaw(mb)), sendRaw(nearLimit)]);
    // Again, finishing together with the small calls in flight.
    const again = await Promise.all(Array.from({ length: 8 }, () => sendRaw(mb)));
    const answers = await others.stop();
    console.log(`hostile-stream: 1 MB ×8 ${JSON.stringify(countBy(big.slice(0, 8).map((o) => grpc.status[o.code]!)))} then ${JSON.stringify(countBy(again.map((o) => grpc.status[o.code]!)))}, near-limit ${grpc.status[big[8]!.code]} ${big[8]!.details}, others ${answers.length} calls`);
    // Each big call succeeds or fails on its own account: too large (RESOURCE_EXHAUSTED) or refused by the
    // replica's queue estimate (DEADLINE_EXCEEDED, which counts a 32k-row request as 512 batches); never a
    // broken link (UNAVAILABLE).
    for (const o of [...big, ...again]) expect(['OK', 'RESOURCE_EXHAUSTED', 'DEADLINE_EXCEEDED'], o.details).toContain(grpc.status[o.code]);
    expect(big.slice(0, 8).filter((o) => o.code === 0).length).toBeGreaterThan(0);
    expect(failed(answers)).toEqual([]);
    for (const o of [...big, ...again, ...answers]) expect(o.details).not.toMatch(/inference-|replica-[0-9a-f]|127\.0\.0\.1/);
  });

  it('REST bodies whose tensors encode larger than their JSON: 413 past the limit, never a broken link', async () => {
    const base = `http://127.0.0.1:${mesh.router.info.restPort}/v1/models/wide:predict`;
    const body = (rows: number) => `{"inputs":[${Array.from({ length: rows }, () => '[0,0,0,0,0,0,0,0]').join(',')}]}`;
    const others = bystanders(4);
    // 2.2 MB of JSON encodes to 3.9 MB (under the limit); 4 MB of JSON to 7.4 MB (over it).
    const underBody = body(122_000);
    const overBody = body(230_000);
    const [under, over] = await Promise.all([
      fetch(base, { method: 'POST', body: underBody, headers: { 'content-type': 'application/json' } }),
      fetch(base, { method: 'POST', body: overBody, headers: { 'content-type': 'application/json' } }),
    ]);
    const overText = await over.text();
    await under.arrayBuffer();
    const answers = await others.stop();
    console.log(`hostile-stream: REST ${(underBody.length / 1e6).toFixed(1)} MB → ${under.status}, ${(overBody.length / 1e6).toFixed(1)} MB → ${over.status} ${overText.slice(0, 120)}`);
    expect([200, 413]).toContain(under.status);
    expect(over.status).toBe(413);
    expect(failed(answers)).toEqual([]);
    expect(alive(mesh.router)).toBe(true);
    expect(alive(mesh.replicas[0]!)).toBe(true);
  });
});

function countBy(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}
