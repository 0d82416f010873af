/**
 * The monitor's state across a kill -9, against real processes: drift
 * windows, serving windows, evaluation and firing alerts come back from
 * JetStream the same, and no alert event is published in between (none
 * resolved, none re-fired). Alerts follow the version lifecycle: a canary
 * rolled back by hand has its alerts resolved at the next evaluation, with
 * the reason, and they stay resolved across the restart. Golden probes are
 * marked: counted apart, never in the statistics, drift or evaluation.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInferRequest, MonitorApi } from '../../libs/client/index.js';
import { mlpModel, mulberry32 } from '../../libs/onnx-builder/index.js';
import { Alert, Alert_State, oip } from '../../libs/proto/index.js';
import { startMesh, startService, type Mesh, type ServiceProc } from '../harness/mesh.js';

const FEATURES = ['f0', 'f1', 'f2', 'f3'];
const model = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 11 });
const other = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 12 });
const INTERVAL_MS = 300;

let mesh: Mesh;
let dir: string;
let monitorArgs: string[];
let restarted: ServiceProc | undefined;
let nc: NatsConnection;
/** Every alert event published on infermesh.alerts.>, as NATS delivered it. */
const published: { at: number; alert: Alert }[] = [];

/** `n` rows of 4 features ~ N(0,1) plus `shift[j]` on feature j. */
function rows(n: number, seed: number, shift: number[] = []): number[][] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => FEATURES.map((_, j) => rng.normal() + (shift[j] ?? 0)));
}

const tensor = (r: number[]) => [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: r }];

/** One request per row, 20 at a time; ids `<prefix>-<i>` when a prefix is given. */
async function send(name: string, version: string, data: number[][], prefix = ''): Promise<void> {
  for (let i = 0; i < data.length; i += 20) {
    await Promise.all(data.slice(i, i + 20).map((r, j) => mesh.clients.router.infer(name, tensor(r), { version, id: prefix ? `${prefix}-${i + j}` : undefined })));
  }
}

async function until<T>(what: string, get: () => Promise<T> | T, ok: (v: T) => boolean, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await Promise.resolve(get()).catch(() => undefined as T);
    if (v !== undefined && ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)?.slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const firing = (list: Alert[]) => list.filter((a) => a.state === Alert_State.FIRING).map((a) => a.id).sort();
const codeOf = (p: Promise<unknown>) => p.then(() => 0, (e: grpc.ServiceError) => e.code);

async function scrape(port: unknown): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { accept: 'text/plain' } })).text();
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-restart-'));
  const rules = path.join(dir, 'rules.json');
  await writeFile(rules, JSON.stringify({ rules: [{ model: 'drifty', rule: 'eval_accuracy', below: 0.99, min_count: 20 }] }));
  monitorArgs = [
    '--alert-interval-ms', String(INTERVAL_MS),
    '--alert-for', '1',
    '--alert-resolve-after', '3',
    '--alert-window-ms', '300000',
    '--alert-min-requests', '20',
    '--drift-window', '300',
    '--drift-min-samples', '50',
    // Canaries here are judged by hand, not by the analysis.
    '--canary-min-requests', '1000000',
    '--alert-rules', rules,
  ];
  mesh = await startMesh({ monitorArgs, env: { INFERMESH_SAMPLE_RATE: '1', INFERMESH_SAMPLE_FLUSH_MS: '100' } });
  nc = await connect({ servers: mesh.nats.url });
  nc.subscribe('infermesh.alerts.>', { callback: (err, m) => void (err || published.push({ at: Date.now(), alert: Alert.decode(m.data) })) });
  const reference = new TextEncoder().encode(`${FEATURES.join(',')}\n${rows(2000, 1).map((r) => r.join(',')).join('\n')}\n`);
  const reg = mesh.clients.registry;
  await reg.push(model.bytes, { name: 'drifty', alias: 'production', reference, referenceFormat: 'csv' });
  await reg.push(model.bytes, { name: 'canaried', alias: 'production', reference, referenceFormat: 'csv' });
  await reg.push(other.bytes, { name: 'canaried', reference, referenceFormat: 'csv' });
  await reg.push(model.bytes, { name: 'probed', alias: 'production' });
  await Promise.all([mesh.waitReady('drifty'), mesh.waitReady('canaried', '2'), mesh.waitReady('probed')]);
  await reg.setCanary('canaried', 2, 10);
}, 90_000);

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
  await restarted?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('golden probes', () => {
  it('are counted apart: never in the statistics, drift windows or evaluation', async () => {
    const request = oip.ModelInferRequest.encode(buildInferRequest('probed', tensor([0.1, 0.2, 0.3, 0.4]), { id: 'probe-req' })).finish();
    await mesh.clients.registry.setProbe({ name: 'probed', request, expected: Array.from(model.forward([0.1, 0.2, 0.3, 0.4])), tolerance: 1e-4, intervalMs: 1000 });
    await send('probed', '', rows(5, 5), 'n');
    const text = await until('probes counted', () => scrape(mesh.monitor.info.metricsPort), (t) => Number(/^infermesh_probe_requests_total\{model="probed",version="1",code="OK"\} (\d+)/m.exec(t)?.[1]) >= 2);
    expect(text).toMatch(/^infermesh_probes_total\{model="probed",result="ok"\} [1-9]/m);
    // Only the five calls count as traffic, however many probes went through the router.
    expect(text).toMatch(/^infermesh_requests_total\{model="probed",version="1",code="OK"\} 5$/m);
    const stats = await mesh.clients.monitor.stats('probed');
    expect(stats.map((s) => [s.version, s.requests])).toEqual([[1, 5]]);
    // The probe's request id was never kept as a sample (sample rate 1): its outcome joins nothing, a call's does.
    expect((await mesh.clients.monitor.recordOutcomes('probed', [{ requestId: 'probe-req', label: 1 }])).joined).toBe(0);
    expect((await mesh.clients.monitor.recordOutcomes('probed', [{ requestId: 'n-0', label: 1 }])).joined).toBe(1);
    expect((await mesh.clients.monitor.evaluation('probed')).map((e) => e.labelled)).toEqual([1]);
    await mesh.clients.registry.setProbe({ name: 'probed' }, true);
  }, 30_000);
});

