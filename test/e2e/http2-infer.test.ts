/**
 * `--http2-infer=false`: ModelInfer through grpc-js's own handler on the
 * router and on the replica (the default takes it off the raw HTTP/2
 * streams). Both paths give the same answers: outputs, timing parameters,
 * and the same statuses and messages for bad calls.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInferRequest, InferenceApi } from '../../libs/client/index.js';
import { call as grpcCall } from '../../libs/grpc/index.js';
import { mlpModel, slowModel } from '../../libs/onnx-builder/index.js';
import { oip, RuntimeClient } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { eventually } from '../harness/wait.js';

const m = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 5 });
const row = [0.5, -0.2, 0.3, 0.9];
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: row }];
let grpcJs: Mesh;
let http2: Mesh;

async function meshWith(args: string[]): Promise<Mesh> {
  const mesh = await startMesh({ replicas: 1, routerArgs: args, inferenceArgs: args });
  await mesh.clients.registry.push(m.bytes, { name: 'same', alias: 'production' });
  await mesh.waitReady('same');
  return mesh;
}

beforeAll(async () => {
  [grpcJs, http2] = await Promise.all([meshWith(['--http2-infer=false']), meshWith([])]);
}, 120_000);
afterAll(async () => {
  await Promise.all([grpcJs?.stop(), http2?.stop()]);
});

/** Status code and message of a call, or OK with its first output and parameter names. */
async function answer(api: InferenceApi, model: string, inputs = input) {
  try {
    const { outputs, response } = await api.infer(model, inputs, { id: 'q1' });
    // A trace id is there only when the call was sampled (5 %): not part of the comparison.
    return { code: 0, id: response.id, value: outputs[0]!.data[0], params: Object.keys(response.parameters).filter((k) => k !== 'infermesh.trace_id').sort() };
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, details: e.details };
  }
}

describe('--http2-infer', () => {
  it('the services say which path serves ModelInfer', () => {
    for (const [mesh, path] of [[grpcJs, 'grpc-js'], [http2, 'http2']] as const) {
      for (const s of [mesh.router, mesh.replicas[0]!]) expect(s.info.modelInfer, s.name).toBe(path);
    }
  });

  it('router and replica answer the same on both paths, for good and bad calls', async () => {
    const calls: [string, typeof input][] = [
      ['same', input],
      ['nope', input],
      ['../x', input],
      ['same', [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: row.slice(0, 3) }]],
    ];
    for (const [model, inputs] of calls) {
      const a = await answer(grpcJs.clients.router, model, inputs);
      const b = await answer(http2.clients.router, model, inputs);
      expect(a, `router ${model}`).toEqual(b);
      const da = new InferenceApi(String(grpcJs.replicas[0]!.info.address));
      const db = new InferenceApi(String(http2.replicas[0]!.info.address));
      const [ra, rb] = [await answer(da, model, inputs), await answer(db, model, inputs)];
      da.close();
      db.close();
      expect(ra, `replica ${model}`).toEqual(rb);
    }
    const ok = await answer(http2.clients.router, 'same');
    expect(ok.code).toBe(0);
    expect(ok.value).toBeCloseTo(m.forward(row)[0]!, 5);
    expect(ok.params).toContain('infermesh.total_us');
  });
});

describe('the replica\'s raw ModelInfer path', () => {
  const path = oip.GRPCInferenceServiceService.modelInfer.path;
  const id = (b: Buffer) => b;
  /** One ModelInfer to the replica with the given bytes; `cancelAfterMs` cancels it client-side. */
  const raw = (c: grpc.Client, bytes: Uint8Array, cancelAfterMs = 0) =>
    new Promise<grpc.ServiceError | null>((resolve) => {
      const ca = c.makeUnaryRequest(path, id, id, Buffer.from(bytes), (err) => resolve(err));
      if (cancelAfterMs) setTimeout(() => ca.cancel(), cancelAfterMs);
    });

  it('malformed protobuf → INVALID_ARGUMENT naming the request; the replica keeps serving', async () => {
    const c = new grpc.Client(String(http2.replicas[0]!.info.address), grpc.credentials.createInsecure());
    const err = await raw(c, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]));
    c.close();
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toBe('request: malformed ModelInferRequest');
    const ok = await answer(new InferenceApi(String(http2.replicas[0]!.info.address)), 'same');
    expect(ok.code).toBe(0);
  });

  it('a direct caller that cancels while queued frees its slot: the replica counts it cancelled, never runs it', async () => {
    await http2.clients.registry.push(slowModel({ millis: 150 }).bytes, { name: 'slowish', alias: 'production', batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 } });
    await http2.waitReady('slowish');
    const addr = String(http2.replicas[0]!.info.address);
    const rt = new RuntimeClient(addr, grpc.credentials.createInsecure());
    const status = () => grpcCall(rt.status, rt, {});
    const before = (await status()).stats!;
    const c = new grpc.Client(addr, grpc.credentials.createInsecure());
    const body = oip.ModelInferRequest.encode(buildInferRequest('slowish', [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }])).finish();
    // The first runs (150 ms); the second waits behind it and is cancelled after 40 ms.
    const [first, second] = await Promise.all([raw(c, body), raw(c, body, 40)]);
    c.close();
    expect(first).toBeNull();
    expect(second?.code).toBe(grpc.status.CANCELLED);
    // The replica counts the cancel when it drops the queued job: wait for that, not a guessed pause.
    const after = (await eventually(status, (st) => Number(st.stats!.cancelled) > Number(before.cancelled) && st.stats!.outstanding === 0, 10_000)).stats!;
    rt.close();
    expect(Number(after.cancelled) - Number(before.cancelled)).toBe(1);
    expect(Number(after.batchedRows) - Number(before.batchedRows)).toBe(1);
    expect(after.outstanding).toBe(0);
  });
});
