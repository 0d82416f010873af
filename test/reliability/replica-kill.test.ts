/**
 * A replica dies (SIGKILL) under steady load: the router retries what was in
 * flight on it on the other replica, so no caller sees a failure; a new
 * replica joins, loads the model and gets its share of the traffic.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { VersionState } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { alive, eventually, failures, ReplicaRecords, sleep, steadyLoad, until } from './helpers.js';

let mesh: Mesh;
let records: ReplicaRecords;
const model = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 31 });
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: [0.5, -1, 0.25, 2, 0, 1, -0.5, 3] }];

beforeAll(async () => {
  mesh = await startMesh({ replicas: 2 });
  records = await ReplicaRecords.connect(mesh.nats.url);
  await mesh.clients.registry.push(model.bytes, { name: 'risk', alias: 'production' });
  await mesh.waitReady('risk');
  // Both replicas ready, so the load starts spread over two.
  await eventually(
    () => records.all(),
    (rs) => rs.filter((r) => r.versions.some((v) => v.name === 'risk' && v.state === VersionState.VERSION_STATE_READY)).length === 2,
  );
});
afterAll(async () => {
  await records?.close();
  await mesh?.stop();
});

describe('replica killed under load', () => {
  it('SIGKILL of one of two replicas mid-load: zero failed calls', async () => {
    const victim = mesh.replicas[0]!;
    const survivor = mesh.replicas[1]!;
    const load = steadyLoad(mesh.clients.router, 'risk', input, 6, 5_000);
    await until('20 calls answered under load', () => load.answers.length > 20, 20_000);
    const before = load.answers.length;
    await victim.stop('SIGKILL');
    // Long enough to cover the dead replica's record outliving it (heartbeat TTL) for a while.
    await sleep(2_500);
    await until('20 more calls answered since the kill', () => load.answers.length - before > 20, 20_000);
    const answers = await load.stop();
    expect(failures(answers)).toEqual([]);
    expect(before).toBeGreaterThan(20);
    expect(answers.length - before).toBeGreaterThan(20);
    expect(alive(mesh.router)).toBe(true);
    expect(alive(survivor)).toBe(true);
    // Nothing left in flight on the survivor once the load has stopped.
    const since = Date.now();
    const rec = await eventually(
      () => records.of(survivor),
      (r) => Number(r?.updatedAtMs ?? 0) > since && r?.stats?.outstanding === 0,
      5_000,
    );
    expect(rec?.stats?.outstanding).toBe(0);
  });

  it('a new replica loads the model and receives traffic again', async () => {
    const fresh = await mesh.addReplica();
    const ready = await eventually(
      () => records.of(fresh),
      (r) => !!r?.versions.some((v) => v.name === 'risk' && v.version === 1 && v.state === VersionState.VERSION_STATE_READY),
      30_000,
    );
    expect(ready?.versions).toContainEqual({ name: 'risk', version: 1, state: VersionState.VERSION_STATE_READY, reason: '' });
    const requestsAtJoin = ready?.stats?.requests ?? 0;
    // The router learns of it from the same heartbeat: load until the new replica's record
    // (one heartbeat behind) shows its share, rather than guessing how long that takes.
    const load = steadyLoad(mesh.clients.router, 'risk', input, 6, 5_000);
    await sleep(1_000);
    await eventually(() => records.of(fresh), (r) => (r?.stats?.requests ?? 0) > requestsAtJoin + 20, 20_000);
    const answers = await load.stop();
    const stoppedAt = Date.now();
    expect(failures(answers)).toEqual([]);
    const after = await eventually(
      () => records.of(fresh),
      (r) => Number(r?.updatedAtMs ?? 0) > stoppedAt && (r?.stats?.requests ?? 0) > requestsAtJoin + 20 && r?.stats?.outstanding === 0,
      5_000,
    );
    console.log(`replica-kill: new replica served ${(after?.stats?.requests ?? 0) - requestsAtJoin} of ${answers.length} calls`);
    expect(after?.stats?.requests ?? 0).toBeGreaterThan(requestsAtJoin + 20);
    expect(after?.stats?.outstanding).toBe(0);
    expect(alive(fresh)).toBe(true);
    expect(alive(mesh.router)).toBe(true);
    // Still answering after all of it.
    const r = await mesh.clients.router.infer('risk', input);
    expect(r.outputs[0]!.data[0] as number).toBeCloseTo(model.forward(input[0]!.data as number[])[0]!, 5);
  });
});
