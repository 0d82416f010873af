/**
 * The Open Inference Protocol through the router, against real processes:
 * answers equal in-process ONNX Runtime's, every bad input gets the right
 * code naming the field, and the mesh stays up.
 */
import * as grpc from '@grpc/grpc-js';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInferRequest, decodeOutputs } from '../../libs/client/index.js';
import { int64Model, mlpModel, twoInOutModel } from '../../libs/onnx-builder/index.js';
import { oip } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

let mesh: Mesh;
const mlp = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 3 });
const mlp2 = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 4 });
const two = twoInOutModel();
const i64 = int64Model();

async function ortRun(bytes: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Record<string, number[]>> {
  const s = await ort.InferenceSession.create(Buffer.from(bytes), { intraOpNumThreads: 1 });
  const out = await s.run(feeds);
  await s.release();
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, Array.from(t.data as ArrayLike<number | bigint>, Number)]));
}

function codeOf(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(
    () => ({ code: 0, details: '' }),
    (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
  );
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 2 });
  const reg = mesh.clients.registry;
  await reg.push(mlp.bytes, { name: 'mlp', alias: 'production' });
  await reg.push(two.bytes, { name: 'two', alias: 'production' });
  await reg.push(i64.bytes, { name: 'i64', alias: 'production' });
  await Promise.all(['mlp', 'two', 'i64'].map((m) => mesh.waitReady(m)));
});
afterAll(async () => {
  await mesh?.stop();
});

