import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { connect, type NatsConnection } from 'nats';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MonitorClient,
  ModelEvent,
  ModelEvent_Kind,
  PROTO_DIR,
  SampleBatch,
  type GetModelStatsResponse,
  type GetSlowRequestsResponse,
  type PredictionSample,
  type ShadowResult,
  type ShadowStats,
  type VersionStats,
} from '../../libs/proto/index.js';
import { call } from '../../libs/grpc/index.js';
import { isReplicaKind, subjects } from '../../libs/bus/index.js';
import { createLogger } from '../../libs/log/index.js';
import { Monitor, MONITOR_PROTO, MONITOR_SERVICE } from '../../services/monitor/monitor.js';
import { startNats, type NatsHandle } from '../harness/nats.js';

const Status = grpc.status;
const log = createLogger('monitor-test', 'silent');
const settings = {
  host: '127.0.0.1',
  port: 0,
  metricsPort: 0,
  maxMessageBytes: 4 * 1024 * 1024,
  shutdownGraceMs: 1000,
  slowRetentionMs: 15 * 60_000,
};
// Reflection loads protos relative to PROTO_DIR; point it at this checkout's proto/ wherever PROTO_DIR resolves.
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const protoFiles = [path.relative(PROTO_DIR, path.join(REPO, 'proto', MONITOR_PROTO))];

/** Deterministic latencies: a spread from 0.2 ms to 50 ms, plus five 1.5 s outliers. */
function latencies(n: number, seed: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(200 + ((i * 7919 + seed) % n) * 50);
  for (let i = 0; i < 5 && i < n; i++) out[(i * 97 + seed) % n] = 1_500_000;
  return out;
}

/** Nearest-rank quantile of `values` in microseconds. */
function truth(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1]!;
}

/** Expects `ms` to be within one 5 % bucket of `micros`. */
function expectWithinBucket(ms: number, micros: number): void {
  expect(ms * 1000).toBeGreaterThanOrEqual(micros / 1.05 - 1e-6);
  expect(ms * 1000).toBeLessThanOrEqual(micros * 1.05 + 1e-6);
}

type Sample = { labels: Record<string, string>; value: number };

/** Parses Prometheus / OpenMetrics text exposition into series per metric name (exemplars are skipped). */
function parseMetrics(text: string): Map<string, Sample[]> {
  const out = new Map<string, Sample[]>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*?)\})? (\S+)(?: # \{.*)?$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    const list = out.get(m[1]!) ?? [];
    list.push({ labels, value: Number(m[3]) });
    out.set(m[1]!, list);
  }
  return out;
}

function metricValue(metrics: Map<string, Sample[]>, name: string, labels: Record<string, string>): number | undefined {
  return metrics
    .get(name)
    ?.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(labels).length)
    ?.value;
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function batch(name: string, versions: { version: number; latencyMicros: number[]; codes: number[] }[]): Uint8Array {
  return SampleBatch.encode(
    SampleBatch.fromPartial({ routerId: 'router-test', name, versions, startMs: Date.now() - 1000, endMs: Date.now() }),
  ).finish();
}

/** A 32-hex trace id from a number (never all zeros for n > 0). */
const tid = (n: number): string => n.toString(16).padStart(32, '0');

type Slow = Pick<PredictionSample, 'version' | 'latencyMicros' | 'traceId' | 'atMs'> & Partial<PredictionSample>;

/** A router's batch whose traffic is exactly `slowest` plus `other` latencies (version 1), all OK. */
function slowBatch(name: string, routerId: string, slowest: Slow[], o: { other?: number[]; samples?: Partial<PredictionSample>[]; endMs?: number } = {}): Uint8Array {
  const byVersion = new Map<number, number[]>();
  for (const s of slowest) byVersion.set(s.version, [...(byVersion.get(s.version) ?? []), s.latencyMicros]);
  if (o.other) byVersion.set(1, [...(byVersion.get(1) ?? []), ...o.other]);
  const versions = [...byVersion].map(([version, latencyMicros]) => ({ version, latencyMicros, codes: latencyMicros.map(() => 0) }));
  const endMs = o.endMs ?? Date.now();
  return SampleBatch.encode(
    SampleBatch.fromPartial({ routerId, name, versions, slowest, samples: o.samples ?? [], startMs: endMs - 1000, endMs }),
  ).finish();
}

