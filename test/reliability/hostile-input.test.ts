/**
 * Hostile requests: an oversized message, deeply nested protobuf, random
 * bytes and path-like names. Each gets one terminal status; neither the
 * router nor the replica behind it goes down, and nothing is stored.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInferRequest } from '../../libs/client/index.js';
import { channelOptions, rawBytes } from '../../libs/grpc/index.js';
import { mlpModel, mulberry32 } from '../../libs/onnx-builder/index.js';
import { oip } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { alive, eventually, outcome, ReplicaRecords, type Outcome } from './helpers.js';

let mesh: Mesh;
let raw: grpc.Client;
let records: ReplicaRecords;
const model = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 34 });
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: [1, 0, 1, 0, 1, 0, 1, 0] }];
const INFER_PATH = '/inference.GRPCInferenceService/ModelInfer';
const BAD_NAMES = ['../x', '/etc/passwd', '', 'a/b', 'a.b', '*', '>'];

/** Sends `bytes` as a ModelInferRequest exactly as given (identity serializers). */
function sendRaw(bytes: Buffer, timeoutMs = 5_000): Promise<Outcome> {
  return outcome(
    new Promise((resolve, reject) => {
      raw.makeUnaryRequest(INFER_PATH, rawBytes.serialize, rawBytes.deserialize, bytes, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(err) : resolve(res),
      );
    }),
  );
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

/** One length-delimited field: tag (wire type 2), length, payload. */
const lenField = (field: number, payload: Buffer) => Buffer.concat([varint((field << 3) | 2), varint(payload.length), payload]);
const modelName = (name: string) => lenField(1, Buffer.from(name));

/** The router and the replica are both still running and the router still serves. */
async function stillServing(): Promise<void> {
  expect(alive(mesh.router)).toBe(true);
  expect(alive(mesh.replicas[0]!)).toBe(true);
  const r = await mesh.clients.router.infer('risk', input);
  expect(r.outputs[0]!.data[0] as number).toBeCloseTo(model.forward(input[0]!.data as number[])[0]!, 5);
  // Nothing left in flight on the replica (from a heartbeat written after the calls).
  const since = Date.now();
  const rec = await eventually(
    () => records.of(mesh.replicas[0]!),
    (x) => Number(x?.updatedAtMs ?? 0) > since && x?.stats?.outstanding === 0,
    5_000,
  );
  expect(rec?.stats?.outstanding).toBe(0);
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 1 });
  records = await ReplicaRecords.connect(mesh.nats.url);
  raw = new grpc.Client(mesh.routerAddr, grpc.credentials.createInsecure(), channelOptions(64 * 1024 * 1024));
  await mesh.clients.registry.push(model.bytes, { name: 'risk', alias: 'production' });
  await mesh.waitReady('risk');
});
afterAll(async () => {
  raw?.close();
  await records?.close();
  await mesh?.stop();
});

