/**
 * The inference scheduler with real ONNX Runtime in worker threads (the
 * built dist/ code, since workers load compiled files): dynamic batching,
 * deadlines, queue limits, priorities, the response cache, and the event
 * loop staying free while a slow model runs.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel, type SlowModel } from '../../libs/onnx-builder/index.js';
import { oip, VersionRecord } from '../../libs/proto/index.js';
import { Status } from '../../libs/errors/index.js';
import { SessionPool } from '../../services/inference/session-pool.js';
import { Scheduler } from '../../services/inference/scheduler.js';
import { specOf, type ModelSpec } from '../../services/inference/model-spec.js';
import { calibratedSlowModel } from '../harness/slow-model.js';

/** Worker threads run built files: the pool (from sources here) starts the built ort-worker.js. */
const WORKER_URL = new URL('../../dist/services/inference/ort-worker.js', import.meta.url);

type Done = { code: number; message: string; response: oip.ModelInferResponse | null; at: number };

const mlp = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 11 });
/** 50 ms a run on this host (measured): the deadline cases count queue positions in runs. */
let slow: SlowModel;

function record(name: string, fixture: { inputs: readonly { name: string; dims: readonly unknown[] }[]; outputs: readonly { name: string; dims: readonly unknown[] }[] }, extra: Partial<VersionRecord> = {}): VersionRecord {
  const spec = (s: { name: string; dims: readonly unknown[] }) => ({ name: s.name, datatype: 'FP32', shape: s.dims.map((d) => (typeof d === 'number' ? d : -1)) });
  // fromPartial: fields added to VersionRecord later default here.
  return VersionRecord.fromPartial({
    name, version: 1, batchable: true,
    inputs: fixture.inputs.map(spec), outputs: fixture.outputs.map(spec), batching: { maxBatchSize: 32, maxQueueDelayMicros: 0 }, ...extra,
  });
}

let pool: SessionPool;
let sched: Scheduler;
let mlpSpec: ModelSpec;
let slowSpec: ModelSpec;
let cachedSpec: ModelSpec;

beforeAll(async () => {
  slow = await calibratedSlowModel(50);
  pool = new SessionPool({ workers: 1, intraOpThreads: 1, provider: 'cpu', workerUrl: WORKER_URL }, (e: Error) => {
    throw e;
  });
  sched = new Scheduler(pool, { maxQueue: 16, workers: 1 });
  mlpSpec = specOf(record('mlp', mlp), 64);
  // Not batchable: each request is its own 50 ms run, so queue positions mean time.
  slowSpec = specOf(record('slow', slow, { batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 } }), 64);
  cachedSpec = specOf(record('cached', mlp, { cacheEntries: 8 }), 64);
  for (const [s, bytes] of [[mlpSpec, mlp.bytes], [slowSpec, slow.bytes], [cachedSpec, mlp.bytes]] as const) {
    await pool.load(s.key, bytes);
    sched.addVersion(s);
  }
});
afterAll(async () => {
  await pool?.close();
});

function submit(spec: ModelSpec, rows: number[][], o: { deadlineMs?: number; priority?: number; id?: string } = {}): Promise<Done> {
  const flat = Float32Array.from(rows.flat());
  const now = performance.now();
  return new Promise((resolve) =>
    sched.submit({
      spec,
      req: { id: o.id ?? '', shapes: [[rows.length, rows[0]!.length]], data: [new Uint8Array(flat.buffer)], outputs: [0], rows: rows.length },
      enqueuedAt: now,
      deadline: now + (o.deadlineMs ?? 10_000),
      priority: o.priority ?? 0,
      trace: null,
      started: false,
      queued: false,
      cancelled: false,
      cacheKey: null,
      answer: (err: { code: number; message: string } | null, response: Uint8Array | null) =>
        resolve({ code: err ? err.code : 0, message: err ? err.message : '', response: response ? oip.ModelInferResponse.decode(response) : null, at: performance.now() }),
    }),
  );
}

const score = (d: Done) => Array.from(new Float32Array(Uint8Array.from(d.response!.rawOutputContents[0]!).buffer));

