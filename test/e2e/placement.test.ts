/**
 * Placement by rendezvous hashing: a model that asks for k replicas lands on
 * exactly k of them; when one of its holders leaves, the model moves to the
 * next replica in its ranking and models it did not hold stay where they are;
 * serving continues throughout.
 */
import * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUCKET_REPLICAS, KvMirror } from '../../libs/bus/index.js';
import { createLogger } from '../../libs/log/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ReplicaRecord, VersionState } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

let mesh: Mesh;
let nc: NatsConnection;
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }];

async function holdersOf(model: string): Promise<Map<string, string>> {
  const m = await KvMirror.start(await nc.jetstream().views.kv(BUCKET_REPLICAS), { log: createLogger('test', 'silent'), onChange: () => {} });
  const out = new Map<string, string>();
  for (const [, v] of m.entries()) {
    const r = ReplicaRecord.decode(v);
    if (r.accepting && r.versions.some((x) => x.name === model && x.state === VersionState.VERSION_STATE_READY)) out.set(r.id, r.address);
  }
  m.close();
  return out;
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 3 });
  nc = await connect({ servers: mesh.nats.url });
  const reg = mesh.clients.registry;
  await reg.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 1 }).bytes, { name: 'one', alias: 'production', replicas: 1 });
  await reg.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 2 }).bytes, { name: 'two', alias: 'production', replicas: 2 });
  await reg.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 3 }).bytes, { name: 'all', alias: 'production' });
  for (const m of ['one', 'two', 'all']) await mesh.waitReady(m);
});
afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
});

describe('placement', () => {
  it('puts each model on the number of replicas it asks for', async () => {
    expect((await until(() => holdersOf('one'), (h) => h.size === 1)).size).toBe(1);
    expect((await until(() => holdersOf('two'), (h) => h.size === 2)).size).toBe(2);
    expect((await until(() => holdersOf('all'), (h) => h.size === 3)).size).toBe(3);
    for (const m of ['one', 'two', 'all']) expect((await mesh.clients.router.infer(m, input)).outputs[0]!.data).toHaveLength(1);
  });

  it('hands over only the leaving replica\'s models, with zero failed calls', async () => {
    const oneBefore = await holdersOf('one');
    const twoBefore = await holdersOf('two');
    const [leavingId, leavingAddr] = [...oneBefore][0]!;
    let stop = false;
    const failures: string[] = [];
    const loop = async (model: string) => {
      while (!stop) {
        await mesh.clients.router.infer(model, input, { timeoutMs: 5000 }).catch((e: grpc.ServiceError) => failures.push(`${model}: ${grpc.status[e.code]} ${e.details}`));
      }
    };
    const loops = [loop('one'), loop('two'), loop('all')];
    const leaving = mesh.replicas.find((r) => r.info.address === leavingAddr)!;
    await leaving.stop('SIGTERM');
    const oneAfter = await until(() => holdersOf('one'), (h) => h.size === 1 && !h.has(leavingId));
    const twoAfter = await until(() => holdersOf('two'), (h) => h.size === 2 && !h.has(leavingId));
    stop = true;
    await Promise.all(loops);
    expect(oneAfter.size).toBe(1);
    expect(oneAfter.has(leavingId)).toBe(false);
    // "two" keeps every holder that did not leave.
    for (const id of twoBefore.keys()) if (id !== leavingId) expect(twoAfter.has(id)).toBe(true);
    expect(twoAfter.size).toBe(2);
    // Serving continued: the leaving replica handed "one" over (the new holder was warm) before it stopped.
    expect(failures).toEqual([]);
  });
});