describe('hostile input', () => {
  it('a message over 4 MiB → RESOURCE_EXHAUSTED, and the router still serves', async () => {
    const rows = 150_000; // 1.2 M FP32 elements, 4.8 MB of raw input
    const big = [{ name: 'features', datatype: 'FP32', shape: [rows, 8], data: new Array<number>(rows * 8).fill(0.5) }];
    const o = await outcome(mesh.clients.router.infer('risk', big, { timeoutMs: 10_000 }));
    expect(grpc.status[o.code], o.details).toBe('RESOURCE_EXHAUSTED');
    // The same through the raw path, and more than once: the router must not accumulate anything.
    const bytes = Buffer.from(oip.ModelInferRequest.encode(buildInferRequest('risk', big)).finish());
    for (let i = 0; i < 3; i++) expect(grpc.status[(await sendRaw(bytes, 10_000)).code]).toBe('RESOURCE_EXHAUSTED');
    await stillServing();
  });

  it('deeply nested protobuf → INVALID_ARGUMENT, both processes alive', async () => {
    // inputs (5) → contents (5) → … 2,000 levels of length-delimited fields around garbage.
    let nested = Buffer.from('garbage');
    for (let i = 0; i < 2_000; i++) nested = lenField(5, nested);
    const cases: [string, Buffer][] = [['field 5 nested 2,000 levels', Buffer.concat([modelName('risk'), nested])]];
    // A parameters map entry whose InferParameter value holds 2,000 levels of nested fields.
    let param = Buffer.from('garbage');
    for (let i = 0; i < 2_000; i++) param = lenField(3, lenField(5, param));
    cases.push(['parameters value nested 2,000 levels', Buffer.concat([modelName('risk'), lenField(4, Buffer.concat([lenField(1, Buffer.from('k')), lenField(2, param)]))])]);
    // 100,000 nested start-group tags: at the top level (the router's scanner sees them) and
    // inside an input tensor (only the replica's full decode does: its skip recursion is the target).
    const groups = Buffer.alloc(100_000, 0x0b); // field 1, wire type 3 (start group)
    cases.push(['100,000 nested groups at the top level', Buffer.concat([modelName('risk'), groups])]);
    cases.push(['100,000 nested groups inside inputs[0]', Buffer.concat([modelName('risk'), lenField(5, groups)])]);
    for (const [what, bytes] of cases) {
      const o = await sendRaw(bytes);
      expect(grpc.status[o.code], `${what}: ${o.details}`).toBe('INVALID_ARGUMENT');
      expect(o.ms, what).toBeLessThan(2_000);
    }
    await stillServing();
  });

  it('200 random byte blobs → each answered with a status, neither process crashes', async () => {
    const rng = mulberry32(2024);
    const blob = (n: number) => Buffer.from(Array.from({ length: n }, () => (rng.next() * 256) | 0));
    const blobs: Buffer[] = [];
    // Pure noise: mostly refused by the router's scan of the top-level fields.
    for (let i = 0; i < 100; i++) blobs.push(blob((rng.next() * 512) | 0));
    // Noise the router forwards (a known model, the rest inside inputs): the replica decodes it.
    for (let i = 0; i < 100; i++) blobs.push(Buffer.concat([modelName('risk'), lenField(5, blob(1 + ((rng.next() * 512) | 0)))]));
    const results: Outcome[] = [];
    // In waves of 20, so the router sees concurrent garbage too.
    for (let i = 0; i < blobs.length; i += 20) results.push(...(await Promise.all(blobs.slice(i, i + 20).map((b) => sendRaw(b)))));
    const byCode = new Map<string, number>();
    for (const r of results) byCode.set(grpc.status[r.code] ?? String(r.code), (byCode.get(grpc.status[r.code] ?? String(r.code)) ?? 0) + 1);
    console.log(`hostile-input: random blobs answered ${JSON.stringify(Object.fromEntries(byCode))}`);
    expect(results).toHaveLength(200);
    for (const r of results) {
      // A client-side timeout or a broken connection would mean a hang or a crash.
      expect(['INVALID_ARGUMENT', 'NOT_FOUND', 'OK'], r.details).toContain(grpc.status[r.code]);
      expect(r.ms).toBeLessThan(2_000);
    }
    await stillServing();
  });

  it('path-like and wildcard names → INVALID_ARGUMENT from router and registry, nothing stored', async () => {
    const reg = mesh.clients.registry;
    const before = await reg.list();
    for (const name of BAD_NAMES) {
      const infer = await outcome(mesh.clients.router.infer(name, input));
      expect(grpc.status[infer.code], `ModelInfer ${JSON.stringify(name)}: ${infer.details}`).toBe('INVALID_ARGUMENT');
      const meta = await outcome(mesh.clients.router.metadata(name));
      expect(grpc.status[meta.code], `ModelMetadata ${JSON.stringify(name)}: ${meta.details}`).toBe('INVALID_ARGUMENT');
      const push = await outcome(reg.push(model.bytes, { name }));
      expect(grpc.status[push.code], `push ${JSON.stringify(name)}: ${push.details}`).toBe('INVALID_ARGUMENT');
      const get = await outcome(reg.get(name));
      expect(grpc.status[get.code], `GetModel ${JSON.stringify(name)}: ${get.details}`).toBe('INVALID_ARGUMENT');
      const alias = await outcome(reg.setAlias(name, 1));
      expect(grpc.status[alias.code], `SetAlias ${JSON.stringify(name)}: ${alias.details}`).toBe('INVALID_ARGUMENT');
      if (name !== '') {
        // The same names as an alias of a real model (empty means `production` there).
        const asAlias = await outcome(reg.setAlias('risk', 1, name));
        expect(grpc.status[asAlias.code], `SetAlias risk alias ${JSON.stringify(name)}: ${asAlias.details}`).toBe('INVALID_ARGUMENT');
        const push2 = await outcome(reg.push(model.bytes, { name: 'risk', alias: name }));
        expect(grpc.status[push2.code], `push alias ${JSON.stringify(name)}: ${push2.details}`).toBe('INVALID_ARGUMENT');
      }
    }
    expect(await reg.list()).toEqual(before);
    expect(alive(mesh.registry)).toBe(true);
    await stillServing();
  });
});