describe('scheduler', () => {
  it('batches queued requests while the worker is busy and splits outputs back correctly', async () => {
    const before = { ...sched.stats };
    const blocker = submit(slowSpec, [[1]]);
    const rows = Array.from({ length: 12 }, (_, i) => [i / 3, -i / 5, i % 3, 1]);
    const results = await Promise.all(rows.map((r, i) => submit(mlpSpec, [r], { id: `r${i}` })));
    await blocker;
    results.forEach((d, i) => {
      expect(d.code).toBe(0);
      expect(d.response!.id).toBe(`r${i}`);
      expect(d.response!.outputs[0]!.shape).toEqual([1, 1]);
      expect(score(d)[0]).toBeCloseTo(mlp.forward(rows[i]!)[0]!, 5);
    });
    // 12 requests arrived while the slow model ran: they ran as one batch of 12 rows.
    expect(sched.stats.batches - before.batches).toBe(2);
    expect(sched.stats.batchedRows - before.batchedRows).toBe(13);
    expect(sched.stats.batches - before.batches).toBe(2);
  });

  it('refuses at once a 1 ms deadline behind a full queue, and never starts an expired request', async () => {
    const first = submit(slowSpec, [[1]]);
    const queued = [submit(slowSpec, [[2]]), submit(slowSpec, [[3]]), submit(slowSpec, [[4]])];
    const t0 = performance.now();
    const hopeless = await submit(slowSpec, [[5]], { deadlineMs: 1 });
    expect(hopeless.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(hopeless.at - t0).toBeLessThan(20);
    // Requests whose deadline passes while they wait are answered, never run.
    const expiring = [submit(slowSpec, [[6]], { deadlineMs: 120 }), submit(slowSpec, [[7]], { deadlineMs: 130 })];
    const all = await Promise.all([first, ...queued, ...expiring]);
    expect(all.slice(0, 4).every((d) => d.code === 0)).toBe(true);
    for (const d of all.slice(4)) expect(d.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(sched.stats.startedAfterDeadline).toBe(0);
    expect(sched.stats.refusedDeadline + sched.stats.expiredInQueue).toBeGreaterThanOrEqual(3);
  });

  it('answers RESOURCE_EXHAUSTED at once when the queue is full', async () => {
    const running = submit(slowSpec, [[1]]);
    await new Promise((r) => setTimeout(r, 5));
    const fill = Array.from({ length: 16 }, (_, i) => submit(slowSpec, [[i]], { deadlineMs: 60_000 }));
    const over = await submit(slowSpec, [[99]], { deadlineMs: 60_000 });
    expect(over.code).toBe(Status.RESOURCE_EXHAUSTED);
    await Promise.all([running, ...fill]);
  });

  it('runs real-time requests ahead of queued bulk ones', async () => {
    const running = submit(slowSpec, [[1]]);
    await new Promise((r) => setTimeout(r, 5));
    const bulk = [submit(slowSpec, [[2]], { priority: 1 }), submit(slowSpec, [[3]], { priority: 1 })];
    const realtime = submit(slowSpec, [[4]], { priority: 0 });
    const [rt, b1] = await Promise.all([realtime, bulk[0]!, bulk[1]!, running]);
    expect(rt.code).toBe(0);
    expect(rt.at).toBeLessThan(b1!.at);
  });

  it('serves identical inputs from the cache when the version opts in', async () => {
    const before = { ...sched.stats };
    const a = await submit(cachedSpec, [[1, 2, 3, 4]], { id: 'a' });
    const b = await submit(cachedSpec, [[1, 2, 3, 4]], { id: 'b' });
    const c = await submit(cachedSpec, [[4, 3, 2, 1]], { id: 'c' });
    expect(b.response!.id).toBe('b');
    expect(score(b)).toEqual(score(a));
    expect(score(c)[0]).toBeCloseTo(mlp.forward([4, 3, 2, 1])[0]!, 5);
    expect(sched.stats.cacheHits - before.cacheHits).toBe(1);
    expect(sched.stats.cacheMisses - before.cacheMisses).toBe(2);
    await submit(mlpSpec, [[1, 2, 3, 4]]);
    expect(sched.stats.cacheHits - before.cacheHits).toBe(1);
  });

  it('keeps the event loop free while a 50 ms model runs back to back', async () => {
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    const runs: Promise<Done>[] = [];
    for (let i = 0; i < 8; i++) runs.push(submit(slowSpec, [[i]], { deadlineMs: 60_000 }));
    await Promise.all(runs);
    h.disable();
    // ONNX Runtime runs in a worker: the loop never stalls for a model run (50 ms).
    expect(h.max / 1e6).toBeLessThan(25);
  });
});