describe('ModelInfer through the router', () => {
  it('float32: equals in-process ONNX Runtime, raw and typed contents, id echoed', async () => {
    const rows = [0.5, -1, 2, 0.25, 3, -0.5, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    const want = await ortRun(mlp.bytes, { features: new ort.Tensor('float32', Float32Array.from(rows), [2, 8]) });
    for (const raw of [true, false]) {
      const { response, outputs } = await mesh.clients.router.infer('mlp', [{ name: 'features', datatype: 'FP32', shape: [2, 8], data: rows }], { raw, id: `req-${raw}` });
      expect(response.id).toBe(`req-${raw}`);
      expect(response.modelName).toBe('mlp');
      expect(response.modelVersion).toBe('1');
      expect(outputs).toHaveLength(1);
      expect(outputs[0]!.name).toBe('score');
      expect(outputs[0]!.datatype).toBe('FP32');
      expect(outputs[0]!.shape).toEqual([2, 1]);
      expect(outputs[0]!.data).toEqual(want.score);
    }
  });

  it('two inputs (FP32 + INT64), two outputs, and requested output subsets', async () => {
    const a = [1.5, 2, 3, 4, -1, -2, -3, -4];
    const b = [1, 2, 3, 4, 10, 20, 30, 40];
    const want = await ortRun(two.bytes, {
      a: new ort.Tensor('float32', Float32Array.from(a), [2, 4]),
      b: new ort.Tensor('int64', BigInt64Array.from(b.map(BigInt)), [2, 4]),
    });
    const inputs = [
      { name: 'a', datatype: 'FP32', shape: [2, 4], data: a },
      { name: 'b', datatype: 'INT64', shape: [2, 4], data: b },
    ];
    for (const raw of [true, false]) {
      const all = await mesh.clients.router.infer('two', inputs, { raw });
      expect(all.outputs.map((o) => o.name).sort()).toEqual(['count', 'sum']);
      const byName = Object.fromEntries(all.outputs.map((o) => [o.name, o]));
      expect(byName.sum!.data).toEqual(want.sum);
      expect(byName.count!.datatype).toBe('INT64');
      expect(byName.count!.shape).toEqual([2, 1]);
      expect(byName.count!.data).toEqual(want.count);
    }
    const subset = await mesh.clients.router.infer('two', inputs, { outputs: ['count'] });
    expect(subset.outputs.map((o) => o.name)).toEqual(['count']);
    expect(subset.outputs[0]!.data).toEqual(want.count);
  });

  it('int64 in and out, raw and typed', async () => {
    const x = [1, -2, 3, 2 ** 40, 5, 6];
    const want = await ortRun(i64.bytes, { x: new ort.Tensor('int64', BigInt64Array.from(x.map(BigInt)), [2, 3]) });
    for (const raw of [true, false]) {
      const { outputs } = await mesh.clients.router.infer('i64', [{ name: 'x', datatype: 'INT64', shape: [2, 3], data: x }], { raw });
      expect(outputs[0]!.data).toEqual(want.y);
    }
  });

  it('ModelMetadata shows the batch dimension as -1; ModelReady and ServerReady are true', async () => {
    const md = await mesh.clients.router.metadata('two');
    expect(md.name).toBe('two');
    expect(md.platform).toBe('onnxruntime_onnx');
    expect(md.inputs).toEqual([
      { name: 'a', datatype: 'FP32', shape: [-1, 4] },
      { name: 'b', datatype: 'INT64', shape: [-1, 4] },
    ]);
    expect(md.outputs.find((o) => o.name === 'count')).toEqual({ name: 'count', datatype: 'INT64', shape: [-1, 1] });
    expect(await mesh.clients.router.ready()).toBe(true);
    expect(await mesh.clients.router.modelReady('two')).toBe(true);
  });

  it('500 concurrent calls all answer correctly', async () => {
    const calls = Array.from({ length: 500 }, (_, i) => {
      const row = Array.from({ length: 8 }, (_, j) => ((i * 7 + j) % 13) / 5 - 1);
      return mesh.clients.router
        .infer('mlp', [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: row }], { id: String(i), timeoutMs: 30_000 })
        .then((r) => ({ i, row, r }));
    });
    const results = await Promise.all(calls);
    for (const { i, row, r } of results) {
      expect(r.response.id).toBe(String(i));
      expect(r.outputs[0]!.data[0] as number).toBeCloseTo(mlp.forward(row)[0]!, 5);
    }
  });

  it('promoting v2 switches the router to v2 without a restart; v1 stays addressable', async () => {
    const v2 = await mesh.clients.registry.push(mlp2.bytes, { name: 'mlp' });
    expect(v2.version).toBe(2);
    const row = [1, 2, 3, 4, 5, 6, 7, 8];
    const input = [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: row }];
    expect((await mesh.clients.router.infer('mlp', input)).response.modelVersion).toBe('1');
    await mesh.clients.registry.setAlias('mlp', 2);
    const until = Date.now() + 15_000;
    let served = '1';
    while (served !== '2' && Date.now() < until) {
      served = (await mesh.clients.router.infer('mlp', input)).response.modelVersion;
      if (served !== '2') await new Promise((r) => setTimeout(r, 50));
    }
    expect(served).toBe('2');
    const r2 = await mesh.clients.router.infer('mlp', input);
    expect(r2.outputs[0]!.data[0] as number).toBeCloseTo(mlp2.forward(row)[0]!, 5);
    const r1 = await mesh.clients.router.infer('mlp', input, { version: '1' });
    expect(r1.response.modelVersion).toBe('1');
    expect(r1.outputs[0]!.data[0] as number).toBeCloseTo(mlp.forward(row)[0]!, 5);
    const viaAlias = await mesh.clients.router.infer('mlp@production', input);
    expect(viaAlias.response.modelVersion).toBe('2');
  });
});

