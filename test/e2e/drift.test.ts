/**
 * Drift end to end: a model pushed with a reference file (through the CLI),
 * live traffic through the router with every request sampled, and the
 * monitor's GetDrift, Prometheus gauges and `infermesh drift` showing the
 * shifted feature drifting while the others stay put; a version pushed
 * without a reference is compared with the previous version's window.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel, mulberry32 } from '../../libs/onnx-builder/index.js';
import { Alert_State, type Alert, type FeatureDrift } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { cli, expectCleanError, json } from '../cli/run-cli.js';

const NAME = 'drifty';
const FEATURES = ['f0', 'f1', 'f2', 'f3'];
const TRAFFIC = 400;

let mesh: Mesh;
let dir: string;
const alerts: Alert[] = [];
const watching = new AbortController();
let g: string[];
const model = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 11 });

/** `n` rows of 4 features ~ N(0,1) plus `shift[j]` on feature j. */
function rows(n: number, seed: number, shift: number[] = []): number[][] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => FEATURES.map((_, j) => rng.normal() + (shift[j] ?? 0)));
}

/** One request per row (each request's first row is what the router samples), 20 at a time. */
async function send(version: string, data: number[][]): Promise<void> {
  for (let i = 0; i < data.length; i += 20) {
    await Promise.all(
      data.slice(i, i + 20).map((r) => mesh.clients.router.infer(NAME, [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: r }], { version })),
    );
  }
}

