/**
 * Deadlines against a slow model that runs one request at a time: calls that
 * cannot finish in time get DEADLINE_EXCEEDED quickly, no request is started
 * after its deadline, and a call without a deadline is capped by the
 * router's default and still answered.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInferRequest } from '../../libs/client/index.js';
import type { oip, ReplicaStats } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { calibratedSlowModel } from '../harness/slow-model.js';
import { alive, eventually, outcome, ReplicaRecords, type Outcome } from './helpers.js';

const DEFAULT_TIMEOUT_MS = 1_500;
const RUN_MS = 200;
let mesh: Mesh;
let records: ReplicaRecords;
const input = [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [3] }];

beforeAll(async () => {
  mesh = await startMesh({ replicas: 1, routerArgs: ['--default-timeout-ms', String(DEFAULT_TIMEOUT_MS)] });
  records = await ReplicaRecords.connect(mesh.nats.url);
  await mesh.clients.registry.push((await calibratedSlowModel(RUN_MS)).bytes, {
    name: 'slow',
    alias: 'production',
    batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 },
  });
  await mesh.waitReady('slow');
  // A few runs so the replica has measured how long one takes (its admission estimate).
  for (let i = 0; i < 3; i++) await mesh.clients.router.infer('slow', input, { timeoutMs: 10_000 });
});
afterAll(async () => {
  await records?.close();
  await mesh?.stop();
});

/** The replica's stats from a heartbeat written after now, once nothing is in flight there. */
async function settledStats(): Promise<ReplicaStats> {
  const since = Date.now();
  const rec = await eventually(
    () => records.of(mesh.replicas[0]!),
    (r) => Number(r?.updatedAtMs ?? 0) > since && r?.stats?.outstanding === 0,
    10_000,
  );
  expect(rec?.stats?.outstanding).toBe(0);
  return rec!.stats!;
}

/** A ModelInfer with no deadline at all (grpc-js sends no grpc-timeout). */
function inferWithoutDeadline(req: oip.ModelInferRequest): Promise<Outcome> {
  const c = mesh.clients.router.client;
  return outcome(
    new Promise((resolve, reject) => {
      c.modelInfer(req, new grpc.Metadata(), {}, (err, res) => (err ? reject(err) : resolve(res)));
    }),
  );
}

