/**
 * Case 2 — a replica frozen with SIGSTOP: calls sent to it hit their
 * deadlines, the router ejects it (never most replicas) and serves from the
 * other; after SIGCONT it is readmitted.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

let mesh: Mesh;
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }];

async function routerMetric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${mesh.router.info.restPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ').pop()) : NaN;
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 2 });
  await mesh.clients.registry.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1 }).bytes, { name: 'm', alias: 'production' });
  await mesh.waitReady('m');
});
afterAll(async () => {
  mesh?.replicas.forEach((r) => r.proc.kill('SIGCONT'));
  await mesh?.stop();
});

describe('frozen replica', () => {
  it('is ejected while frozen and readmitted after', async () => {
    const results: { at: number; code: number }[] = [];
    let stop = false;
    const caller = async () => {
      while (!stop) {
        const code = await mesh.clients.router.infer('m', input, { timeoutMs: 300 }).then(
          () => 0,
          (e: grpc.ServiceError) => e.code,
        );
        results.push({ at: Date.now(), code });
      }
    };
    const callers = Array.from({ length: 4 }, caller);
    await new Promise((r) => setTimeout(r, 500));
    const frozenAt = Date.now();
    mesh.replicas[0]!.proc.kill('SIGSTOP');
    // Ejection lasts 1 s, then 2 s, …: sample the gauge through the freeze.
    const ejected: number[] = [];
    while (Date.now() - frozenAt < 3000) {
      ejected.push(await routerMetric('infermesh_router_ejected_replicas'));
      await new Promise((r) => setTimeout(r, 100));
    }
    const thawedAt = Date.now();
    mesh.replicas[0]!.proc.kill('SIGCONT');
    await new Promise((r) => setTimeout(r, 2500));
    stop = true;
    await Promise.all(callers);
    const during = results.filter((r) => r.at >= frozenAt && r.at < thawedAt);
    const failed = during.filter((r) => r.code !== 0);
    // Only deadlines fire; once ejected, the healthy replica takes everything.
    expect(new Set(failed.map((r) => grpc.status[r.code]))).toEqual(failed.length ? new Set(['DEADLINE_EXCEEDED']) : new Set());
    // Ejected while frozen, and never more than the one (never most replicas).
    expect(Math.max(...ejected)).toBe(1);
    expect(failed.length / during.length).toBeLessThan(0.2);
    const lastSecond = results.filter((r) => r.at > Date.now() - 1000);
    expect(lastSecond.length).toBeGreaterThan(0);
    // Readmitted: the last second is served (a stray deadline while the thawed replica
    // works through its stale backlog is tolerated, a pattern of failures is not).
    expect(lastSecond.filter((r) => r.code !== 0).length, JSON.stringify(lastSecond.filter((r) => r.code !== 0))).toBeLessThanOrEqual(Math.ceil(lastSecond.length * 0.05));
    expect(await routerMetric('infermesh_router_ejected_replicas')).toBe(0);
    console.log(`frozen replica: ${during.length} calls while frozen, ${failed.length} deadline errors before ejection`);
  });
});
