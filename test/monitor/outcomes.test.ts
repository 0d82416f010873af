/**
 * Ground truth end to end, on real processes: labelled traffic with request
 * ids to two versions through the router (every request sampled), the
 * monitor restarted (samples sent while it is down are kept by NATS), then
 * outcomes recorded in two calls with unknown ids among them. The reported
 * accuracy, precision, recall, F1, ROC-AUC and log-loss per version must equal
 * what the test computes from the same (score, label) pairs, scores from the
 * model's own weights in-process; and stay equal across another restart.
 * Then bad input codes, and `infermesh outcomes` / `infermesh eval` as processes.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MonitorApi } from '../../libs/client/index.js';
import { mlpModel, mulberry32 } from '../../libs/onnx-builder/index.js';
import type { VersionEvaluation } from '../../libs/proto/index.js';
import { binaryMetrics } from '../../services/monitor/evaluation.js';
import { startMesh, startService, type Mesh, type ServiceProc } from '../harness/mesh.js';
import { cli, json } from '../cli/run-cli.js';

const NAME = 'evalm';
const WIDTH = 4;
const PER_VERSION = 150;
/** Requests sent per version while the monitor is down. */
const WHILE_DOWN = 30;
const ENV = { INFERMESH_SAMPLE_RATE: '1', INFERMESH_SAMPLE_FLUSH_MS: '100' };
const METRICS = ['accuracy', 'precision', 'recall', 'f1', 'rocAuc', 'logLoss'] as const;

interface Pair {
  id: string;
  version: number;
  score: number;
  label: number;
}

const models = [mlpModel({ inputs: WIDTH, hidden: [8], outputs: 1, seed: 21 }), mlpModel({ inputs: WIDTH, hidden: [8], outputs: 1, seed: 24 })];

/** Rows and labels: the label follows version 1's probability (so version 1 ranks well, version 2 less so). */
function labelledRows(n: number, seed: number): { row: number[]; label: number }[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const row = Array.from({ length: WIDTH }, () => rng.normal() * 2);
    return { row, label: rng.next() < models[0]!.forward(row)[0]! ? 1 : 0 };
  });
}

/** What the monitor must report per version, computed here from the pairs. */
function expected(pairs: readonly Pair[], version: number, threshold = 0.5) {
  const mine = pairs.filter((p) => p.version === version);
  return { labelled: mine.length, ...binaryMetrics(mine.map((p) => p.score), mine.map((p) => p.label), threshold) };
}

