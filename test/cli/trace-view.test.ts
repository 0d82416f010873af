/**
 * `traces show` without processes: span files as the services write them
 * (FileSpanExporter, rotated past its size), a request batched with another
 * one (its batch span lives in the other request's trace), and a slow
 * request recorded after the fact (router span only, breakdown rows).
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-node';
import { startTelemetry } from '../../libs/telemetry/index.js';
import { FileSpanExporter } from '../../libs/telemetry/file-exporter.js';
import { loadTrace, renderWaterfall, traceFiles, traceRows, type SpanLine } from '../../services/cli/trace-view.js';

const A = 'a'.repeat(32);
const B = 'b'.repeat(32);
const SLOW = 'c'.repeat(32);
const at = 1_700_000_000_000;

const span = (service: string, name: string, traceId: string, spanId: string, parentSpanId: string | null, start: number, end: number, attributes: Record<string, unknown> = {}): SpanLine => ({
  service,
  name,
  traceId,
  spanId,
  parentSpanId,
  start: at + start,
  end: at + end,
  attributes,
  links: [],
  status: 0,
});

/** Two requests batched together: A's trace holds the batch; B's inference span names it. */
const ROUTER = [
  span('infermesh-router', 'ModelInfer', A, 'a1', null, 0, 4, { 'infermesh.model': 'fraud', 'infermesh.version': 1 }),
  span('infermesh-router', 'forward', A, 'a2', 'a1', 0.1, 3.8, { 'infermesh.replica': 'inference-1' }),
  span('infermesh-router', 'ModelInfer', B, 'b1', null, 0.2, 4.2, { 'infermesh.model': 'fraud', 'infermesh.version': 1 }),
  span('infermesh-router', 'forward', B, 'b2', 'b1', 0.3, 4.0, { 'infermesh.replica': 'inference-1' }),
  span('infermesh-router', 'ModelInfer', SLOW, 's1', null, 10, 60, {
    'infermesh.model': 'fraud',
    'infermesh.version': 1,
    'infermesh.slow': true,
    'infermesh.router_us': 2000,
    'infermesh.network_us': 8000,
    'infermesh.queue_us': 30000,
    'infermesh.compute_us': 10000,
  }),
];
const REPLICA = [
  span('infermesh-inference', 'inference', A, 'a3', 'a2', 1, 3, { 'infermesh.batch_span_id': 'ba', 'infermesh.rows': 1 }),
  span('infermesh-inference', 'queue', A, 'a4', 'a3', 1, 2),
  span('infermesh-inference', 'batch', A, 'ba', 'a3', 2, 2.8, { 'infermesh.batch_size': 2, 'infermesh.batch_rows': 2 }),
  span('infermesh-inference', 'onnx.run', A, 'bo', 'ba', 2.1, 2.7),
  span('infermesh-inference', 'encode', A, 'a5', 'a3', 2.8, 3),
  span('infermesh-inference', 'inference', B, 'b3', 'b2', 1.2, 3.1, { 'infermesh.batch_span_id': 'ba', 'infermesh.rows': 1 }),
  span('infermesh-inference', 'queue', B, 'b4', 'b3', 1.2, 2),
  span('infermesh-inference', 'encode', B, 'b5', 'b3', 2.9, 3.1),
];