describe('errors through the router', () => {
  const good = { name: 'features', datatype: 'FP32', shape: [1, 8], data: [1, 2, 3, 4, 5, 6, 7, 8] };
  const infer = (req: oip.ModelInferRequest) => codeOf(mesh.clients.router.inferRaw(req));

  it('unknown model or version → NOT_FOUND', async () => {
    expect((await infer(buildInferRequest('nope', [good]))).code).toBe(grpc.status.NOT_FOUND);
    expect((await infer(buildInferRequest('mlp', [good], { version: '99' }))).code).toBe(grpc.status.NOT_FOUND);
    expect((await infer(buildInferRequest('mlp', [good], { version: 'no-such-alias' }))).code).toBe(grpc.status.NOT_FOUND);
    expect((await codeOf(mesh.clients.router.metadata('nope'))).code).toBe(grpc.status.NOT_FOUND);
  });

  it('invalid model names → INVALID_ARGUMENT naming model_name', async () => {
    for (const name of ['', '../x', 'a/b', 'a.b', '*', '>', 'UPPER']) {
      const r = await infer(buildInferRequest(name, [good]));
      expect(r.code, name).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.details).toContain('model_name');
    }
  });

  it('each malformed tensor → INVALID_ARGUMENT naming the field', async () => {
    const cases: [string, oip.ModelInferRequest, string][] = [
      ['wrong shape', buildInferRequest('mlp', [{ ...good, shape: [1, 7], data: good.data.slice(0, 7) }]), 'inputs[0].shape'],
      ['wrong rank', buildInferRequest('mlp', [{ ...good, shape: [8] }]), 'inputs[0].shape'],
      ['wrong datatype', buildInferRequest('mlp', [{ ...good, datatype: 'FP64' }]), 'inputs[0].datatype'],
      ['unknown input', buildInferRequest('mlp', [{ ...good, name: 'nope' }]), 'inputs[0].name'],
      ['unknown output', buildInferRequest('mlp', [good], { outputs: ['nope'] }), 'outputs[0].name'],
      ['no inputs', buildInferRequest('mlp', []), 'inputs'],
      ['typed count', buildInferRequest('mlp', [{ ...good, data: [1, 2, 3] }], { raw: false }), 'inputs[0].contents'],
      ['missing input', buildInferRequest('two', [{ name: 'a', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }]), 'inputs'],
    ];
    const byteLength = buildInferRequest('mlp', [good]);
    byteLength.rawInputContents = [byteLength.rawInputContents[0]!.subarray(0, 30)];
    cases.push(['byte length', byteLength, 'raw_input_contents[0]']);
    const both = buildInferRequest('mlp', [good]);
    both.inputs[0]!.contents = oip.InferTensorContents.fromPartial({ fp32Contents: good.data });
    cases.push(['raw and typed together', both, 'inputs[0].contents']);
    const rawCount = buildInferRequest('two', [
      { name: 'a', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] },
      { name: 'b', datatype: 'INT64', shape: [1, 4], data: [1, 2, 3, 4] },
    ]);
    rawCount.rawInputContents = rawCount.rawInputContents.slice(0, 1);
    cases.push(['raw entries ≠ inputs', rawCount, 'raw_input_contents']);
    for (const [what, req, field] of cases) {
      const r = await infer(req);
      expect(r.code, what).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.details.startsWith(`${field}:`), `${what}: ${r.details}`).toBe(true);
    }
  });

  it('malformed protobuf → INVALID_ARGUMENT, and the router keeps serving', async () => {
    const client = new grpc.Client(mesh.routerAddr, grpc.credentials.createInsecure());
    const send = (bytes: Buffer) =>
      new Promise<grpc.ServiceError | null>((resolve) =>
        client.makeUnaryRequest('/inference.GRPCInferenceService/ModelInfer', (b: Buffer) => b, (b: Buffer) => b, bytes, (err) => resolve(err)),
      );
    const garbage = [Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Buffer.from([0x0a, 0x50, 0x61]), Buffer.from([0x07]), Buffer.alloc(64, 0xab)];
    for (const g of garbage) {
      const err = await send(g);
      expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    }
    // A well-formed header followed by a corrupt tensor reaches the replica, which refuses it.
    const ok = Buffer.from(oip.ModelInferRequest.encode(buildInferRequest('mlp', [good])).finish());
    const corrupt = Buffer.concat([ok, Buffer.from([0x2a, 0x05, 0xff, 0xff])]);
    expect((await send(corrupt))?.code).toBe(grpc.status.INVALID_ARGUMENT);
    client.close();
    const after = await mesh.clients.router.infer('mlp', [good]);
    expect(after.outputs[0]!.data).toHaveLength(1);
  });
});

describe('the monitor sees the traffic', () => {
  it('GetModelStats counts requests and errors per version', async () => {
    const until = Date.now() + 10_000;
    let stats = await mesh.clients.monitor.stats('mlp').catch(() => []);
    while ((stats.length < 2 || stats.every((s) => s.errors === 0)) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 200));
      stats = await mesh.clients.monitor.stats('mlp').catch(() => []);
    }
    const v1 = stats.find((s) => s.version === 1);
    const v2 = stats.find((s) => s.version === 2);
    expect(v1).toBeDefined();
    expect(v1!.requests).toBeGreaterThanOrEqual(500);
    expect(v1!.p99Ms).toBeGreaterThan(0);
    // The bad-tensor calls went to the production alias, by then version 2.
    expect(v2!.errors).toBeGreaterThan(0);
    expect(v2!.errorsByCode.INVALID_ARGUMENT).toBe(v2!.errors);
  });
});