/** GetDrift of `version`, once its window holds at least `n` samples. */
async function driftOnce(version: number, n: number): Promise<FeatureDrift[]> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const rows = await mesh.clients.monitor.drift(NAME, version).catch(() => []);
    if (rows.length > 0 && rows[0]!.window >= n) return rows;
    if (Date.now() > deadline) throw new Error(`no drift window of ${n} samples for ${NAME} v${version}: ${JSON.stringify(rows.slice(0, 2))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const codeOf = (p: Promise<unknown>) => p.then(() => 0, (e: grpc.ServiceError) => e.code);

beforeAll(async () => {
  mesh = await startMesh({ env: { INFERMESH_SAMPLE_RATE: '1', INFERMESH_SAMPLE_FLUSH_MS: '100' }, monitorArgs: ['--alert-interval-ms', '200', '--alert-for', '2'] });
  void mesh.clients.monitor.watchAlerts(NAME, (a) => alerts.push(a), watching.signal);
  g = ['--registry', mesh.registryAddr, '--router', mesh.routerAddr, '--monitor', mesh.monitorAddr];
  dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-drift-'));
  await writeFile(path.join(dir, 'model.onnx'), model.bytes);
  await writeFile(path.join(dir, 'reference.csv'), `${FEATURES.join(',')}\n${rows(5000, 1).map((r) => r.join(',')).join('\n')}\n`);
});
afterAll(async () => {
  watching.abort();
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('drift', () => {
  it('a shifted feature drifts against the reference profile; the others and their noise do not', async () => {
    const pushed = json(await cli(['models', 'push', path.join(dir, 'model.onnx'), '--name', NAME, '--alias', 'production', '--reference', path.join(dir, 'reference.csv'), '--json', ...g], 60_000));
    expect(pushed).toMatchObject({ name: NAME, version: 1, reference: path.join(dir, 'reference.csv') });
    await mesh.waitReady(NAME, '1');
    await send('1', rows(TRAFFIC, 2, [0, 0, 1.5, 0]));
    const drift = await driftOnce(1, TRAFFIC);

    const by = new Map(drift.map((d) => [d.feature, d]));
    expect([...by.keys()].sort()).toEqual(['f0', 'f1', 'f2', 'f3', 'output:score[0]']);
    expect(drift[0]).toMatchObject({ name: NAME, version: 1, feature: 'f2', baseline: 'reference', window: TRAFFIC, drifting: true });
    expect(drift[0]!.psi).toBeGreaterThan(0.2);
    expect(drift[0]!.ks).toBeGreaterThan(0.2);
    for (const f of ['f0', 'f1', 'f3']) {
      expect(by.get(f)!.psi, f).toBeLessThan(0.1);
      expect(by.get(f)!.ks, f).toBeLessThan(0.1);
      expect(by.get(f)!.drifting, f).toBe(false);
    }
    expect(by.get('output:score[0]')).toMatchObject({ baseline: 'reference', window: TRAFFIC });

    // The same numbers on /metrics.
    const text = await (await fetch(`http://127.0.0.1:${mesh.monitor.info.metricsPort}/metrics`)).text();
    const psiLine = new RegExp(`^infermesh_drift_psi\\{model="${NAME}",version="1",feature="f2"\\} (\\S+)$`, 'm').exec(text);
    expect(Number(psiLine?.[1])).toBeGreaterThan(0.2);
    expect(text).toMatch(new RegExp(`^infermesh_drift_ks\\{model="${NAME}",version="1",feature="output:score\\[0\\]"\\} `, 'm'));

    // One alert fires for f2, once, however many evaluations follow; none for the unshifted features.
    const end = Date.now() + 10_000;
    while (Date.now() < end && !alerts.some((a) => a.subject === 'f2')) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 1500)); // several more evaluations
    const v1Alerts = alerts.filter((a) => a.version === 1);
    expect(v1Alerts.map((a) => [a.id, a.rule, Alert_State[a.state]])).toEqual([['drift:drifty:v1:f2', 'drift_psi', 'FIRING']]);
    expect(v1Alerts[0]!.value).toBeGreaterThan(0.2);
    expect(v1Alerts[0]!.threshold).toBe(0.2);
  });

  it('a version pushed without a reference is compared with the previous version window', async () => {
    const v2 = await mesh.clients.registry.push(model.bytes, { name: NAME });
    expect(v2.version).toBe(2);
    await mesh.waitReady(NAME, '2');
    // Feature 2 shifted as in v1's traffic, feature 0 newly shifted.
    await send('2', rows(TRAFFIC, 3, [2, 0, 1.5, 0]));
    const drift = await driftOnce(2, TRAFFIC);
    const by = new Map(drift.map((d) => [d.feature, d]));
    // Names from v1's reference profile; baseline v1's live window.
    expect([...by.keys()].sort()).toEqual(['f0', 'f1', 'f2', 'f3', 'output:score[0]']);
    expect(drift.every((d) => d.baseline === 'version:1' && d.version === 2)).toBe(true);
    expect(drift[0]).toMatchObject({ feature: 'f0', drifting: true });
    for (const f of ['f1', 'f2', 'f3']) expect(by.get(f)!.drifting, f).toBe(false);
    expect(by.get('f2')!.psi).toBeLessThan(0.2);
    // Every version at once: v1 still against its reference.
    const all = await mesh.clients.monitor.drift(NAME);
    expect(new Set(all.map((d) => `${d.version}:${d.baseline}`))).toEqual(new Set(['1:reference', '2:version:1']));
  });

  it('GetDrift codes: INVALID_ARGUMENT for a bad name, NOT_FOUND for a model with no samples', async () => {
    expect(await codeOf(mesh.clients.monitor.drift('Not A Name'))).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await codeOf(mesh.clients.monitor.drift(''))).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await codeOf(mesh.clients.monitor.drift('nosuchmodel'))).toBe(grpc.status.NOT_FOUND);
  });

  it('infermesh drift: JSON for scripts, a table for people, clean errors', async () => {
    const out = json(await cli(['drift', NAME, '--json', ...g]));
    expect(out.name).toBe(NAME);
    const rowsOut = out.features as { feature: string; version: number; psi: number; ks: number; window: number; baseline: string; drifting: boolean }[];
    // The inputs that drift (v2's score may drift along with its shifted input).
    expect(rowsOut.filter((r) => r.drifting && !r.feature.startsWith('output:')).map((r) => `${r.version}:${r.feature}`).sort()).toEqual(['1:f2', '2:f0']);
    expect(rowsOut[0]!.drifting).toBe(true);
    expect(rowsOut.every((r) => r.window === TRAFFIC)).toBe(true);

    const one = json(await cli(['drift', NAME, '--version', '2', '--json', ...g]));
    expect(new Set((one.features as { version: number }[]).map((r) => r.version))).toEqual(new Set([2]));

    const table = await cli(['drift', NAME, ...g]);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^FEATURE\s+VERSION\s+PSI\s+KS\s+WINDOW\s+BASELINE\s+DRIFTING$/);
    expect(lines[1]).toMatch(/^(f2\s+1|f0\s+2)\s+\d+\.\d{3}\s+\d\.\d{3}\s+400\s+(reference|version:1)\s+yes$/);
    expect(lines).toHaveLength(11);

    expectCleanError(await cli(['drift', 'nosuchmodel', ...g]), 1, 'NOT_FOUND');
    expectCleanError(await cli(['models', 'push', path.join(dir, 'model.onnx'), '--name', NAME, '--reference', path.join(dir, 'model.onnx'), ...g]), 2, 'INVALID_ARGUMENT');
  });
});
