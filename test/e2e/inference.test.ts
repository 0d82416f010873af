/**
 * Inference replicas as real processes: announce themselves, load and warm
 * versions with lifecycle events, refuse a corrupt artifact without
 * disturbing the serving version, serve OIP directly, and drain on SIGTERM
 * under load with zero failed calls.
 */
import * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceApi } from '../../libs/client/index.js';
import { BUCKET_ARTIFACTS, BUCKET_MODELS, BUCKET_REPLICAS, KvMirror, keys, subjects } from '../../libs/bus/index.js';
import { createLogger } from '../../libs/log/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent, ModelEvent_Kind, ReplicaRecord, TrafficRecord, VersionRecord, VersionState } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

let mesh: Mesh;
let nc: NatsConnection;
const events: ModelEvent[] = [];
const model = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 5 });
const row = [1, 0, 1, 0, 1, 0, 1, 0];
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: row }];

/** A snapshot of the replicas bucket (through a watcher: kv.keys() can miss keys while heartbeats churn). */
async function replicaRecords(): Promise<ReplicaRecord[]> {
  const kv = await nc.jetstream().views.kv(BUCKET_REPLICAS);
  const m = await KvMirror.start(kv, { log: createLogger('test', 'silent'), onChange: () => {} });
  const out = [...m.entries()].map(([, v]) => ReplicaRecord.decode(v));
  m.close();
  return out;
}

async function eventually<T>(fn: () => Promise<T> | T, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > until) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 2 });
  nc = await connect({ servers: mesh.nats.url });
  const sub = nc.subscribe(subjects.allEvents);
  void (async () => {
    for await (const m of sub) events.push(ModelEvent.decode(m.data));
  })();
  await mesh.clients.registry.push(model.bytes, { name: 'scorer', alias: 'production' });
  await mesh.waitReady('scorer');
});
afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
});

describe('inference replicas', () => {
  it('announce address, device and ready versions in the replicas bucket', async () => {
    const recs = await eventually(replicaRecords, (r) => r.length === 2 && r.every((x) => x.versions.some((v) => v.state === VersionState.VERSION_STATE_READY)));
    expect(recs).toHaveLength(2);
    for (const r of recs) {
      expect(r.address).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(r.device).toBe('cpu');
      expect(r.accepting).toBe(true);
      expect(r.versions).toContainEqual({ name: 'scorer', version: 1, state: VersionState.VERSION_STATE_READY, reason: '' });
    }
  });

  it('publish loading → warmed → ready for each replica, one version id through all', async () => {
    const mine = await eventually(
      () => events.filter((e) => e.name === 'scorer' && e.version === 1 && e.replicaId),
      (x) => x.filter((e) => e.kind === ModelEvent_Kind.READY).length === 2,
    );
    const replicas = new Set(mine.map((e) => e.replicaId));
    expect(replicas.size).toBe(2);
    for (const id of replicas) {
      expect(mine.filter((e) => e.replicaId === id).map((e) => e.kind)).toEqual([ModelEvent_Kind.LOADING, ModelEvent_Kind.WARMED, ModelEvent_Kind.READY]);
    }
  });

  it('serve OIP directly as well as through the router', async () => {
    const addr = String(mesh.replicas[0]!.info.address);
    const direct = new InferenceApi(addr);
    const r = await direct.infer('scorer', input, { id: 'direct' });
    expect(r.response.id).toBe('direct');
    expect(r.outputs[0]!.data[0] as number).toBeCloseTo(model.forward(row)[0]!, 5);
    expect((await direct.metadata('scorer')).inputs[0]!.shape).toEqual([-1, 8]);
    direct.close();
  });

  it('refuse a version whose artifact fails its digest check and keep serving the old one', async () => {
    const js = nc.jetstream();
    const kv = await js.views.kv(BUCKET_MODELS);
    const os = await js.views.os(BUCKET_ARTIFACTS);
    // An artifact stored under a digest its bytes do not have (corruption, or tampering).
    const fake = 'f'.repeat(64);
    await os.putBlob({ name: fake }, mlpModel({ inputs: 8, hidden: [4], outputs: 1, seed: 77 }).bytes);
    const good = VersionRecord.decode((await kv.get(keys.version('scorer', 1)))!.value);
    await kv.create(keys.version('scorer', 2), VersionRecord.encode({ ...good, version: 2, sha256: fake }).finish());
    const failed = await eventually(
      () => events.filter((e) => e.name === 'scorer' && e.version === 2 && e.kind === ModelEvent_Kind.FAILED),
      (x) => x.length === 2,
    );
    expect(failed).toHaveLength(2);
    expect(failed[0]!.reason).toContain('digest mismatch');
    const recs = await eventually(replicaRecords, (r) => r.every((x) => x.versions.some((v) => v.version === 2 && v.state === VersionState.VERSION_STATE_FAILED)));
    for (const r of recs) expect(r.versions.find((v) => v.version === 1)?.state).toBe(VersionState.VERSION_STATE_READY);
    // The registry refuses to promote it, with the reason.
    const refused = await mesh.clients.registry.setAlias('scorer', 2).then(
      () => null,
      (e: grpc.ServiceError) => e,
    );
    expect(refused?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(refused?.details).toContain('digest mismatch');
    // Even if the alias is moved behind the registry's back (a promote that raced the failure
    // report), routers keep serving v1: the new target is never ready.
    const traffic = TrafficRecord.decode((await kv.get(keys.traffic('scorer')))!.value);
    await kv.put(keys.traffic('scorer'), TrafficRecord.encode({ ...traffic, aliases: { production: 2 } }).finish());
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 20; i++) expect((await mesh.clients.router.infer('scorer', input)).response.modelVersion).toBe('1');
    await kv.put(keys.traffic('scorer'), TrafficRecord.encode(traffic).finish());
  });

  it('drain on SIGTERM under load: zero failed calls, and the replica exits cleanly', async () => {
    let stop = false;
    let ok = 0;
    const failures: string[] = [];
    const worker = async () => {
      while (!stop) {
        try {
          await mesh.clients.router.infer('scorer', input, { timeoutMs: 5_000 });
          ok++;
        } catch (e) {
          failures.push(`${grpc.status[(e as grpc.ServiceError).code]}: ${(e as grpc.ServiceError).details}`);
        }
      }
    };
    const workers = Array.from({ length: 8 }, worker);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    const code = await mesh.replicas[0]!.stop('SIGTERM');
    const exitMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await Promise.all(workers);
    expect(code).toBe(0);
    expect(exitMs).toBeLessThan(10_000);
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(100);
    const left = await eventually(replicaRecords, (r) => r.length === 1, 5_000);
    expect(left).toHaveLength(1);
  });
});
