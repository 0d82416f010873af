/**
 * `infermesh traces slow` and `infermesh infer --timing` as processes against
 * a real mesh whose head sampler keeps no traces (OTEL_TRACES_SAMPLER_ARG=0):
 * the slow requests must still come with trace ids.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { oip } from '../../libs/proto/index.js';
import { timingOf, timingTable } from '../../services/cli/infer.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { cli, expectCleanError, json } from './run-cli.js';

const TRACE_ID = /^[0-9a-f]{32}$/;
const NAME = 'slowcli';
const ROW = [0.5, -0.25, 1, 2];

describe('traces slow and infer --timing against a running mesh', () => {
  let mesh: Mesh;
  let dir: string;
  let g: string[];

  beforeAll(async () => {
    mesh = await startMesh({ replicas: 1, env: { OTEL_TRACES_SAMPLER_ARG: '0' } });
    g = ['--registry', mesh.registryAddr, '--router', mesh.routerAddr, '--monitor', mesh.monitorAddr];
    dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-traces-'));
    const file = path.join(dir, 'm.onnx');
    await writeFile(file, mlpModel({ inputs: 4, hidden: [8], outputs: 2, seed: 3 }).bytes);
    const pushed = await cli(['models', 'push', file, '--name', NAME, '--alias', 'production', ...g]);
    expect(pushed.code, pushed.stderr).toBe(0);
    await mesh.waitReady(NAME);
    for (let i = 0; i < 20; i++) {
      await mesh.clients.router.infer(NAME, [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: ROW }]);
    }
  });
  afterAll(async () => {
    await mesh?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('traces slow --json lists the slowest requests with trace ids and a breakdown', async () => {
    let requests: Record<string, any>[] = [];
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      const r = await cli(['traces', 'slow', NAME, '--json', ...g]);
      if (r.code === 0) requests = json(r).requests;
      if (requests.length > 0) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(requests.length).toBeGreaterThanOrEqual(1);
    expect(requests.length).toBeLessThanOrEqual(20);
    for (const r of requests) {
      expect(r).toMatchObject({ name: NAME, version: 1, code: 0 });
      expect(r.traceId).toMatch(TRACE_ID);
      expect(r.latencyMs).toBeGreaterThan(0);
      for (const part of ['queueMs', 'computeMs', 'networkMs', 'routerMs']) expect(r[part]).toBeGreaterThanOrEqual(0);
      expect(r.computeMs).toBeGreaterThan(0);
      expect(r.computeMs).toBeLessThanOrEqual(r.latencyMs);
      // The parts cover the total (more only where the router clamped a negative network time to 0).
      expect(r.queueMs + r.computeMs + r.networkMs + r.routerMs).toBeGreaterThanOrEqual(r.latencyMs - 0.002);
      expect(r.atMs).toBeGreaterThan(Date.now() - 120_000);
    }
    const latencies = requests.map((r) => r.latencyMs as number);
    expect(latencies).toEqual([...latencies].sort((a, b) => b - a));
  });

  it('traces slow prints a table, one row per request, slowest first', async () => {
    const r = await cli(['traces', 'slow', NAME, '--limit', '1', ...g]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^TIME\s+VERSION\s+TRACE_ID\s+TOTAL_MS\s+ROUTER_MS\s+NETWORK_MS\s+QUEUE_MS\s+COMPUTE_MS\s+CODE$/);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z\s+1\s+[0-9a-f]{32}(\s+\d+\.\d{3}){5}\s+OK$/);
  });

  it('traces slow errors: bad name, unknown model, bad --limit', async () => {
    expectCleanError(await cli(['traces', 'slow', 'nosuchmodel', ...g]), 1, 'NOT_FOUND');
    expectCleanError(await cli(['traces', 'slow', 'Bad.Name', '--json', ...g]), 1, 'INVALID_ARGUMENT');
    expectCleanError(await cli(['traces', 'slow', NAME, '--limit', '0', ...g]), 2, 'INVALID_ARGUMENT');
    expectCleanError(await cli(['traces', 'slow', NAME, '--limit', '101', ...g]), 2, 'INVALID_ARGUMENT');
  });

  it('infer --timing --json adds the router timing in ms', async () => {
    const out = json(await cli(['infer', NAME, '--input', JSON.stringify({ features: [ROW] }), '--timing', '--json', ...g]));
    expect(out.outputs[0]).toMatchObject({ name: 'score', shape: [1, 2] });
    const t = out.timing;
    expect(Object.keys(t).sort()).toEqual(['compute_ms', 'network_ms', 'queue_ms', 'router_ms', 'total_ms', 'trace_id']);
    expect(t.compute_ms).toBeGreaterThan(0);
    expect(t.total_ms).toBeGreaterThanOrEqual(t.compute_ms);
    for (const k of ['router_ms', 'network_ms', 'queue_ms']) expect(t[k]).toBeGreaterThanOrEqual(0);
    // The head sampler keeps nothing here, so no trace id.
    expect(t.trace_id).toBeNull();

    const plain = json(await cli(['infer', NAME, '--input', JSON.stringify({ features: [ROW] }), '--json', ...g]));
    expect(plain.timing).toBeUndefined();
  });

  it('infer --timing prints a timing table under the outputs', async () => {
    const r = await cli(['infer', NAME, '--input', JSON.stringify({ features: [ROW] }), '--timing', ...g]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    const at = lines.findIndex((l) => /^\s*TOTAL_MS\s+ROUTER_MS\s+NETWORK_MS\s+QUEUE_MS\s+COMPUTE_MS\s+TRACE_ID$/.test(l));
    expect(at, r.stdout).toBeGreaterThan(0);
    const m = /^\s*(\d+\.\d{3})\s+(\d+\.\d{3})\s+(\d+\.\d{3})\s+(\d+\.\d{3})\s+(\d+\.\d{3})\s+-$/.exec(lines[at + 1]!);
    expect(m, lines[at + 1]).not.toBeNull();
    const [total, , , , compute] = m!.slice(1).map(Number) as [number, number, number, number, number];
    expect(total).toBeGreaterThanOrEqual(compute);
    expect(compute).toBeGreaterThan(0);
  });
});

describe('infer timing parameters', () => {
  it('reads the router parameters in ms, with the trace id when traced', () => {
    const int = (value: number) => ({ parameterChoice: { $case: 'int64Param' as const, value } });
    const res = oip.ModelInferResponse.fromPartial({
      parameters: {
        'infermesh.total_us': int(2500),
        'infermesh.router_us': int(300),
        'infermesh.network_us': int(200),
        'infermesh.queue_us': int(500),
        'infermesh.compute_us': int(1500),
        'infermesh.trace_id': { parameterChoice: { $case: 'stringParam', value: 'ab'.repeat(16) } },
      },
    });
    const t = timingOf(res);
    expect(t).toEqual({ total_ms: 2.5, router_ms: 0.3, network_ms: 0.2, queue_ms: 0.5, compute_ms: 1.5, trace_id: 'ab'.repeat(16) });
    expect(timingTable(t).split('\n')[1]).toMatch(new RegExp(`^\\s*2\\.500\\s+0\\.300\\s+0\\.200\\s+0\\.500\\s+1\\.500\\s+${'ab'.repeat(16)}$`));
    // A response from a router that sends no timing.
    expect(timingOf(oip.ModelInferResponse.fromPartial({}))).toEqual({
      total_ms: null, router_ms: null, network_ms: null, queue_ms: null, compute_ms: null, trace_id: null,
    });
  });
});
