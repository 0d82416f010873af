/**
 * The control plane dies (registry and monitor, SIGKILL) under load: serving
 * is unaffected. Restarted against the same NATS, the registry lists the same
 * models and versions (its state is in KV, not in the process) and the
 * monitor answers GetModelStats again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MonitorApi, RegistryApi } from '../../libs/client/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { startMesh, startService, type Mesh, type ServiceProc } from '../harness/mesh.js';
import { alive, eventually, failures, ReplicaRecords, sleep, steadyLoad, until } from './helpers.js';

let mesh: Mesh;
const restarted: ServiceProc[] = [];
const clients: { close(): void }[] = [];
const v1 = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 37 });
const v2 = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 38 });
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: [0, 1, 0, 1, 0, 1, 0, 1] }];
// What startMesh gives its services.
const ENV = { INFERMESH_HEARTBEAT_MS: '500', INFERMESH_SAMPLE_FLUSH_MS: '200' };

beforeAll(async () => {
  mesh = await startMesh({ replicas: 1 });
  await mesh.clients.registry.push(v1.bytes, { name: 'risk', alias: 'production' });
  await mesh.clients.registry.push(v2.bytes, { name: 'risk' });
  await mesh.waitReady('risk');
  await mesh.waitReady('risk', '2');
});
afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(restarted.map((s) => s.stop()));
  await mesh?.stop();
});

describe('control plane down', () => {
  it('SIGKILL of registry and monitor under load: zero failed calls; restarted, they have the same state', async () => {
    const listBefore = await mesh.clients.registry.list();
    expect(listBefore.map((m) => [m.name, m.versions.map((v) => v.version)])).toEqual([['risk', [1, 2]]]);
    const load = steadyLoad(mesh.clients.router, 'risk', input, 6, 5_000);
    await until('calls answered under load', () => load.answers.length >= 10, 20_000);
    await Promise.all([mesh.registry.stop('SIGKILL'), mesh.monitor.stop('SIGKILL')]);
    await sleep(2_000);
    const common = ['--nats', mesh.nats.url, '--host', '127.0.0.1', '--port', '0'];
    const [registry, monitor] = await Promise.all([startService('registry', common, ENV), startService('monitor', [...common, '--metrics-port', '0'], ENV)]);
    restarted.push(registry, monitor);
    await sleep(1_000);
    await until('50 calls answered', () => load.answers.length > 50, 20_000);
    const answers = await load.stop();
    expect(failures(answers)).toEqual([]);
    expect(answers.length).toBeGreaterThan(50);
    expect(alive(mesh.router)).toBe(true);
    expect(alive(mesh.replicas[0]!)).toBe(true);
    const records = await ReplicaRecords.connect(mesh.nats.url);
    const since = Date.now();
    const rec = await eventually(
      () => records.of(mesh.replicas[0]!),
      (x) => Number(x?.updatedAtMs ?? 0) > since && x?.stats?.outstanding === 0,
      5_000,
    );
    await records.close();
    expect(rec?.stats?.outstanding).toBe(0);

    const reg = new RegistryApi(`127.0.0.1:${registry.info.grpcPort}`);
    const mon = new MonitorApi(`127.0.0.1:${monitor.info.grpcPort}`);
    clients.push(reg, mon);
    expect(await reg.list()).toEqual(listBefore);

    // The new monitor is fed by the routers again: after some calls it reports the model.
    const report = await eventually(
      async () => {
        await Promise.all(Array.from({ length: 10 }, () => mesh.clients.router.infer('risk', input)));
        // NOT_FOUND until the first samples arrive: eventually() retries.
        return mon.report('risk');
      },
      (r) => (r?.versions.find((v) => v.version === 1)?.requests ?? 0) > 0,
      15_000,
    );
    expect(report?.versions.find((v) => v.version === 1)?.requests ?? 0).toBeGreaterThan(0);
  });

  it('the restarted registry still steers traffic: promote v2 and the router serves it', async () => {
    const reg = new RegistryApi(`127.0.0.1:${restarted[0]!.info.grpcPort}`);
    clients.push(reg);
    const info = await reg.setAlias('risk', 2, 'production', 1);
    expect(info.traffic?.aliases.production).toBe(2);
    const served = await eventually(
      async () => (await mesh.clients.router.infer('risk', input)).response.modelVersion,
      (v) => v === '2',
      10_000,
    );
    expect(served).toBe('2');
  });
});