describe('traces show', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-traceview-'));
    const lines = (spans: SpanLine[]) => `${spans.map((s) => JSON.stringify(s)).join('\n')}\n`;
    // The router's file was rotated once: its older spans are in router.jsonl.1.
    await writeFile(path.join(dir, 'router.jsonl.1'), lines(ROUTER.slice(0, 2)));
    await writeFile(path.join(dir, 'router.jsonl'), `${lines(ROUTER.slice(2))}{"cut by a cr`);
    await writeFile(path.join(dir, 'inference-1.jsonl'), lines(REPLICA));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const tree = (rows: ReturnType<typeof traceRows>) => rows.map((r) => `${'  '.repeat(r.depth)}${r.name}@${r.service}`);

  it('draws a trace across processes and rotated files, children by start time, the process from the file name', async () => {
    const rows = traceRows(await loadTrace(await traceFiles(dir), A));
    expect(tree(rows)).toEqual([
      'ModelInfer@router',
      '  forward@router',
      '    inference@inference-1',
      '      queue@inference-1',
      '      batch@inference-1',
      '        onnx.run@inference-1',
      '      encode@inference-1',
    ]);
    expect(rows[0]).toMatchObject({ startMs: 0, durationMs: 4 });
    expect(rows[5]!.startMs).toBeCloseTo(2.1, 3);
    expect(rows[5]!.durationMs).toBeCloseTo(0.6, 3);
    expect(rows[4]!.note).toBe('batch of 2 requests, 2 rows');
    const text = renderWaterfall(A, rows, 40);
    expect(text.split('\n')[0]).toBe(`trace ${A}: 7 spans over 4.000 ms`);
    // The root's bar spans the whole axis.
    expect(text).toMatch(/^ModelInfer\s+router\s+0\.000\s+4\.000\s+\|█{40}\|/m);
  });

  it("a request batched with another shows the batch it ran in, from the other request's trace", async () => {
    const rows = traceRows(await loadTrace(await traceFiles(dir), B));
    expect(tree(rows)).toEqual([
      'ModelInfer@router',
      '  forward@router',
      '    inference@inference-1',
      '      queue@inference-1',
      '      batch@inference-1',
      '        onnx.run@inference-1',
      '      encode@inference-1',
    ]);
    expect(rows[4]!.note).toMatch(/shared, in trace aaaaaaaa…/);
  });

  it('a slow request recorded after the fact gets its breakdown, marked as such', async () => {
    const rows = traceRows(await loadTrace(await traceFiles(dir), SLOW));
    expect(rows.map((r) => [r.name, r.derived])).toEqual([
      ['ModelInfer', false],
      ['router', true],
      ['network', true],
      ['queue', true],
      ['compute', true],
      ['network', true],
      ['router', true],
    ]);
    expect(rows.filter((r) => r.derived).reduce((t, r) => t + r.durationMs, 0)).toBeCloseTo(50, 6);
    expect(renderWaterfall(SLOW, rows)).toMatch(/^\s+queue\s+router\s+5\.000\s+30\.000\s+\|\s*~+\s*\|\s+from the breakdown$/m);
    expect(await loadTrace(await traceFiles(dir), 'd'.repeat(32))).toEqual([]);
  });
});

describe('FileSpanExporter with a size bound', () => {
  it('rotates to <file>.1 past the bound, so at most about twice the bound is kept', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-spanfile-'));
    try {
      const file = path.join(dir, 'router.jsonl');
      const exporter = new FileSpanExporter(file, 'router', 4096);
      const fake = (i: number) =>
        ({
          name: `span-${i}`,
          kind: 0,
          spanContext: () => ({ traceId: A, spanId: i.toString(16).padStart(16, '0') }),
          parentSpanContext: undefined,
          startTime: [1, 0],
          endTime: [1, 5000],
          attributes: { 'infermesh.model': 'fraud' },
          links: [],
          status: { code: 0 },
        }) as unknown as ReadableSpan;
      for (let batch = 0; batch < 40; batch++) {
        await new Promise<void>((resolve, reject) => exporter.export([0, 1, 2, 3].map((k) => fake(batch * 4 + k)), (r) => (r.code === 0 ? resolve() : reject(r.error))));
      }
      const [now, before] = await Promise.all([stat(file), stat(`${file}.1`)]);
      expect(now.size).toBeLessThanOrEqual(4096);
      expect(before.size).toBeLessThanOrEqual(4096);
      // The newest span is in the current file, whole lines only.
      const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { name: string });
      expect(lines.at(-1)!.name).toBe('span-159');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the router's head sampling (the spans traces show reads)", () => {
  it('a root span the caller sampled is recorded once, not sampled a second time by the SDK; other roots at the ratio', async () => {
    const memory = new InMemorySpanExporter();
    const t = await startTelemetry('router-test', { OTEL_TRACES_SAMPLER_ARG: '0.05' }, { processors: [new SimpleSpanProcessor(memory)], asyncContext: false, headSampled: ['ModelInfer'] });
    try {
      expect(t.rootRatio).toBe(0.05);
      // The router starts a ModelInfer root span only for the requests it drew (rootRatio): every one must be kept.
      for (let i = 0; i < 400; i++) t.tracer.startSpan('ModelInfer').end();
      for (let i = 0; i < 2000; i++) t.tracer.startSpan('ModelReady').end();
      const names = memory.getFinishedSpans().map((s) => s.name);
      expect(names.filter((n) => n === 'ModelInfer')).toHaveLength(400);
      const others = names.filter((n) => n === 'ModelReady').length;
      expect(others).toBeGreaterThan(40);
      expect(others).toBeLessThan(200);
    } finally {
      await t.shutdown();
    }
  });
});
