/**
 * Case 5 — load at 3× capacity: the router sheds the excess at once with
 * RESOURCE_EXHAUSTED and a retry pushback, accepted calls succeed, nothing is
 * retried behind the caller's back, and the shed count matches the router's
 * own counter. Case 7 — a cancelled call frees its slot in the router and in
 * the replica's queue. Case 11 — NaN/Inf inputs get one policy on every replica.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInferRequest } from '../../libs/client/index.js';
import { mlpModel, slowModel } from '../../libs/onnx-builder/index.js';
import { oip, ReplicaRecord } from '../../libs/proto/index.js';
import { BUCKET_REPLICAS, KvMirror } from '../../libs/bus/index.js';
import { createLogger } from '../../libs/log/index.js';
import { connect } from 'nats';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { eventually, until } from '../harness/wait.js';

const LIMIT = 12;
let mesh: Mesh;

async function routerMetric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${mesh.router.info.restPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').pop()) : NaN;
}

async function replicaStats(): Promise<NonNullable<ReplicaRecord['stats']>[]> {
  const nc = await connect({ servers: mesh.nats.url });
  const m = await KvMirror.start(await nc.jetstream().views.kv(BUCKET_REPLICAS), { log: createLogger('test', 'silent'), onChange: () => {} });
  const out = [...m.entries()].map(([, v]) => ReplicaRecord.decode(v).stats!);
  m.close();
  await nc.close();
  return out;
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 2, routerArgs: ['--max-inflight', String(LIMIT)] });
  await mesh.clients.registry.push(slowModel({ millis: 20 }).bytes, { name: 'slow', alias: 'production', batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 } });
  await mesh.clients.registry.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1 }).bytes, { name: 'mlp', alias: 'production' });
  await mesh.waitReady('slow');
  await mesh.waitReady('mlp');
});
afterAll(async () => {
  await mesh?.stop();
});

describe('overload', () => {
  it('sheds the excess fast with pushback; the shed count matches; nothing is retried', async () => {
    // A settled baseline: the replicas' counts as two heartbeats apart agree (a run counted after the
    // last heartbeat, e.g. a warm-up, would otherwise show up in this test's difference).
    const total = async () => (await replicaStats()).reduce((n, s) => n + Number(s.requests), 0);
    let before = await total();
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 1_200));
      const again = await total();
      if (again === before) break;
      before = again;
    }
    const client = new grpc.Client(mesh.routerAddr, grpc.credentials.createInsecure());
    const payload = Buffer.from(oip.ModelInferRequest.encode(buildInferRequest('slow', [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }])).finish());
    let ok = 0;
    let shed = 0;
    let pushback = 0;
    const other: string[] = [];
    const shedMs: number[] = [];
    const okMs: number[] = [];
    const end = Date.now() + 3000;
    const caller = async () => {
      while (Date.now() < end) {
        const t0 = performance.now();
        await new Promise<void>((resolve) => {
          const call = client.makeUnaryRequest('/inference.GRPCInferenceService/ModelInfer', (b: Buffer) => b, (b: Buffer) => b, payload, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err) => {
            const ms = performance.now() - t0;
            if (!err) {
              ok++;
              okMs.push(ms);
            } else if (err.code === grpc.status.RESOURCE_EXHAUSTED) {
              shed++;
              shedMs.push(ms);
              if (err.metadata.get('grpc-retry-pushback-ms')[0] === '100') pushback++;
            } else other.push(`${grpc.status[err.code]}: ${err.details}`);
            resolve();
          });
          void call;
        });
      }
    };
    // Three times as many concurrent callers as the router admits.
    await Promise.all(Array.from({ length: LIMIT * 3 }, caller));
    client.close();
    expect(other).toEqual([]);
    expect(ok).toBeGreaterThan(0);
    expect(shed).toBeGreaterThan(0);
    expect(pushback).toBe(shed);
    expect(await routerMetric('infermesh_router_shed_requests_total')).toBe(shed);
    expect(await eventually(() => routerMetric('infermesh_router_inflight_requests'), (n) => n === 0, 10_000)).toBe(0);
    // No retry storm: the replicas saw the accepted calls and nothing of the shed ones (their counters
    // arrive with the next heartbeats); beyond them, at most the router's own counted retries (an
    // UNAVAILABLE answer or a link found down sends a request once more, elsewhere).
    const after = await eventually(async () => (await replicaStats()).reduce((n, s) => n + Number(s.requests), 0), (n) => n - before >= ok, 10_000);
    const retried = await routerMetric('infermesh_router_retried_requests_total');
    expect(after - before).toBeGreaterThanOrEqual(ok);
    expect(after - before).toBeLessThanOrEqual(ok + retried);
    const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
    const shedP99 = sorted(shedMs)[Math.floor(shedMs.length * 0.99)]!;
    console.log(`overload: ${ok} accepted (p99 ${sorted(okMs)[Math.floor(okMs.length * 0.99)]!.toFixed(1)} ms), ${shed} shed (p99 ${shedP99.toFixed(1)} ms); replicas saw ${after - before}, the router retried ${retried}`);
    // Shed answers come from the router alone: far faster than a 20 ms model call queued behind others.
    expect(sorted(shedMs)[Math.floor(shedMs.length / 2)]!).toBeLessThan(sorted(okMs)[Math.floor(okMs.length / 2)]!);
  });
});

describe('cancellation', () => {
  it('frees the router slot and drops the queued request at the replica', async () => {
    const before = await replicaStats();
    const cancelledBefore = before.reduce((n, s) => n + Number(s.cancelled), 0);
    const client = new grpc.Client(mesh.routerAddr, grpc.credentials.createInsecure());
    const payload = Buffer.from(oip.ModelInferRequest.encode(buildInferRequest('slow', [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }])).finish());
    const codes: number[] = [];
    const calls = Array.from({ length: 10 }, () =>
      client.makeUnaryRequest('/inference.GRPCInferenceService/ModelInfer', (b: Buffer) => b, (b: Buffer) => b, payload, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err) => {
        codes.push(err ? err.code : 0);
      }),
    );
    // Cancel once the router holds the calls (they are in flight there), not after a guessed pause.
    await until('the 10 calls at the router', async () => (await routerMetric('infermesh_router_inflight_requests')) + codes.length >= 10, 10_000, 2);
    for (const c of calls.slice(2)) c.cancel();
    await until('every call answered', () => codes.length === calls.length, 10_000);
    client.close();
    expect(codes.filter((c) => c === grpc.status.CANCELLED).length).toBeGreaterThanOrEqual(6);
    expect(await eventually(() => routerMetric('infermesh_router_inflight_requests'), (n) => n === 0, 10_000)).toBe(0);
    expect(await eventually(() => routerMetric('infermesh_router_cancelled_requests_total'), (n) => n >= 6, 10_000)).toBeGreaterThanOrEqual(6);
    const after = await eventually(
      replicaStats,
      (st) => st.reduce((n, s) => n + Number(s.cancelled), 0) > cancelledBefore && st.every((s) => s.outstanding === 0),
      10_000,
    );
    // Queued requests were dropped before they ran, and nothing is left outstanding.
    expect(after.reduce((n, s) => n + Number(s.cancelled), 0) - cancelledBefore).toBeGreaterThan(0);
    expect(after.every((s) => s.outstanding === 0)).toBe(true);
  });
});

describe('non-finite inputs', () => {
  it('are refused the same way by every replica', async () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (let i = 0; i < 10; i++) {
        const err = await mesh.clients.router.infer('mlp', [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [1, bad, 2, 3] }]).then(
          () => null,
          (e: grpc.ServiceError) => e,
        );
        expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
        expect(err?.details).toMatch(/^inputs\[0\]: .*NaN or Infinity \(element 1\)/);
      }
    }
    const ok = await mesh.clients.router.infer('mlp', [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }]);
    expect(ok.outputs[0]!.data).toHaveLength(1);
  });
});
