/**
 * Every replica killed (SIGKILL): the router answers UNAVAILABLE at once,
 * never holding a call until its deadline, and keeps running.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { alive, outcome, sleep, steadyLoad, until } from './helpers.js';

let mesh: Mesh;
const model = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 32 });
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: [1, 2, 3, 4, 5, 6, 7, 8] }];

beforeAll(async () => {
  mesh = await startMesh({ replicas: 2 });
  await mesh.clients.registry.push(model.bytes, { name: 'risk', alias: 'production' });
  await mesh.waitReady('risk');
});
afterAll(async () => {
  await mesh?.stop();
});

describe('all replicas down', () => {
  it('calls in flight and new calls answer UNAVAILABLE, each within 1 s', async () => {
    // Calls in flight at the moment of the kill are answered, not left hanging.
    const load = steadyLoad(mesh.clients.router, 'risk', input, 6, 5_000);
    await until('calls answered under load', () => load.answers.length >= 10, 20_000);
    const killedAt = Date.now();
    await Promise.all(mesh.replicas.map((r) => r.stop('SIGKILL')));
    await sleep(1_500);
    await until('calls answered after the kill', () => load.answers.some((a) => a.at > killedAt + 100), 10_000);
    const answers = await load.stop();
    const afterKill = answers.filter((a) => a.at > killedAt + 100);
    expect(afterKill.length).toBeGreaterThan(0);
    for (const a of afterKill) {
      expect(grpc.status[a.code], a.details).toBe('UNAVAILABLE');
      expect(a.ms).toBeLessThan(1_000);
    }
    expect(answers.every((a) => a.code === grpc.status.OK || a.code === grpc.status.UNAVAILABLE)).toBe(true);
    // Calls in flight at the kill: answered (by a retry that finds no one), not held.
    const inFlight = answers.filter((a) => a.at >= killedAt);
    for (const a of inFlight) expect(a.ms).toBeLessThan(1_000);

    // Fresh calls, with a deadline far away, one by one and concurrently.
    const single: number[] = [];
    for (let i = 0; i < 20; i++) {
      const o = await outcome(mesh.clients.router.infer('risk', input, { timeoutMs: 5_000 }));
      expect(grpc.status[o.code], o.details).toBe('UNAVAILABLE');
      single.push(o.ms);
    }
    const burst = await Promise.all(Array.from({ length: 30 }, () => outcome(mesh.clients.router.infer('risk', input, { timeoutMs: 5_000 }))));
    for (const o of burst) expect(grpc.status[o.code], o.details).toBe('UNAVAILABLE');
    const worst = Math.max(...single, ...burst.map((o) => o.ms), ...inFlight.map((a) => a.ms));
    console.log(`all-down: ${afterKill.length} calls under load after the kill, worst UNAVAILABLE after ${worst.toFixed(1)} ms`);
    expect(worst).toBeLessThan(1_000);
    expect(alive(mesh.router)).toBe(true);
    expect(await mesh.clients.router.ready()).toBe(true);
  });

  it('still UNAVAILABLE at once past the replicas’ heartbeat TTL', async () => {
    // The replicas bucket drops silent replicas after its TTL (10 s); whether or not the router
    // has noticed yet, a call must not wait for its deadline.
    await sleep(10_500);
    for (let i = 0; i < 10; i++) {
      const o = await outcome(mesh.clients.router.infer('risk', input, { timeoutMs: 5_000 }));
      expect(grpc.status[o.code], o.details).toBe('UNAVAILABLE');
      expect(o.ms).toBeLessThan(1_000);
    }
    expect(alive(mesh.router)).toBe(true);
  });
});
