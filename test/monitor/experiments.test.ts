/**
 * Experiments end to end on a real mesh (nats-server, registry, monitor, a
 * replica, a router; the CLI as a process): one A/A canary — the same model
 * pushed twice, canaried at 50 % with ~12 calls/s for 20 s while a CPU hog
 * spins — is not rolled back; then, on those requests' outcomes, `eval
 * --compare` gives intervals and p-values, `eval --by-segment
 * --optimize-threshold` gives per-segment rows and a cost and threshold equal
 * to brute force over the joined rows, `outcomes export` streams them back
 * with their segment and features, `drift --by-segment` has segment rows,
 * and the evaluation alert that fires publishes `infermesh.retrain.<model>`.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RETRAIN_STREAM, subjects } from '../../libs/bus/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent_Kind, RetrainRequest } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { cli, json } from '../cli/run-cli.js';

const NAME = 'aa';
const model = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 5 });
let mesh: Mesh;
let dir: string;
const g = () => ['--registry', mesh.registryAddr, '--monitor', mesh.monitorAddr, '--router', mesh.routerAddr];

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'experiments-'));
  const rules = path.join(dir, 'rules.json');
  // Accuracy of a model scored against noisy labels is below 0.99: the alert fires and asks for retraining.
  await writeFile(rules, JSON.stringify({ rules: [{ model: NAME, rule: 'eval_accuracy', below: 0.99, min_count: 20 }] }));
  mesh = await startMesh({
    replicas: 1,
    env: { INFERMESH_SAMPLE_RATE: '1' },
    monitorArgs: ['--alert-interval-ms', '500', '--alert-window-ms', '20000', '--canary-min-requests', '30', '--drift-min-samples', '20', '--alert-rules', rules],
  });
}, 60_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Served {
  id: string;
  version: number;
  score: number;
  channel: string;
  row: number[];
}

describe('an A/A canary through the mesh, then its outcomes', () => {
  const served: Served[] = [];
  const labels = new Map<string, number>();

  it('the same model canaried at 50 %, ~12 calls/s for 20 s under a CPU hog, is not rolled back', async () => {
    const file = path.join(dir, 'model.onnx');
    await writeFile(file, model.bytes);
    const push1 = await cli(['models', 'push', file, '--name', NAME, '--alias', 'production', '--segment-by', 'channel', '--cost-fp', '5', '--cost-fn', '50', '--json', ...g()]);
    expect(json(push1).version).toBe(1);
    expect(json(await cli(['models', 'push', file, '--name', NAME, '--json', ...g()])).version).toBe(2);
    const shown = json(await cli(['models', 'show', NAME, '--json', ...g()]));
    expect(JSON.stringify(shown)).toContain('"segmentBy":"channel"');
    await mesh.waitReady(NAME, '2');
    // Split by a sticky key (the request id in x-user), not by chance: which rows each version serves, and so
    // every number compared below, is then the same in every run (no A/A verdict that depends on the draw).
    await mesh.clients.registry.setCanary(NAME, 2, 50, 'x-user');

    const hog: ChildProcess = spawn(process.execPath, ['-e', 'const end = Date.now() + 22000; while (Date.now() < end) {}'], { stdio: 'ignore' });
    try {
      let seed = 11;
      const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2;
      const calls: Promise<void>[] = [];
      for (let i = 0; i < 240; i++) {
        const row = [rnd(), rnd(), rnd(), rnd()];
        const channel = i % 3 === 0 ? 'app' : 'web';
        const id = `aa-${i}`;
        const metadata = new grpc.Metadata();
        metadata.set('x-user', id);
        calls.push(
          mesh.clients.router
            .infer(NAME, [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: row }], { id, parameters: { channel }, metadata, timeoutMs: 5000 })
            .then((r) => void served.push({ id, version: Number(r.response.modelVersion), score: r.outputs[0]!.data[0] as number, channel, row })),
        );
        await new Promise((r) => setTimeout(r, 1000 / 12));
      }
      await Promise.all(calls);
    } finally {
      hog.kill('SIGKILL');
    }
    expect(served.filter((s) => s.version === 2).length).toBeGreaterThan(60);
    expect(served.filter((s) => s.version === 1).length).toBeGreaterThan(60);
    // Still canaried, and no rollback in the history.
    const info = await mesh.clients.registry.get(NAME);
    expect(info.traffic?.canary?.version).toBe(2);
    expect((await mesh.clients.registry.history(NAME)).filter((e) => e.kind === ModelEvent_Kind.ROLLED_BACK)).toEqual([]);
  }, 60_000);

  it('eval --compare, --by-segment and --optimize-threshold on the recorded outcomes; cost and threshold equal brute force', async () => {
    // Labels: the model's own decision, wrong for every 5th request sent (by id, not by the order answers came back in).
    const csv = ['request_id,label', ...served.map((s) => `${s.id},${(s.score >= 0.5 ? 1 : 0) ^ (Number(s.id.slice(3)) % 5 === 0 ? 1 : 0)}`)].join('\n');
    for (const line of csv.split('\n').slice(1)) labels.set(line.split(',')[0]!, Number(line.split(',')[1]));
    const file = path.join(dir, 'labels.csv');
    await writeFile(file, csv);
    // `outcomes NAME FILE` still records (the default subcommand of `outcomes`).
    const rec = json(await cli(['outcomes', NAME, file, '--json', ...g()]));
    expect(rec.recorded).toBe(served.length);

    const cmp = json(await cli(['eval', NAME, '--compare', '1', '2', '--json', ...g()]));
    expect(cmp.kind).toBe('classification');
    expect(cmp.a.version).toBe(1);
    expect(cmp.b.version).toBe(2);
    for (const v of [cmp.a, cmp.b]) {
      const acc = v.metrics.find((m: { metric: string }) => m.metric === 'accuracy');
      expect(acc.method).toBe('wilson');
      expect(acc.low).toBeLessThanOrEqual(acc.value);
      expect(acc.high).toBeGreaterThanOrEqual(acc.value);
      expect(v.metrics.map((m: { metric: string }) => m.metric)).toEqual(['accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'log_loss', 'cost_per_1000']);
    }
    // Same model on both sides: no difference is significant at 95 % … and the answer says how many samples would be needed.
    // (The split, rows and labels are fixed, and the bootstrap is seeded, so this is one fixed data set's verdict, not a draw.)
    const f1 = cmp.differences.find((d: { metric: string }) => d.metric === 'f1');
    expect(f1.method).toBe('bootstrap');
    expect(f1.pValue).toBeGreaterThan(0);
    expect(f1.pValue).toBeLessThanOrEqual(1);
    expect(cmp.differences.filter((d: { significant: boolean }) => d.significant).map((d: { metric: string }) => d.metric)).toEqual([]);
    expect(cmp.differences.every((d: { samplesNeeded: number | null }) => d.samplesNeeded === null || d.samplesNeeded > 0)).toBe(true);
    const text = await cli(['eval', NAME, '--compare', '1', '2', ...g()]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/SAMPLES NEEDED/);

    const ev = json(await cli(['eval', NAME, '--by-segment', '--optimize-threshold', '--json', ...g()]));
    expect(ev.segmentBy).toBe('channel');
    expect(ev.cost).toEqual({ costFp: 5, costFn: 50, valueTp: 0 });
    const segs = ev.versions.filter((v: { version: number }) => v.version === 1).map((v: { segment: string }) => v.segment);
    expect(segs).toEqual(['', 'app', 'web']);
    for (const version of [1, 2]) {
      const rows = served.filter((s) => s.version === version);
      const scores = rows.map((s) => Math.fround(s.score));
      const ys = rows.map((s) => labels.get(s.id)!);
      const cost = (t: number) => scores.reduce((sum, s, i) => sum + (s >= t ? (ys[i] === 1 ? 0 : 5) : ys[i] === 1 ? 50 : 0), 0);
      const whole = ev.versions.find((v: { version: number; segment: string }) => v.version === version && v.segment === '');
      expect(whole.labelled).toBe(rows.length);
      expect(whole.costPer1000).toBeCloseTo((1000 * cost(0.5)) / rows.length, 9);
      // Brute force: every distinct score and "none", recomputed from scratch; ties to the higher threshold.
      let best = { t: Math.max(...scores) < 1 ? 1 : Infinity, c: cost(Infinity) };
      for (const t of [...new Set(scores)].sort((a, b) => b - a)) if (cost(t) < best.c) best = { t, c: cost(t) };
      expect(whole.optimalThreshold).toBe(best.t);
      expect(whole.optimalCostPer1000).toBeCloseTo((1000 * best.c) / rows.length, 9);
    }
    // The same numbers on /metrics, which promtool accepts.
    const metrics = await (await fetch(`http://127.0.0.1:${mesh.monitor.info.metricsPort}/metrics`, { headers: { accept: 'text/plain' } })).text();
    const v1 = ev.versions.find((v: { version: number; segment: string }) => v.version === 1 && v.segment === '');
    const gauge = (series: string) => Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(metrics)?.[1]);
    expect(gauge(`infermesh_cost_per_1000_decisions{model="${NAME}",version="1",bound="estimate"}`)).toBeCloseTo(v1.costPer1000, 6);
    expect(gauge(`infermesh_cost_optimal_threshold{model="${NAME}",version="1"}`)).toBeCloseTo(v1.optimalThreshold, 6);
    execFileSync('promtool', ['check', 'metrics'], { input: metrics, stdio: ['pipe', 'pipe', 'pipe'] });
  }, 60_000);

  it('outcomes export streams the joined rows with segment and features; drift --by-segment has segment rows', async () => {
    const out = await cli(['outcomes', 'export', NAME, '--format', 'jsonl', ...g()]);
    expect(out.code, out.stderr).toBe(0);
    const rows = out.stdout.trim().split('\n').map((l) => JSON.parse(l) as { request_id: string; version: number; segment: string; label: number; features: number[]; outputs: number[] });
    expect(rows).toHaveLength(served.length);
    const byId = new Map(served.map((s) => [s.id, s]));
    for (const r of rows) {
      const s = byId.get(r.request_id)!;
      expect(r.version).toBe(s.version);
      expect(r.segment).toBe(s.channel);
      expect(r.label).toBe(labels.get(s.id));
      expect(r.features).toEqual(s.row.map(Math.fround));
      expect(r.outputs).toEqual([Math.fround(s.score)]);
    }
    const drift = json(await cli(['drift', NAME, '--by-segment', '--json', ...g()]));
    expect(new Set(drift.features.map((f: { segment: string | null }) => f.segment))).toEqual(new Set([null, 'app', 'web']));
  }, 30_000);

  it('the evaluation alert that fires asks for retraining on infermesh.retrain.<model>', async () => {
    const nc = await connect({ servers: mesh.nats.url });
    try {
      const jsm = await nc.jetstreamManager();
      // Every retraining request stored for the model, in stream order: a drift alert (drift_psi) may have asked first or since.
      const stored = async (): Promise<RetrainRequest[]> => {
        const { state } = await jsm.streams.info(RETRAIN_STREAM);
        const out: RetrainRequest[] = [];
        for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
          const m = await jsm.streams.getMessage(RETRAIN_STREAM, { seq }).catch(() => null);
          if (m?.subject === subjects.retrain(NAME)) out.push(RetrainRequest.decode(m.data));
        }
        return out;
      };
      const deadline = Date.now() + 20_000;
      let req: RetrainRequest | undefined;
      while (!req && Date.now() < deadline) {
        req = (await stored().catch(() => [])).find((r) => r.rule === 'eval_accuracy');
        if (!req) await new Promise((r) => setTimeout(r, 250));
      }
      expect(req, 'a retraining request from the eval_accuracy alert').toBeDefined();
      expect(req!.name).toBe(NAME);
      expect(req!.reason).toMatch(/^accuracy of aa v\d over \d+ labelled samples: 0\.\d+ < 0\.99/);
      expect(req!.exportCommand).toBe('infermesh outcomes export aa --format csv');
    } finally {
      await nc.drain();
    }
  }, 30_000);
});
