/**
 * `--http2-infer=false`: ModelInfer through grpc-js's own handler on the
 * router and on the replica (the default takes it off the raw HTTP/2
 * streams). Both paths give the same answers: outputs, timing parameters,
 * and the same statuses and messages for bad calls.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceApi } from '../../libs/client/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

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
