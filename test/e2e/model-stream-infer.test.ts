/**
 * Triton's ModelStreamInfer through the router, driven by an independent
 * client (Python grpcio with protoc-generated messages, test/e2e/stream_client.py):
 * many requests on one stream answered with their ids, a failed request
 * answered in the stream without ending it, the per-request `timeout`
 * parameter, a bounded number in flight per stream (the excess answered
 * RESOURCE_EXHAUSTED in the stream), and cancellation when the stream ends.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { PROTO_DIR } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { calibratedSlowModel } from '../harness/slow-model.js';

const STREAM_MAX_INFLIGHT = 64;
const model = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 9 });
let mesh: Mesh;
let gen: string;

beforeAll(async () => {
  gen = mkdtempSync(path.join(os.tmpdir(), 'infermesh-py-'));
  execFileSync('protoc', ['-I', PROTO_DIR, `--python_out=${gen}`, 'inference/grpc_service.proto', 'inference/model_config.proto']);
  mesh = await startMesh({ replicas: 1, routerArgs: ['--stream-max-inflight', String(STREAM_MAX_INFLIGHT)] });
  await mesh.clients.registry.push(model.bytes, { name: 'scorer', alias: 'production' });
  // One run takes ~150 ms whatever the batch: up to 8 requests share a run.
  const slow = await calibratedSlowModel(150);
  await mesh.clients.registry.push(slow.bytes, { name: 'slow', alias: 'production', batching: { maxBatchSize: 8, maxQueueDelayMicros: 0 } });
  await Promise.all([mesh.waitReady('scorer'), mesh.waitReady('slow')]);
}, 120_000);
afterAll(async () => {
  await mesh?.stop();
  if (gen) rmSync(gen, { recursive: true, force: true });
});

/** Runs one scenario of the Python client and returns what it printed. */
async function client<T>(scenario: string, ...models: string[]): Promise<T> {
  // grpc_service_pb2 imports inference/model_config_pb2 as a package path: the generated tree is the root.
  const { stdout } = await promisify(execFile)('/usr/bin/python3', [path.join(import.meta.dirname, 'stream_client.py'), path.join(gen, 'inference'), mesh.routerAddr, scenario, ...models], {
    env: { ...process.env, PYTHONPATH: gen },
    timeout: 60_000,
  });
  return JSON.parse(stdout) as T;
}

/** The router's counter or gauge `name` from its /metrics. */
async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${mesh.router.info.restPort}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

async function eventually(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('ModelStreamInfer (Python grpcio, protoc messages)', () => {
  it('1,000 requests over one stream: each answered once with its id and the model\'s score; a bad one in the middle answered in the stream', async () => {
    const r = await client<{ count: number; distinct: number; answers: Record<string, [string, number | null]>; features: Record<string, number[]> }>('many', 'scorer');
    expect(r.count).toBe(1000);
    expect(r.distinct).toBe(1000);
    for (const [id, [err, value]] of Object.entries(r.answers)) {
      if (id === 'r500') continue;
      expect(err, id).toBe('');
      expect(value!, id).toBeCloseTo(model.forward(r.features[id]!)[0]!, 5);
    }
    const [err, value] = r.answers.r500!;
    expect(err).toMatch(/^NOT_FOUND: model no-such-model not found/);
    expect(value).toBeNull();
  });

  it('more requests than a stream may have in flight: the excess is answered RESOURCE_EXHAUSTED in the stream, which goes on', async () => {
    const r = await client<{ results: [string, string][]; tail: [string, number] }>('flood', 'scorer', 'slow');
    expect(r.results).toHaveLength(100);
    expect(new Set(r.results.map(([id]) => id)).size).toBe(100);
    const refused = r.results.filter(([, err]) => err.startsWith('RESOURCE_EXHAUSTED'));
    const ok = r.results.filter(([, err]) => err === '');
    // 100 written at once against a ~150 ms model: the first 64 are in flight when the rest arrive.
    expect(ok.length).toBeGreaterThanOrEqual(STREAM_MAX_INFLIGHT);
    expect(refused.length).toBeGreaterThan(0);
    expect(ok.length + refused.length).toBe(100);
    // The same stream then serves another request.
    expect(r.tail[0]).toBe('');
    expect(r.tail[1]).toBeCloseTo(model.forward(Array.from({ length: 8 }, (_, j) => (j % 11) / 10))[0]!, 5);
  });

  it('the per-request timeout parameter (µs) bounds that request alone', async () => {
    const r = await client<{ answers: Record<string, [string, number | null]> }>('timeout', 'scorer', 'slow');
    expect(r.answers.s1![0]).toMatch(/^DEADLINE_EXCEEDED: /);
    expect(r.answers.s2).toEqual(['', 3]);
  });

  it('requests in flight are cancelled when the caller cancels the stream', async () => {
    const before = await metric('infermesh_router_cancelled_requests_total');
    const r = await client<{ first: [string, string, number] | null }>('cancel', 'scorer', 'slow');
    expect(r.first?.[1]).toBe('');
    // Up to 8 per run: most of the 40 were still in flight, and are cancelled, not left to run.
    await eventually(async () => (await metric('infermesh_router_cancelled_requests_total')) - before >= 8);
    await eventually(async () => (await metric('infermesh_router_inflight_requests')) === 0);
  });
});