describe('deadlines on a queue of slow requests', () => {
  it('10 concurrent calls with 300 ms deadlines: DEADLINE_EXCEEDED quickly, none started after its deadline', async () => {
    const before = await settledStats();
    const results = await Promise.all(Array.from({ length: 10 }, () => outcome(mesh.clients.router.infer('slow', input, { timeoutMs: 300 }))));
    const codes = results.map((r) => grpc.status[r.code]);
    console.log(`deadlines: ${codes.join(' ')}; ${results.map((r) => `${r.ms.toFixed(0)}ms`).join(' ')}`);
    for (const r of results) expect(['OK', 'DEADLINE_EXCEEDED'], r.details).toContain(grpc.status[r.code]);
    const exceeded = results.filter((r) => r.code === grpc.status.DEADLINE_EXCEEDED);
    // One replica, one worker, 200 ms per run: at most two of ten fit in 300 ms.
    expect(exceeded.length).toBeGreaterThanOrEqual(8);
    // Quickly: none is held much past its own deadline (room left for a loaded 2-core machine).
    for (const r of exceeded) expect(r.ms).toBeLessThan(300 + 700);

    const after = await settledStats();
    const delta = (k: keyof ReplicaStats) => Number(after[k]) - Number(before[k]);
    console.log(
      `deadlines: refusedDeadline +${delta('refusedDeadline')}, expiredInQueue +${delta('expiredInQueue')}, finishedAfterDeadline +${delta('finishedAfterDeadline')}, startedAfterDeadline ${after.startedAfterDeadline}`,
    );
    expect(after.startedAfterDeadline).toBe(0);
    expect(delta('requests')).toBe(10);
    // Answers that timed out at the router (its sweeper, or the client's own timer) may stand for a
    // request the replica still ran within its deadline; every other DEADLINE_EXCEEDED is the
    // replica's refusal or expiry, and the replica counted it.
    const atRouter = exceeded.filter((r) => /waiting for the replica|Deadline exceeded after/.test(r.details)).length;
    expect(delta('expiredInQueue') + delta('refusedDeadline')).toBeGreaterThanOrEqual(exceeded.length - atRouter);
    // And every DEADLINE_EXCEEDED was refused, expired in the queue, ran past its deadline at the
    // replica, or was run in time there and its answer crossed the deadline on the way back (the
    // client's clock starts before the replica's, so that answer is timed out at the router or client).
    const ran = delta('requests') - delta('refusedDeadline') - delta('expiredInQueue');
    const ok = results.length - exceeded.length;
    expect(delta('expiredInQueue') + delta('refusedDeadline') + delta('finishedAfterDeadline') + atRouter).toBeGreaterThanOrEqual(exceeded.length);
    expect(ok + delta('finishedAfterDeadline')).toBeLessThanOrEqual(ran);
    expect(alive(mesh.router)).toBe(true);
    expect(alive(mesh.replicas[0]!)).toBe(true);
  });

  it('10 concurrent calls with 1 s deadlines: the ones that fit are answered, the rest refused, none started late', async () => {
    const before = await settledStats();
    const results = await Promise.all(Array.from({ length: 10 }, () => outcome(mesh.clients.router.infer('slow', input, { timeoutMs: 1_000 }))));
    console.log(`deadlines (1 s): ${results.map((r) => `${grpc.status[r.code]}/${r.ms.toFixed(0)}ms`).join(' ')}`);
    for (const r of results) {
      expect(['OK', 'DEADLINE_EXCEEDED'], r.details).toContain(grpc.status[r.code]);
      expect(r.ms).toBeLessThan(1_000 + 200);
    }
    expect(results.filter((r) => r.code === grpc.status.OK).length).toBeGreaterThanOrEqual(1);
    expect(results.filter((r) => r.code === grpc.status.DEADLINE_EXCEEDED).length).toBeGreaterThanOrEqual(1);
    const after = await settledStats();
    expect(after.startedAfterDeadline).toBe(0);
    expect(Number(after.requests) - Number(before.requests)).toBe(10);
  });

  it('a call without a deadline is answered', async () => {
    const o = await inferWithoutDeadline(buildInferRequest('slow', input));
    expect(grpc.status[o.code], o.details).toBe('OK');
  });

  it('calls without a deadline get the router’s default cap: each answered within it', async () => {
    const before = await settledStats();
    const results = await Promise.all(Array.from({ length: 12 }, () => inferWithoutDeadline(buildInferRequest('slow', input))));
    console.log(`deadlines (no deadline, cap ${DEFAULT_TIMEOUT_MS} ms): ${results.map((r) => `${grpc.status[r.code]}/${r.ms.toFixed(0)}ms`).join(' ')}`);
    for (const r of results) {
      expect(['OK', 'DEADLINE_EXCEEDED'], r.details).toContain(grpc.status[r.code]);
      expect(r.ms).toBeLessThan(DEFAULT_TIMEOUT_MS + 500);
    }
    expect(results.filter((r) => r.code === grpc.status.OK).length).toBeGreaterThanOrEqual(1);
    // 12 × 200 ms cannot fit in 1.5 s on one worker: the cap, not the caller, ended some.
    expect(results.filter((r) => r.code === grpc.status.DEADLINE_EXCEEDED).length).toBeGreaterThanOrEqual(1);
    const after = await settledStats();
    expect(after.startedAfterDeadline).toBe(0);
    expect(Number(after.requests) - Number(before.requests)).toBe(12);
  });
});