function expectMatches(evals: VersionEvaluation[], pairs: readonly Pair[], threshold = 0.5): void {
  expect(evals.map((e) => e.version)).toEqual([1, 2]);
  for (const e of evals) {
    const want = expected(pairs, e.version, threshold);
    expect(e).toMatchObject({ name: NAME, kind: 'classification', labelled: want.labelled, threshold });
    // Scores here are float64 from the weights; the monitor's are ONNX Runtime's float32: equal to ~1e-7.
    for (const k of METRICS) expect(e[k], `v${e.version} ${k}`).toBeCloseTo(want[k], 6);
  }
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const codeOf = (p: Promise<unknown>) => p.then(() => grpc.status.OK, (err: grpc.ServiceError) => err.code);
const detailsOf = (p: Promise<unknown>) => p.then(() => '', (err: grpc.ServiceError) => err.details);

describe('ground truth and online evaluation', () => {
  let mesh: Mesh;
  let monitor: ServiceProc | null = null;
  let api: MonitorApi | null = null;
  let dir: string;
  const pairs: Pair[] = [];

  /** Sends one labelled request per row to `version`, with a request id; records its pair. */
  async function send(rows: { row: number[]; label: number }[], version: number, prefix: string): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < rows.length) {
        const i = next++;
        const { row, label } = rows[i]!;
        const id = `${prefix}-v${version}-${i}`;
        await mesh.clients.router.infer(NAME, [{ name: 'features', datatype: 'FP32', shape: [1, WIDTH], data: row }], { version: String(version), id });
        pairs.push({ id, version, score: models[version - 1]!.forward(row)[0]!, label });
      }
    };
    await Promise.all(Array.from({ length: 4 }, worker));
  }

  /** Stops the running monitor (the mesh's first, or ours) and starts a new one on the same NATS. */
  async function restartMonitor(): Promise<MonitorApi> {
    api?.close();
    await (monitor ?? mesh.monitor).stop();
    monitor = await startService('monitor', ['--nats', mesh.nats.url, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0'], ENV);
    api = new MonitorApi(`127.0.0.1:${monitor.info.grpcPort}`);
    return api;
  }

  beforeAll(async () => {
    mesh = await startMesh({ replicas: 1, env: ENV });
    dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-outcomes-'));
    await mesh.clients.registry.push(models[0]!.bytes, { name: NAME, alias: 'production' });
    await mesh.clients.registry.push(models[1]!.bytes, { name: NAME });
    await mesh.waitReady(NAME, '1');
    await mesh.waitReady(NAME, '2');
  });
  afterAll(async () => {
    api?.close();
    await monitor?.stop();
    await mesh?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reports per version what the (score, label) pairs give, across monitor restarts', async () => {
    const rows = labelledRows(2 * PER_VERSION + 2 * WHILE_DOWN, 5);
    await send(rows.slice(0, PER_VERSION), 1, 'a');
    await send(rows.slice(PER_VERSION, 2 * PER_VERSION), 2, 'a');
    // Both classes and both sides of the threshold are present, or the metrics would prove little.
    for (const v of [1, 2]) {
      const mine = pairs.filter((p) => p.version === v);
      expect(new Set(mine.map((p) => p.label)).size).toBe(2);
      expect(new Set(mine.map((p) => p.score >= 0.5)).size).toBe(2);
    }
    // The first monitor has counted every request (its batches are in the samples stream too).
    await until('the monitor to count the traffic', async () => {
      const stats = await mesh.clients.monitor.stats(NAME);
      return [1, 2].every((v) => (stats.find((s) => s.version === v)?.requests ?? 0) >= PER_VERSION) ? true : undefined;
    });

    // Monitor down: the routers keep publishing samples; NATS keeps them.
    api = null;
    await mesh.monitor.stop();
    await send(rows.slice(2 * PER_VERSION, 2 * PER_VERSION + WHILE_DOWN), 1, 'down');
    await send(rows.slice(2 * PER_VERSION + WHILE_DOWN), 2, 'down');
    await new Promise((r) => setTimeout(r, 500)); // a few router flushes
    monitor = await startService('monitor', ['--nats', mesh.nats.url, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0'], ENV);
    api = new MonitorApi(`127.0.0.1:${monitor.info.grpcPort}`);

    // Outcomes arrive later: most in one call with unknown ids among them, the rest in a second.
    const shuffled = [...pairs].sort((a, b) => (a.id < b.id ? -1 : 1));
    const cut = shuffled.length - 25;
    const unknown = ['nobody-1', 'nobody-2', 'nobody-3'].map((requestId) => ({ requestId, label: 1 }));
    const first = await api.recordOutcomes(NAME, [...shuffled.slice(0, cut).map((p) => ({ requestId: p.id, label: p.label })), ...unknown]);
    expect(first).toEqual({ recorded: cut + 3, joined: cut });
    const second = await api.recordOutcomes(NAME, shuffled.slice(cut).map((p) => ({ requestId: p.id, label: p.label })));
    expect(second).toEqual({ recorded: 25, joined: 25 });

    const evals = await api.evaluation(NAME);
    expect(evals.map((e) => e.labelled)).toEqual([PER_VERSION + WHILE_DOWN, PER_VERSION + WHILE_DOWN]);
    expectMatches(evals, pairs);
    expectMatches(await api.evaluation(NAME, 0.3), pairs, 0.3);
    // Version 1 produced the labels' probabilities: it must rank them better than version 2.
    expect(evals[0]!.rocAuc).toBeGreaterThan(evals[1]!.rocAuc);

    // Another restart: the outcomes were stored, the evaluation is the same.
    const again = await restartMonitor();
    expect(await again.evaluation(NAME)).toEqual(evals);
  });

  it('answers INVALID_ARGUMENT naming the field, and NOT_FOUND for a model with no samples', async () => {
    const c = api!;
    const ok = { requestId: 'x', label: 1 };
    expect(await codeOf(c.recordOutcomes('Bad.Name', [ok]))).toBe(grpc.status.INVALID_ARGUMENT);
    const nan = c.recordOutcomes(NAME, [ok, { requestId: 'y', label: NaN }]);
    expect(await codeOf(nan)).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await detailsOf(c.recordOutcomes(NAME, [ok, { requestId: 'y', label: NaN }]))).toMatch(/^outcomes\[1\]\.label: /);
    expect(await detailsOf(c.recordOutcomes(NAME, [{ requestId: '', label: 0 }]))).toMatch(/^outcomes\[0\]\.request_id: /);
    expect(await codeOf(c.recordOutcomes(NAME, Array.from({ length: 10_001 }, () => ok)))).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await codeOf(c.evaluation(NAME, 1.5))).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await detailsOf(c.evaluation(NAME, -0.2))).toMatch(/^threshold: /);
    expect(await codeOf(c.evaluation('no-such-model'))).toBe(grpc.status.NOT_FOUND);
    // Nothing above was stored: the evaluation is unchanged.
    expectMatches(await c.evaluation(NAME), pairs);
  });

  it('infermesh outcomes FILE and infermesh eval --json', async () => {
    const g = ['--monitor', `127.0.0.1:${monitor!.info.grpcPort}`];
    // Ten labels of version 1 turn out different: a CSV with a quoted id column and an extra column.
    const flipped = pairs.filter((p) => p.version === 1).slice(0, 10);
    for (const p of flipped) p.label = 1 - p.label;
    const csv = ['label,request_id,note', ...flipped.map((p) => `${p.label},"${p.id}",corrected`)].join('\n');
    await writeFile(path.join(dir, 'fix.csv'), `${csv}\n`);
    expect(json(await cli(['outcomes', NAME, path.join(dir, 'fix.csv'), '--json', ...g]))).toEqual({ name: NAME, recorded: 10, joined: 10, batches: 1 });

    // Every pair again as JSON lines, plus ids the monitor never saw: two batches of at most 1,000.
    const lines = [...pairs.map((p) => JSON.stringify({ request_id: p.id, label: p.label })), ...Array.from({ length: 700 }, (_, i) => JSON.stringify({ request_id: `ghost-${i}`, label: 0 }))];
    await writeFile(path.join(dir, 'all.jsonl'), lines.join('\n'));
    expect(json(await cli(['outcomes', NAME, path.join(dir, 'all.jsonl'), '--json', ...g]))).toEqual({ name: NAME, recorded: lines.length, joined: pairs.length, batches: 2 });

    const out = json(await cli(['eval', NAME, '--json', ...g]));
    expect(out.name).toBe(NAME);
    expect(out.threshold).toBe(0.5);
    expectMatches(out.versions as VersionEvaluation[], pairs);
    const strict = json(await cli(['eval', NAME, '--threshold', '0.3', '--json', ...g]));
    expectMatches(strict.versions as VersionEvaluation[], pairs, 0.3);

    const table = await cli(['eval', NAME, ...g]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^VERSION\s+LABELLED\s+THRESHOLD\s+ACCURACY\s+PRECISION\s+RECALL\s+F1\s+ROC_AUC\s+LOG_LOSS$/m);
    expect(table.stdout).toMatch(new RegExp(`^\\s*1\\s+${PER_VERSION + WHILE_DOWN}\\s+0\\.5\\s`, 'm'));
    expect(table.stdout).toMatch(/^best F1: version [12] /m);

    const bad = await cli(['eval', NAME, '--threshold', '2', ...g]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: INVALID_ARGUMENT: --threshold/m);
    await writeFile(path.join(dir, 'bad.csv'), 'request_id,label\nabc,1\ndef,yes\n');
    const badFile = await cli(['outcomes', NAME, path.join(dir, 'bad.csv'), ...g]);
    expect(badFile.code).toBe(2);
    expect(badFile.stderr).toMatch(/bad\.csv:3: label must be a finite number/);
  });
});
