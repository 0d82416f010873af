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
  type ShadowResult,
  type ShadowStats,
  type VersionStats,
} from '../../libs/proto/index.js';
import { call } from '../../libs/grpc/index.js';
import { subjects } from '../../libs/bus/index.js';
import { createLogger } from '../../libs/log/index.js';
import { Monitor, MONITOR_PROTO, MONITOR_SERVICE } from '../../services/monitor/monitor.js';
import { startNats, type NatsHandle } from '../harness/nats.js';

const Status = grpc.status;
const log = createLogger('monitor-test', 'silent');
const settings = { host: '127.0.0.1', port: 0, metricsPort: 0, maxMessageBytes: 4 * 1024 * 1024, shutdownGraceMs: 1000 };
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

/** Parses Prometheus text exposition into series per metric name. */
function parseMetrics(text: string): Map<string, Sample[]> {
  const out = new Map<string, Sample[]>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
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
      js.publish(subjects.events('churn'), ModelEvent.encode(ModelEvent.fromPartial({ name: 'churn', version: 1, kind, atMs: Date.now() })).finish());
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
