/**
 * The monitor's operations half against real processes: golden probes and
 * their alert (fires once, resolves once), error-rate alerts over the serving
 * window, alerts surviving a monitor restart without re-firing, automatic
 * canary rollback with its reason in the lifecycle history, and /metrics
 * accepted by promtool.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInferRequest, MonitorApi } from '../../libs/client/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { Alert_State, ModelEvent_Kind, oip, type Alert } from '../../libs/proto/index.js';
import { startService, startMesh, type Mesh, type ServiceProc } from '../harness/mesh.js';
import { CLI, cli, expectCleanError, json } from '../cli/run-cli.js';

const MONITOR_ARGS = [
  '--alert-interval-ms', '300',
  '--alert-window-ms', '4000',
  '--alert-for', '1',
  '--alert-resolve-after', '3',
  '--alert-min-requests', '20',
  '--canary-min-requests', '20',
  '--canary-min-labelled', '40',
  // Latency is not what these canaries are judged on; keep loopback jitter out of it.
  '--canary-min-p99-delta-ms', '200',
];

let mesh: Mesh;
let restarted: ServiceProc | undefined;
let watchStop: AbortController;
const watched: Alert[] = [];
const v1 = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 31 });
const row = [0.3, -0.2, 0.9, 1.5, -1, 0.1, 0.4, 2];
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: row }];

async function until<T>(get: () => Promise<T> | T, ok: (v: T) => boolean, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const changesOf = (id: string) => watched.filter((a) => a.id === id).map((a) => Alert_State[a.state]);

beforeAll(async () => {
  // Every request sampled, so outcomes can join each one.
  mesh = await startMesh({ replicas: 1, monitorArgs: MONITOR_ARGS, env: { INFERMESH_SAMPLE_RATE: '1' } });
  await mesh.clients.registry.push(v1.bytes, { name: 'probed', alias: 'production' });
  await mesh.clients.registry.push(v1.bytes, { name: 'errs', alias: 'production' });
  await mesh.waitReady('probed');
  await mesh.waitReady('errs');
  watchStop = new AbortController();
  void mesh.clients.monitor.watchAlerts('', (a) => watched.push(a), watchStop.signal);
}, 60_000);

afterAll(async () => {
  watchStop?.abort();
  await mesh?.stop();
  await restarted?.stop();
});

describe('golden probes', () => {
  const request = oip.ModelInferRequest.encode(buildInferRequest('probed', input)).finish();
  const right = Array.from(v1.forward(row));

  it('a probe with the right answer raises nothing; a wrong answer fires one alert, which resolves once when fixed', async () => {
    await mesh.clients.registry.setProbe({ name: 'probed', request, expected: right, tolerance: 1e-4, intervalMs: 1000 });
    // The probe runs at once and then every second; give it a few rounds.
    await new Promise((r) => setTimeout(r, 2500));
    expect(changesOf('probe:probed:v1')).toEqual([]);

    await mesh.clients.registry.setProbe({ name: 'probed', request, expected: right.map((x) => x + 0.5), tolerance: 1e-4, intervalMs: 1000 });
    const firing = await until(() => mesh.clients.monitor.alerts('probed'), (l) => l.some((a) => a.rule === 'probe' && a.state === Alert_State.FIRING));
    const a = firing.find((x) => x.rule === 'probe')!;
    expect(a.state).toBe(Alert_State.FIRING);
    expect(a.message).toMatch(/wrong answer: output element 0 differs by 0\.5/);
    // The id and version name the version that answered (probe:<model>:v<version>).
    expect(a.id).toBe('probe:probed:v1');
    expect(a.version).toBe(1);
    // Several more failing probes and evaluations: still one FIRING, no storm.
    await new Promise((r) => setTimeout(r, 2500));
    expect(changesOf(a.id)).toEqual(['FIRING']);

    await mesh.clients.registry.setProbe({ name: 'probed', request, expected: right, tolerance: 1e-4, intervalMs: 1000 });
    await until(() => changesOf(a.id), (c) => c.length >= 2);
    await new Promise((r) => setTimeout(r, 1500));
    expect(changesOf(a.id)).toEqual(['FIRING', 'RESOLVED']);
  }, 40_000);

  it('a bad probe is refused with INVALID_ARGUMENT naming the field', async () => {
    const codeOf = (p: Promise<unknown>) => p.then(() => 0, (e: grpc.ServiceError) => `${grpc.status[e.code]} ${e.details}`);
    expect(await codeOf(mesh.clients.registry.setProbe({ name: 'probed', request, expected: [], intervalMs: 1000 }))).toMatch(/^INVALID_ARGUMENT .*probe\.expected/);
    expect(await codeOf(mesh.clients.registry.setProbe({ name: 'probed', request, expected: right, intervalMs: 10 }))).toMatch(/^INVALID_ARGUMENT .*probe\.interval_ms/);
    expect(await codeOf(mesh.clients.registry.setProbe({ name: 'probed', request: Uint8Array.of(0xff, 0xff), expected: right, intervalMs: 1000 }))).toMatch(/^INVALID_ARGUMENT .*probe\.request/);
    expect(await codeOf(mesh.clients.registry.setProbe({ name: '../x', request, expected: right, intervalMs: 1000 }))).toMatch(/^INVALID_ARGUMENT .*probe\.name/);
    expect(await codeOf(mesh.clients.registry.setProbe({ name: 'nosuch', request, expected: right, intervalMs: 1000 }))).toMatch(/^NOT_FOUND/);
  });
});

describe('CLI', () => {
  it('models probe snapshots today\'s answer as the expected one; alerts --json lists alerts; clean errors', async () => {
    const g = ['--registry', mesh.registryAddr, '--router', mesh.routerAddr, '--monitor', mesh.monitorAddr];
    const stored = json(await cli(['models', 'probe', 'probed', '--input', `{"features": [${JSON.stringify(row)}]}`, '--every', '5', '--json', ...g]));
    expect(stored.model).toBe('probed');
    expect(stored.interval_ms).toBe(5000);
    expect(stored.expected).toHaveLength(1);
    expect(stored.expected[0]).toBeCloseTo(v1.forward(row)[0]!, 5);
    const listed = json(await cli(['alerts', '--json', ...g]));
    expect(Array.isArray(listed.alerts)).toBe(true);
    for (const a of listed.alerts) expect(a).toMatchObject({ id: expect.any(String), state: expect.stringMatching(/^(firing|resolved)$/) });
    expectCleanError(await cli(['alerts', 'Bad.Name', ...g]), 1, 'INVALID_ARGUMENT');
    expectCleanError(await cli(['models', 'probe', 'probed', '--input', '{"features": [[1]]}', '--expect', '[]', ...g]), 2, 'INVALID_ARGUMENT');
  });

  it('stats --watch refreshes until Ctrl-C (one JSON object per refresh), then exits 0', async () => {
    const p = spawn(process.execPath, [CLI, 'stats', 'probed', '--watch', '0.2', '--json', '--monitor', mesh.monitorAddr], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    await until(() => out.split('\n').filter(Boolean).length, (n) => n >= 3, 10_000);
    p.kill('SIGINT');
    const code = await new Promise<number | null>((r) => p.once('close', r));
    expect(code).toBe(0);
    const refreshes = out.trim().split('\n').map((l) => JSON.parse(l) as { versions: { name: string }[]; at: string });
    expect(refreshes.length).toBeGreaterThanOrEqual(3);
    expect(new Set(refreshes.map((r) => r.at)).size).toBe(refreshes.length);
    for (const r of refreshes) expect(r.versions.map((v) => v.name)).toContain('probed');
  });
});

describe('serving alerts', () => {
  it('an error rate over the threshold fires once and resolves once the window is clean; a restarted monitor does not re-fire it', async () => {
    const bad = [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }];
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) calls.push(mesh.clients.router.infer('errs', i % 2 ? input : bad).catch(() => undefined));
    await Promise.all(calls);
    const list = await until(() => mesh.clients.monitor.alerts('errs'), (l) => l.some((a) => a.rule === 'error_rate' && a.state === Alert_State.FIRING));
    const a = list.find((x) => x.rule === 'error_rate')!;
    expect(a).toBeDefined();
    expect(a.id).toBe('error_rate:errs:v1');
    expect(a.value).toBeCloseTo(0.5, 1);
    expect(a.threshold).toBe(0.05);

    // Restart the monitor while the alert fires: it restores the state from JetStream and does not fire again.
    const old = mesh.monitor;
    await old.stop();
    const fresh: ServiceProc = await startService('monitor', [
      '--nats', mesh.nats.url, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0',
      '--router-address', mesh.routerAddr, '--registry-address', mesh.registryAddr, ...MONITOR_ARGS,
    ], { INFERMESH_SAMPLE_FLUSH_MS: '200' });
    restarted = fresh;
    const api = new MonitorApi(`127.0.0.1:${fresh.info.grpcPort}`);
    const seen: Alert[] = [];
    const ac = new AbortController();
    void api.watchAlerts('errs', (x) => seen.push(x), ac.signal);
    try {
      const restored = await api.alerts('errs');
      expect(restored.find((x) => x.id === a.id)?.state).toBe(Alert_State.FIRING);
      // Clean traffic; the bad requests leave the 4 s window, then three good evaluations resolve it.
      const end = Date.now() + 12_000;
      let resolved = false;
      while (Date.now() < end && !resolved) {
        await mesh.clients.router.infer('errs', input);
        resolved = seen.some((x) => x.id === a.id && x.state === Alert_State.RESOLVED);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(resolved).toBe(true);
      // The watch starts with the firing alerts: one FIRING (the restored one), then one RESOLVED; nothing re-fired.
      expect(seen.filter((x) => x.id === a.id).map((x) => Alert_State[x.state])).toEqual(['FIRING', 'RESOLVED']);
    } finally {
      ac.abort();
      api.close();
      // Later tests use the mesh's monitor client: point it at the new monitor.
      mesh.clients.monitor.close();
      mesh.clients.monitor = new MonitorApi(`127.0.0.1:${fresh.info.grpcPort}`);
      watchStop.abort();
      watchStop = new AbortController();
      void mesh.clients.monitor.watchAlerts('', (x) => watched.push(x), watchStop.signal);
    }
  }, 60_000);
});

describe('canary analysis', () => {
  it('a canary that returns errors is rolled back automatically, with the reason in its history; production callers saw no failure', async () => {
    const reg = mesh.clients.registry;
    await reg.push(v1.bytes, { name: 'canaried', alias: 'production' });
    // v2 takes 9 features: every request the canary gets fails with INVALID_ARGUMENT.
    const v2 = mlpModel({ inputs: 9, hidden: [16], outputs: 1, seed: 32 });
    await reg.push(v2.bytes, { name: 'canaried' });
    await mesh.waitReady('canaried', '2');
    await reg.setCanary('canaried', 2, 30);

    const failures: { at: number; code: number }[] = [];
    const versions = new Set<string>();
    let stop = false;
    let rolledBackAt = 0;
    const loop = async () => {
      while (!stop) {
        try {
          versions.add((await mesh.clients.router.infer('canaried', input, { timeoutMs: 5000 })).response.modelVersion);
        } catch (e) {
          failures.push({ at: Date.now(), code: (e as grpc.ServiceError).code });
        }
      }
    };
    const loops = [loop(), loop()];
    try {
      const info = await until(() => reg.get('canaried'), (m) => !m.traffic?.canary, 30_000);
      rolledBackAt = Date.now();
      expect(info.traffic?.canary).toBeUndefined();
      expect(info.traffic?.aliases['production']).toBe(1);
      // Keep calling a little after the rollback: no failure any more.
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      stop = true;
      await Promise.all(loops);
    }
    expect(failures.length).toBeGreaterThan(0);
    // Every failure was the canary's own (its shape check), and none came after the rollback reached the router.
    expect(new Set(failures.map((f) => grpc.status[f.code]))).toEqual(new Set(['INVALID_ARGUMENT']));
    expect(failures.filter((f) => f.at > rolledBackAt + 500)).toEqual([]);
    expect([...versions]).toEqual(['1']);

    const history = await reg.history('canaried');
    const rb = history.find((e) => e.kind === ModelEvent_Kind.ROLLED_BACK && e.alias === 'canary');
    expect(rb?.version).toBe(2);
    expect(rb?.reason).toMatch(/^canary analysis: canary v2 error rate \d+\.\d+ % vs production v1 0\.00 %/);

    // The canary alert fires once (then resolves: the canary is gone).
    const fired = await until(() => watched.filter((a) => a.rule === 'canary' && a.name === 'canaried' && a.state === Alert_State.FIRING), (l) => l.length > 0);
    expect(fired).toHaveLength(1);
    expect(fired[0]!.message).toMatch(/^canary rolled back: canary v2 error rate/);
  }, 60_000);
});

describe('canary analysis on outcomes', () => {
  it('a canary that scores worse on the recorded outcomes is rolled back, with the metric in the reason', async () => {
    const reg = mesh.clients.registry;
    const p1 = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 41 });
    const p2 = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 42 });
    await reg.push(p1.bytes, { name: 'scored', alias: 'production' });
    await reg.push(p2.bytes, { name: 'scored' });
    await mesh.waitReady('scored', '2');
    await reg.setCanary('scored', 2, 50);

    // Labels: what v1 predicts (so v1 is right every time); v2, with other weights, is not.
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2;
    const rows = Array.from({ length: 240 }, () => [rnd(), rnd(), rnd(), rnd()]);
    const label = (r: number[]) => (p1.forward(r)[0]! >= 0.5 ? 1 : 0);
    const served = new Map<string, string>();
    for (let i = 0; i < rows.length; i++) {
      const r = await mesh.clients.router.infer('scored', [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: rows[i]! }], { id: `s-${i}` });
      served.set(`s-${i}`, r.response.modelVersion);
    }
    // Precondition from the models themselves: v2's F1 on its share is well below v1's (1.0).
    const f1 = (v: string) => {
      let tp = 0, fp = 0, fn = 0;
      rows.forEach((r, i) => {
        if (served.get(`s-${i}`) !== v) return;
        const m = v === '1' ? p1 : p2;
        const pred = m.forward(r)[0]! >= 0.5 ? 1 : 0;
        const y = label(r);
        if (pred && y) tp++; else if (pred) fp++; else if (y) fn++;
      });
      return (2 * tp) / (2 * tp + fp + fn);
    };
    expect(new Set(rows.map(label))).toEqual(new Set([0, 1]));
    expect(f1('1')).toBe(1);
    expect(f1('2')).toBeLessThan(0.9);
    // The canary is still there: nothing was wrong with its errors or latency.
    expect((await reg.get('scored')).traffic?.canary?.version).toBe(2);

    // The truth arrives later.
    await until(
      async () => (await mesh.clients.monitor.recordOutcomes('scored', rows.map((r, i) => ({ requestId: `s-${i}`, label: label(r) })))).joined,
      (joined) => joined === rows.length,
    );
    const info = await until(() => reg.get('scored'), (m) => !m.traffic?.canary, 20_000);
    expect(info.traffic?.canary).toBeUndefined();
    const rb = (await reg.history('scored')).find((e) => e.kind === ModelEvent_Kind.ROLLED_BACK && e.alias === 'canary');
    // The reason names the test, the numbers and the p-value against the α this look may spend.
    expect(rb?.reason).toMatch(/^canary analysis: canary v2 f1 0\.\d+ vs production v1 1\.0000 \(margin 0\.05\) over \d+\/\d+ labelled samples: difference -0\.\d+, 95 % interval \[\S+, \S+\], bootstrap p = \S+ < α \S+ at look \d+$/);
  }, 60_000);
});

describe('/metrics', () => {
  it('promtool accepts the Prometheus text format; OpenMetrics carries trace exemplars on the latency histogram', async () => {
    const port = (restarted ?? mesh.monitor).info.metricsPort;
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { accept: 'text/plain' } })).text();
    expect(text).toMatch(/^infermesh_request_duration_seconds_bucket\{/m);
    expect(text).toMatch(/^infermesh_probes_total\{model="probed",result="ok"\} [1-9]/m);
    expect(text).toMatch(/^infermesh_canary_rollbacks_total\{model="canaried"\} 1$/m);
    // Replica queue wait and run time per model version, and per-replica counters from the heartbeats.
    expect(text).toMatch(/^infermesh_queue_duration_seconds_count\{model="errs",version="1"\} [1-9]/m);
    expect(text).toMatch(/^infermesh_compute_duration_seconds_count\{model="errs",version="1"\} [1-9]/m);
    expect(text).toMatch(/^infermesh_replica_requests_total\{replica="[^"]+"\} [1-9]/m);
    expect(text).toMatch(/^infermesh_replica_in_flight\{replica="[^"]+"\} \d+$/m);
    // promtool exits 1 on a format error and 3 on a lint finding (e.g. a gauge named *_total).
    execFileSync('promtool', ['check', 'metrics'], { input: text, stdio: ['pipe', 'pipe', 'pipe'] });
    const routerText = await (await fetch(`http://127.0.0.1:${mesh.router.info.restPort}/metrics`)).text();
    expect(routerText).toMatch(/^infermesh_router_/m);
    execFileSync('promtool', ['check', 'metrics'], { input: routerText, stdio: ['pipe', 'pipe', 'pipe'] });

    // Traced requests: a traceparent with the sampled flag makes the router trace the call.
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    for (let i = 0; i < 5; i++) {
      const md = new grpc.Metadata();
      md.set('traceparent', `00-${traceId}-00f067aa0ba902b${i}-01`);
      await mesh.clients.router.infer('errs', input, { metadata: md });
    }
    const om = await until(
      async () => (await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0' } })).text(),
      (t) => t.includes(`trace_id="${traceId}"`),
    );
    expect(om).toMatch(new RegExp(`^infermesh_request_duration_seconds_bucket\\{[^}]*model="errs"[^}]*\\} \\d+ # \\{trace_id="${traceId}"\\}`, 'm'));
  }, 30_000);
});
