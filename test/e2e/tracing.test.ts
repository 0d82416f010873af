/**
 * One trace per request across every hop, from real processes writing their
 * spans to a file: the client's traceparent is honoured; router, forward,
 * inference, queue, batch (linked to every request batched together),
 * onnx.run and encode spans nest under it; the response carries the timing
 * breakdown and trace id; a promote's event is consumed in the same trace;
 * no payload values appear anywhere in the spans.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel, slowModel } from '../../libs/onnx-builder/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { eventually } from '../harness/wait.js';

interface SpanLine {
  service: string;
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
  start: number;
  end: number;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string }[];
}

let mesh: Mesh;
let dir: string;
let file: string;
const model = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 31 });
const MARK = 123.4567;

function spans(): SpanLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as SpanLine);
}

function traceparent(traceId = randomBytes(16).toString('hex'), spanId = randomBytes(8).toString('hex')) {
  const md = new grpc.Metadata();
  md.set('traceparent', `00-${traceId}-${spanId}-01`);
  return { md, traceId, spanId };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-traces-'));
  file = path.join(dir, 'spans.jsonl');
  // Default sampling stays on (5 % of roots); sampled client traceparents are always followed.
  mesh = await startMesh({ replicas: 1, env: { INFERMESH_TRACE_FILE: file } });
  await mesh.clients.registry.push(model.bytes, { name: 'traced', alias: 'production' });
  await mesh.clients.registry.push(slowModel({ millis: 20 }).bytes, { name: 'slow', alias: 'production' });
  await mesh.waitReady('traced');
  await mesh.waitReady('slow');
});
afterAll(async () => {
  await mesh?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('tracing', () => {
  it('one client call yields one trace across router and inference, with the breakdown in the response', async () => {
    const { md, traceId, spanId } = traceparent();
    const r = await mesh.clients.router.infer('traced', [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [MARK, 1, 2, 3] }], { metadata: md });
    const mine = await eventually(() => spans().filter((s) => s.traceId === traceId), (x) => x.some((s) => s.name === 'ModelInfer') && x.some((s) => s.name === 'encode'));
    const by = (name: string) => mine.find((s) => s.name === name)!;
    const root = by('ModelInfer');
    expect(root.service).toBe('infermesh-router');
    expect(root.parentSpanId).toBe(spanId);
    expect(root.attributes['infermesh.model']).toBe('traced');
    expect(root.attributes['infermesh.version']).toBe(1);
    const fwd = by('forward');
    expect(fwd.parentSpanId).toBe(root.spanId);
    const inf = by('inference');
    expect(inf.service).toBe('infermesh-inference');
    expect(inf.parentSpanId).toBe(fwd.spanId);
    expect(by('queue').parentSpanId).toBe(inf.spanId);
    expect(by('encode').parentSpanId).toBe(inf.spanId);
    const batch = by('batch');
    expect(batch.links.map((l) => l.spanId)).toContain(inf.spanId);
    expect(by('onnx.run').parentSpanId).toBe(batch.spanId);
    // The caller sees the same trace id and the breakdown.
    const p = r.response.parameters;
    const int = (k: string) => Number((p[k]?.parameterChoice as { value: number }).value);
    expect((p['infermesh.trace_id']?.parameterChoice as { value: string }).value).toBe(traceId);
    for (const k of ['total_us', 'router_us', 'network_us', 'queue_us', 'compute_us']) expect(int(`infermesh.${k}`), k).toBeGreaterThanOrEqual(0);
    expect(int('infermesh.total_us')).toBeGreaterThanOrEqual(int('infermesh.compute_us'));
    expect(int('infermesh.compute_us')).toBeGreaterThan(0);
    expect(r.outputs[0]!.data[0] as number).toBeCloseTo(model.forward([MARK, 1, 2, 3])[0]!, 4);
  });

  it('requests batched together are all linked from their batch span', async () => {
    const calls = Array.from({ length: 8 }, () => traceparent());
    await Promise.all(calls.map(({ md }) => mesh.clients.router.infer('slow', [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }], { metadata: md })));
    const ids = new Set(calls.map((c) => c.traceId));
    const all = await eventually(() => spans().filter((s) => ids.has(s.traceId)), (x) => x.filter((s) => s.name === 'inference').length === 8);
    const requestSpans = new Set(all.filter((s) => s.name === 'inference').map((s) => s.spanId));
    expect(requestSpans.size).toBe(8);
    const batches = all.filter((s) => s.name === 'batch');
    const biggest = batches.reduce((a, b) => (b.links.length > a.links.length ? b : a));
    expect(biggest.links.length).toBeGreaterThan(1);
    expect(biggest.attributes['infermesh.batch_size']).toBe(biggest.links.length);
    for (const l of biggest.links) expect(requestSpans.has(l.spanId)).toBe(true);
  });

  it("a promote's lifecycle event is consumed in the promote's trace", async () => {
    const v2 = await mesh.clients.registry.push(model.bytes, { name: 'traced' });
    await mesh.waitReady('traced', String(v2.version));
    const { md, traceId } = traceparent();
    await new Promise((resolve, reject) =>
      mesh.clients.registry.client.setAlias({ name: 'traced', alias: 'production', version: v2.version, expectedVersion: 0, reason: '' }, md, (e, r) => (e ? reject(e) : resolve(r))),
    );
    // Each service exports its spans in its own batches: wait for both, not only the monitor's.
    const mine = await eventually(() => spans().filter((s) => s.traceId === traceId), (x) => x.some((s) => s.name === 'event.consume') && x.some((s) => s.name === 'SetAlias'));
    const setAlias = mine.find((s) => s.name === 'SetAlias');
    expect(setAlias?.service).toBe('infermesh-registry');
    const consumed = mine.find((s) => s.name === 'event.consume');
    expect(consumed?.service).toBe('infermesh-monitor');
  });

  it('no payload values in any span', () => {
    const text = readFileSync(file, 'utf8');
    expect(text).not.toContain(String(MARK));
    expect(text).not.toContain('123.45');
  });
});