function shadowBatch(
  name: string,
  shadows: ShadowResult[],
  versions: { version: number; latencyMicros: number[]; codes: number[] }[] = [],
): Uint8Array {
  return SampleBatch.encode(
    SampleBatch.fromPartial({ routerId: 'router-test', name, versions, shadows, startMs: Date.now() - 1000, endMs: Date.now() }),
  ).finish();
}

describe('monitor', () => {
  let nats: NatsHandle;
  let nc: NatsConnection;
  let pub: NatsConnection;
  let monitor: Monitor;
  let client: MonitorClient;

  const stats = (name: string): Promise<GetModelStatsResponse> => call(client.getModelStats, client, { name });
  const slowOf = (c: MonitorClient, name: string, limit = 0): Promise<GetSlowRequestsResponse> => call(c.getSlowRequests, c, { name, limit });
  const scrape = async (m: Monitor = monitor) => {
    const res = await fetch(`http://127.0.0.1:${m.metricsPort}/metrics`);
    expect(res.status).toBe(200);
    return parseMetrics(await res.text());
  };
  const codeOf = (p: Promise<unknown>) => p.then(() => Status.OK, (err: grpc.ServiceError) => err.code);

  // fraud v1: 1000 requests over two batches, 7 UNAVAILABLE and 3 DEADLINE_EXCEEDED; v2: 200 OK.
  const v1a = latencies(600, 1);
  const v1b = latencies(400, 2);
  const v1 = [...v1a, ...v1b];
  const v2 = latencies(200, 3);
  const codes = (n: number, errors: [number, number][]) => {
    const c = new Array<number>(n).fill(0);
    let at = 0;
    for (const [code, count] of errors) for (let i = 0; i < count; i++) c[(at++ * 37) % n] = code;
    return c;
  };
  const v1aCodes = codes(600, [[Status.UNAVAILABLE, 4], [Status.DEADLINE_EXCEEDED, 3]]);
  const v1bCodes = codes(400, [[Status.UNAVAILABLE, 3]]);

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    pub = await connect({ servers: nats.url });
    monitor = await Monitor.create(settings, { nc, log, protoFiles });
    client = new MonitorClient(`127.0.0.1:${monitor.grpcPort}`, grpc.credentials.createInsecure());

    pub.publish(subjects.samples('fraud'), batch('fraud', [{ version: 2, latencyMicros: v2, codes: new Array(200).fill(0) }]));
    pub.publish(subjects.samples('fraud'), batch('fraud', [{ version: 1, latencyMicros: v1a, codes: v1aCodes }]));
    pub.publish(subjects.samples('alpha'), batch('alpha', [{ version: 3, latencyMicros: [1000, 2000], codes: [0, 0] }]));
    pub.publish(subjects.samples('fraud'), batch('fraud', [{ version: 1, latencyMicros: v1b, codes: v1bCodes }]));
    await pub.flush();
    await until('all samples', async () => {
      const r = await stats('');
      return r.versions.reduce((n, v) => n + v.requests, 0) === 1202 ? r : undefined;
    });
  });

  afterAll(async () => {
    client?.close();
    await monitor?.close();
    await pub?.close();
    await nc?.close();
    await nats?.stop();
  });

  it('counts requests and errors exactly and reports percentiles within one bucket', async () => {
    const { versions } = await stats('fraud');
    expect(versions.map((v) => [v.name, v.version])).toEqual([
      ['fraud', 1],
      ['fraud', 2],
    ]);
    const [s1, s2] = versions as [VersionStats, VersionStats];
    expect(s1.requests).toBe(1000);
    expect(s1.errors).toBe(10);
    expect(s1.errorsByCode).toEqual({ UNAVAILABLE: 7, DEADLINE_EXCEEDED: 3 });
    expectWithinBucket(s1.p50Ms, truth(v1, 0.5));
    expectWithinBucket(s1.p95Ms, truth(v1, 0.95));
    expectWithinBucket(s1.p99Ms, truth(v1, 0.99));
    expect(s1.meanMs).toBeCloseTo(v1.reduce((a, b) => a + b, 0) / v1.length / 1000, 6);
    expect(s1.rps).toBeGreaterThan(0);
    expect(s1.lastSeenMs).toBeGreaterThan(0);

    expect(s2.requests).toBe(200);
    expect(s2.errors).toBe(0);
    expect(s2.errorsByCode).toEqual({});
    expectWithinBucket(s2.p99Ms, truth(v2, 0.99));
  });

  it('returns every model, sorted by name then version, for an empty name', async () => {
    const { versions } = await stats('');
    expect(versions.map((v) => `${v.name}/${v.version}`)).toEqual(['alpha/3', 'fraud/1', 'fraud/2']);
  });

  it('exposes counters and histograms on /metrics', async () => {
    const m = await scrape();
    expect(metricValue(m, 'infermesh_requests_total', { model: 'fraud', version: '1', code: 'OK' })).toBe(990);
    expect(metricValue(m, 'infermesh_requests_total', { model: 'fraud', version: '1', code: 'UNAVAILABLE' })).toBe(7);
    expect(metricValue(m, 'infermesh_requests_total', { model: 'fraud', version: '1', code: 'DEADLINE_EXCEEDED' })).toBe(3);
    expect(metricValue(m, 'infermesh_requests_total', { model: 'fraud', version: '2', code: 'OK' })).toBe(200);
    expect(metricValue(m, 'infermesh_request_duration_seconds_count', { model: 'fraud', version: '1' })).toBe(1000);
    expect(metricValue(m, 'infermesh_request_duration_seconds_bucket', { model: 'fraud', version: '1', le: '0.01' })).toBe(
      v1.filter((us) => us <= 10_000).length,
    );
    expect(metricValue(m, 'infermesh_request_duration_seconds_bucket', { model: 'fraud', version: '1', le: '+Inf' })).toBe(1000);
    expect(metricValue(m, 'infermesh_request_duration_seconds_sum', { model: 'fraud', version: '1' })).toBeCloseTo(
      v1.reduce((a, b) => a + b, 0) / 1e6,
      6,
    );

    const other = await fetch(`http://127.0.0.1:${monitor.metricsPort}/other`);
    expect(other.status).toBe(404);
    await other.text();
  });

  it('counts shadow results exactly, agreement over successful calls only, per version and production version', async () => {
    // ranker v2 shadowing production v1: 100 calls over two batches (interleaved with a v3 run).
    // Every 5th call disagrees (20); calls 1, 2, 3 (agree = true) and 10 (disagree) fail.
    // So 4 errors, 96 successful calls, of which 80 − 3 = 77 agree.
    const lat = latencies(100, 4);
    const fails = new Map([[1, Status.UNAVAILABLE], [2, Status.UNAVAILABLE], [3, Status.DEADLINE_EXCEEDED], [10, Status.INTERNAL]]);
    const r21: ShadowResult[] = lat.map((latencyMicros, i) => ({
      version: 2,
      productionVersion: 1,
      agree: i % 5 !== 0,
      latencyMicros,
      code: fails.get(i) ?? 0,
    }));
    // ranker v3 vs v1: both calls fail (agreementRate 0, not NaN); v2 vs v3 (after a promotion): one agreeing call.
    const r31: ShadowResult[] = [
      { version: 3, productionVersion: 1, agree: true, latencyMicros: 900, code: Status.UNAVAILABLE },
      { version: 3, productionVersion: 1, agree: false, latencyMicros: 1100, code: Status.INTERNAL },
    ];
    const r23: ShadowResult = { version: 2, productionVersion: 3, agree: true, latencyMicros: 4321, code: 0 };
    // scout has shadow results only: two agree, one disagrees.
    const scout: ShadowResult[] = [
      { version: 5, productionVersion: 4, agree: true, latencyMicros: 2000, code: 0 },
      { version: 5, productionVersion: 4, agree: false, latencyMicros: 3000, code: 0 },
      { version: 5, productionVersion: 4, agree: true, latencyMicros: 4000, code: 0 },
    ];

    pub.publish(subjects.samples('scout'), shadowBatch('scout', scout));
    pub.publish(
      subjects.samples('ranker'),
      shadowBatch('ranker', [...r21.slice(0, 60), r31[0]!], [{ version: 1, latencyMicros: [500, 600], codes: [0, 0] }]),
    );
    pub.publish(subjects.samples('ranker'), shadowBatch('ranker', [r23, ...r21.slice(60), r31[1]!]));
    await pub.flush();
    const all = await until('shadow results', async () => {
      const r = await stats('');
      return r.shadows.reduce((n, s) => n + s.requests, 0) === 106 ? r : undefined;
    });

    expect(all.shadows.map((s) => `${s.name}/${s.version}/${s.productionVersion}`)).toEqual([
      'ranker/2/1',
      'ranker/2/3',
      'ranker/3/1',
      'scout/5/4',
    ]);
    const [s21, s23, s31, s54] = all.shadows as [ShadowStats, ShadowStats, ShadowStats, ShadowStats];
    expect(s21).toMatchObject({ requests: 100, agreements: 77, errors: 4 });
    expect(s21.agreementRate).toBeCloseTo(77 / 96, 12);
    expectWithinBucket(s21.p50Ms, truth(lat, 0.5));
    expectWithinBucket(s21.p99Ms, truth(lat, 0.99));
    expect(s23).toMatchObject({ requests: 1, agreements: 1, errors: 0, agreementRate: 1 });
    expectWithinBucket(s23.p50Ms, 4321);
    expect(s31).toMatchObject({ requests: 2, agreements: 0, errors: 2, agreementRate: 0 });
    expect(s54).toMatchObject({ requests: 3, agreements: 2, errors: 0 });
    expect(s54.agreementRate).toBeCloseTo(2 / 3, 12);
    expectWithinBucket(s54.p50Ms, 3000);
    expectWithinBucket(s54.p99Ms, 4000);

    // Filtered by name like versions; shadow traffic is not regular traffic.
    const ranker = await stats('ranker');
    expect(ranker.versions.map((v) => [v.version, v.requests])).toEqual([[1, 2]]);
    expect(ranker.shadows).toEqual([s21, s23, s31]);
    // A model with shadow results only is found, with no versions.
    expect(await stats('scout')).toEqual({ versions: [], shadows: [s54] });
    expect((await stats('fraud')).shadows).toEqual([]);

    const m = await scrape();
    const shadow = (metric: string, model: string, version: string, production_version: string) =>
      metricValue(m, metric, { model, version, production_version });
    expect(shadow('infermesh_shadow_requests_total', 'ranker', '2', '1')).toBe(100);
    expect(shadow('infermesh_shadow_agreements_total', 'ranker', '2', '1')).toBe(77);
    expect(shadow('infermesh_shadow_requests_total', 'ranker', '2', '3')).toBe(1);
    expect(shadow('infermesh_shadow_agreements_total', 'ranker', '2', '3')).toBe(1);
    expect(shadow('infermesh_shadow_requests_total', 'ranker', '3', '1')).toBe(2);
    expect(shadow('infermesh_shadow_agreements_total', 'ranker', '3', '1')).toBe(0);
    expect(shadow('infermesh_shadow_requests_total', 'scout', '5', '4')).toBe(3);
    expect(shadow('infermesh_shadow_agreements_total', 'scout', '5', '4')).toBe(2);
    expect(metricValue(m, 'infermesh_requests_total', { model: 'ranker', version: '1', code: 'OK' })).toBe(2);
    expect(metricValue(m, 'infermesh_requests_total', { model: 'ranker', version: '2', code: 'OK' })).toBeUndefined();
  });

  it('lists the slowest requests over the retention window, slowest first, bounded by limit', async () => {
    // A monitor of its own on a clock the test moves, with a 10 s window (sliced per ~667 ms).
    let clock = 1_700_000_000_000;
    const t0 = clock;
    const own = await Monitor.create({ ...settings, slowRetentionMs: 10_000 }, { nc, log, protoFiles, now: () => clock });
    const c = new MonitorClient(`127.0.0.1:${own.grpcPort}`, grpc.credentials.createInsecure());
    try {
      // Window 1 (router a, at t0): five slow requests, 100..500 ms. Window 2 (router b, t0 + 4 s): five, 150..550 ms,
      // plus one of version 2 with an error code.
      const w1: Slow[] = [1, 2, 3, 4, 5].map((i) => ({
        version: 1, latencyMicros: i * 100_000, traceId: tid(i), atMs: t0 - i,
        queueMicros: i * 1000, computeMicros: i * 2000, networkMicros: i * 3000, routerMicros: i * 100_000 - i * 6000,
      }));
      const w2: Slow[] = [1, 2, 3, 4, 5].map((i) => ({ version: 1, latencyMicros: i * 100_000 + 50_000, traceId: tid(10 + i), atMs: t0 + 4000 }));
      w2.push({ version: 2, latencyMicros: 700_000, traceId: tid(99), atMs: t0 + 4000, code: Status.DEADLINE_EXCEEDED });
      pub.publish(subjects.samples('slowpoke'), slowBatch('slowpoke', 'router-a', w1, { other: [900, 1200], endMs: t0 }));
      pub.publish(subjects.samples('slowpoke'), slowBatch('slowpoke', 'router-b', w2, { endMs: t0 + 4000 }));
      await pub.flush();
      clock = t0 + 5000;
      const all = await until('slow requests', async () => {
        const r = await slowOf(c, 'slowpoke');
        return r.requests.length === 11 ? r.requests : undefined;
      });
      expect(all.map((r) => r.latencyMs)).toEqual([700, 550, 500, 450, 400, 350, 300, 250, 200, 150, 100]);
      expect(all[0]).toEqual({
        name: 'slowpoke', version: 2, traceId: tid(99), latencyMs: 700, queueMs: 0, computeMs: 0, networkMs: 0, routerMs: 0,
        code: Status.DEADLINE_EXCEEDED, atMs: t0 + 4000,
      });
      expect(all[2]).toEqual({
        name: 'slowpoke', version: 1, traceId: tid(5), latencyMs: 500, queueMs: 5, computeMs: 10, networkMs: 15, routerMs: 470,
        code: 0, atMs: t0 - 5,
      });

      expect((await slowOf(c, 'slowpoke', 3)).requests.map((r) => r.traceId)).toEqual([tid(99), tid(15), tid(5)]);

      // Window 1 expires first: only window 2 is left, still slowest first.
      clock = t0 + 10_500;
      expect((await slowOf(c, 'slowpoke')).requests.map((r) => r.latencyMs)).toEqual([700, 550, 450, 350, 250, 150]);
      // Then everything: an empty list, not NOT_FOUND (the model has had traffic).
      clock = t0 + 15_000;
      expect((await slowOf(c, 'slowpoke')).requests).toEqual([]);
      // A late batch about requests already outside the window adds nothing.
      pub.publish(subjects.samples('slowpoke'), slowBatch('slowpoke', 'router-a', [{ version: 1, latencyMicros: 9_000_000, traceId: tid(7), atMs: t0 }], { endMs: clock }));
      // 150 slow requests in one window: the store keeps 100, the limit defaults to 20 and is capped at 100.
      const many: Slow[] = Array.from({ length: 150 }, (_, i) => ({ version: 1, latencyMicros: 10_000 + i * 1000, traceId: tid(1000 + i), atMs: clock }));
      pub.publish(subjects.samples('slowpoke'), slowBatch('slowpoke', 'router-c', many, { endMs: clock }));
      await pub.flush();
      const capped = await until('many slow requests', async () => {
        const r = await slowOf(c, 'slowpoke', 500);
        return r.requests.length > 0 ? r.requests : undefined;
      });
      expect(capped).toHaveLength(100);
      expect(capped[0]!.latencyMs).toBe(10 + 149);
      expect(capped[99]!.latencyMs).toBe(10 + 50);
      expect(capped.some((r) => r.traceId === tid(7))).toBe(false);
      expect((await slowOf(c, 'slowpoke')).requests).toHaveLength(20);

      expect(await codeOf(slowOf(c, 'nobody'))).toBe(Status.NOT_FOUND);
      expect(await codeOf(slowOf(c, 'Bad.Name'))).toBe(Status.INVALID_ARGUMENT);
      expect(await codeOf(slowOf(c, ''))).toBe(Status.INVALID_ARGUMENT);
    } finally {
      c.close();
      await own.close();
    }
  });

  it('links histogram buckets to traces with OpenMetrics exemplars, counting each request once', async () => {
    // Traffic: 0.9 ms, 1.8 ms (traced sample), 2 ms (untraced sample), 300 ms (slowest, traced; also a traced sample).
    const slow = { version: 1, latencyMicros: 300_000, traceId: tid(0xabc), atMs: Date.now(), computeMicros: 250_000 };
    pub.publish(
      subjects.samples('traced'),
      slowBatch('traced', 'router-a', [slow], {
        other: [900, 1800, 2000],
        samples: [
          { version: 1, latencyMicros: 1800, traceId: tid(0xdef) },
          { version: 1, latencyMicros: 2000, traceId: '' },
          { version: 1, latencyMicros: 300_000, traceId: tid(0xabc) },
        ],
      }),
    );
    await pub.flush();
    const res = await until('traced traffic', async () => {
      const r = await fetch(`http://127.0.0.1:${monitor.metricsPort}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0' } });
      const text = await r.text();
      return text.includes('model="traced"') ? { contentType: r.headers.get('content-type'), text } : undefined;
    });
    expect(res.contentType).toMatch(/^application\/openmetrics-text; version=1\.0\.0/);
    expect(res.text.endsWith('# EOF\n')).toBe(true);
    const bucket = (le: string) =>
      res.text.split('\n').find((l) => l.startsWith(`infermesh_request_duration_seconds_bucket{le="${le}",model="traced",version="1"}`));
    expect(bucket('0.5')).toMatch(new RegExp(`^\\S+ 4 # \\{trace_id="${tid(0xabc)}"\\} 0\\.3 \\d+(\\.\\d+)?$`));
    expect(bucket('0.0025')).toMatch(new RegExp(`^\\S+ 3 # \\{trace_id="${tid(0xdef)}"\\} 0\\.0018 \\d+(\\.\\d+)?$`));
    expect(bucket('0.001')).toMatch(/^\S+ 1$/);
    const m = parseMetrics(res.text);
    expect(metricValue(m, 'infermesh_request_duration_seconds_count', { model: 'traced', version: '1' })).toBe(4);
    expect(metricValue(m, 'infermesh_request_duration_seconds_sum', { model: 'traced', version: '1' })).toBeCloseTo(0.3047, 9);
    expect(metricValue(m, 'infermesh_requests_total', { model: 'traced', version: '1', code: 'OK' })).toBe(4);
    // The monitor's GetSlowRequests has it too.
    expect((await slowOf(client, 'traced')).requests.map((r) => [r.traceId, r.latencyMs, r.computeMs])).toEqual([[tid(0xabc), 300, 250]]);
  });

  it('answers INVALID_ARGUMENT for a malformed name and NOT_FOUND for an unseen model', async () => {
    expect(await codeOf(stats('Bad.Name'))).toBe(Status.INVALID_ARGUMENT);
    expect(await codeOf(stats('x'.repeat(64)))).toBe(Status.INVALID_ARGUMENT);
    expect(await codeOf(stats('nobody'))).toBe(Status.NOT_FOUND);
  });

  it('counts and drops bad payloads, and keeps serving', async () => {
    const before = await scrape();
    const bad = (source: string, m: Map<string, Sample[]>) => metricValue(m, 'infermesh_monitor_bad_messages_total', { source }) ?? 0;
    pub.publish(subjects.samples('fraud'), new Uint8Array([0xff, 0xff, 0xff, 0xff]));
    pub.publish(subjects.samples('fraud'), batch('fraud', [{ version: 1, latencyMicros: [1, 2, 3], codes: [0] }]));
    pub.publish(subjects.samples('fraud'), batch('other', [{ version: 1, latencyMicros: [1], codes: [0] }]));
    pub.publish(subjects.events('fraud'), new Uint8Array([0x0a, 0xff]));
    await pub.flush();
    const after = await until('bad messages counted', async () => {
      const m = await scrape();
      return bad('samples', m) === bad('samples', before) + 3 && bad('events', m) === bad('events', before) + 1 ? m : undefined;
    });
    expect(metricValue(after, 'infermesh_requests_total', { model: 'fraud', version: '1', code: 'OK' })).toBe(990);
    const { versions } = await stats('fraud');
    expect(versions[0]!.requests).toBe(1000);
    expect(await codeOf(stats('nobody'))).toBe(Status.NOT_FOUND);
  });

  it('keeps the last lifecycle event per version and counts events by kind', async () => {
    const js = pub.jetstream();
    const publish = (kind: ModelEvent_Kind) =>
      // Registry kinds on the registry's subject, a replica's steps on its own (others are dropped).
      isReplicaKind(kind)
        ? js.publish(subjects.replicaEvents('churn', 'r1'), ModelEvent.encode(ModelEvent.fromPartial({ name: 'churn', version: 1, kind, replicaId: 'r1', atMs: Date.now() })).finish())
        : js.publish(subjects.events('churn'), ModelEvent.encode(ModelEvent.fromPartial({ name: 'churn', version: 1, kind, atMs: Date.now() })).finish());
    await publish(ModelEvent_Kind.REGISTERED);
    await publish(ModelEvent_Kind.LOADING);
    await publish(ModelEvent_Kind.READY);

    await until('events applied', async () => (monitor.store.lastEvent('churn', 1)?.kind === ModelEvent_Kind.READY ? true : undefined));
    const { versions } = await stats('churn');
    expect(versions).toHaveLength(1);
    expect(versions[0]).toMatchObject({ name: 'churn', version: 1, requests: 0, errors: 0, p50Ms: 0, rps: 0 });
    const m = await scrape();
    expect(metricValue(m, 'infermesh_model_events_total', { model: 'churn', kind: 'ready' })).toBe(1);
    expect(metricValue(m, 'infermesh_model_events_total', { model: 'churn', kind: 'registered' })).toBe(1);

    // A monitor started later rebuilds the last event from the stream without counting it again.
    const second = await Monitor.create(settings, { nc, log, protoFiles });
    try {
      await until('events replayed', async () => (second.store.lastEvent('churn', 1)?.kind === ModelEvent_Kind.READY ? true : undefined));
      expect(metricValue(await scrape(second), 'infermesh_model_events_total', { model: 'churn', kind: 'ready' })).toBeUndefined();
    } finally {
      await second.close();
    }
  });

  it('reports SERVING on grpc.health.v1.Health', async () => {
    const Health = grpc.makeGenericClientConstructor(healthService, 'Health');
    const health = new Health(`127.0.0.1:${monitor.grpcPort}`, grpc.credentials.createInsecure());
    try {
      for (const service of ['', MONITOR_SERVICE]) {
        const res = await new Promise<{ status: string }>((resolve, reject) =>
          (health as unknown as { check: (req: object, cb: (e: Error | null, r: { status: string }) => void) => void }).check(
            { service },
            (err, r) => (err ? reject(err) : resolve(r)),
          ),
        );
        expect(res.status).toBe('SERVING');
      }
    } finally {
      health.close();
    }
  });

  it('closes idempotently', async () => {
    const m = await Monitor.create(settings, { nc, log, protoFiles });
    await Promise.all([m.close(), m.close()]);
    await m.close();
    await expect(fetch(`http://127.0.0.1:${m.metricsPort}/metrics`)).rejects.toThrow();
  });
});