describe('alerts follow the version lifecycle', () => {
  it('a canary rolled back by hand has its alerts resolved at the next evaluation, with the reason', async () => {
    await send('canaried', '2', rows(150, 3, [0, 0, 1.5, 0]));
    const id = 'drift:canaried:v2:f2';
    await until('the canary drift alert', () => published.filter((p) => p.alert.id === id), (l) => l.length > 0);
    const cleared = Date.now();
    await mesh.clients.registry.clearCanary('canaried', 'rolled back by hand');
    const resolved = await until('the canary alert resolved', () => published.find((p) => p.alert.id === id && p.alert.state === Alert_State.RESOLVED), (p) => p !== undefined, 5000);
    // The next evaluation after the KV change reaches the monitor (one interval), with room for a loaded machine.
    expect(resolved!.at - cleared).toBeLessThan(5 * INTERVAL_MS);
    expect(resolved!.alert.message).toMatch(/^resolved: version 2 of canaried no longer serves \(canary (cleared|rolled back: rolled back by hand)\): PSI of f2/);
    // More evaluations: the window still drifts, but a version out of service is no longer judged.
    await new Promise((r) => setTimeout(r, 6 * INTERVAL_MS));
    expect(published.filter((p) => p.alert.name === 'canaried' && p.alert.version === 2).map((p) => Alert_State[p.alert.state]).filter((s, i, a) => a.indexOf(s) === i)).toEqual(['FIRING', 'RESOLVED']);
    expect(published.filter((p) => p.alert.id === id).map((p) => Alert_State[p.alert.state])).toEqual(['FIRING', 'RESOLVED']);
  }, 30_000);
});

describe('monitor killed with SIGKILL and restarted on the same NATS', () => {
  it('has the same drift, firing alerts and evaluation, and publishes no alert event in between', async () => {
    // Drift on f2, errors over the window, and outcomes that make accuracy poor.
    await send('drifty', '', rows(200, 2, [0, 0, 1.5, 0]), 'd');
    const bad = [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }];
    await Promise.all(Array.from({ length: 25 }, () => mesh.clients.router.infer('drifty', bad).catch(() => undefined)));
    await until('outcomes joined', () => mesh.clients.monitor.recordOutcomes('drifty', Array.from({ length: 200 }, (_, i) => ({ requestId: `d-${i}`, label: i % 2 }))), (r) => r.joined === 200);
    const want = ['drift:drifty:v1:f2', 'error_rate:drifty:v1', 'eval_accuracy:drifty:v1:accuracy'];
    await until('drifty alerts firing', () => mesh.clients.monitor.alerts('drifty'), (l) => want.every((id) => firing(l).includes(id)));
    // Settled: no traffic since, a few more evaluations.
    await new Promise((r) => setTimeout(r, 4 * INTERVAL_MS));
    const before = {
      drift: await mesh.clients.monitor.drift('drifty'),
      canaryDrift: await mesh.clients.monitor.drift('canaried'),
      alerts: (await mesh.clients.monitor.alerts()).map(({ id, state, sinceMs, message }) => ({ id, state, sinceMs, message })),
      evaluation: await mesh.clients.monitor.evaluation('drifty'),
    };
    expect(before.drift.find((d) => d.feature === 'f2')).toMatchObject({ version: 1, drifting: true, window: 200 });
    expect(before.alerts.find((a) => a.id === 'drift:canaried:v2:f2')?.state).toBe(Alert_State.RESOLVED);

    const mark = published.length;
    await mesh.monitor.stop('SIGKILL');
    restarted = await startService('monitor', [
      '--nats', mesh.nats.url, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0',
      '--router-address', mesh.routerAddr, '--registry-address', mesh.registryAddr, ...monitorArgs,
    ]);
    const api = new MonitorApi(`127.0.0.1:${restarted.info.grpcPort}`);
    try {
      await until('replay done', () => restarted!.logs.some((l) => l.includes('alerts and canary analysis evaluate')), (ok) => ok, 15_000);
      // More evaluations than it takes to resolve an alert nobody reports (3).
      await new Promise((r) => setTimeout(r, 8 * INTERVAL_MS));
      // Nothing resolved, nothing re-fired: no alert event since the kill.
      expect(published.slice(mark).map((p) => `${Alert_State[p.alert.state]} ${p.alert.id}: ${p.alert.message}`)).toEqual([]);
      const after = {
        drift: await api.drift('drifty'),
        canaryDrift: await api.drift('canaried'),
        alerts: (await api.alerts()).map(({ id, state, sinceMs, message }) => ({ id, state, sinceMs, message })),
        evaluation: await api.evaluation('drifty'),
      };
      expect(after.drift).toEqual(before.drift);
      expect(after.canaryDrift).toEqual(before.canaryDrift);
      expect(firing(after.alerts as Alert[])).toEqual(firing(before.alerts as Alert[]));
      expect(after.alerts).toEqual(before.alerts);
      expect(after.evaluation).toEqual(before.evaluation);
      expect(await codeOf(api.drift('nosuch'))).toBe(grpc.status.NOT_FOUND);
    } finally {
      api.close();
    }
  }, 60_000);
});
