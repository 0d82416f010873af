/**
 * `infermesh outcomes export` of 1,000,000 joined rows: the real
 * ExportOutcomes handler (services/monitor/experiments.ts, built) on a real
 * gRPC server in a worker thread, fed by a synthetic store that makes each
 * row when it is read, and the real CLI process writing CSV to a file. Both
 * run with a 48 MB heap while the CSV is ~115 MB (memory is bounded: holding
 * the rows would kill either), the CLI's peak RSS is read from /proc, and
 * every row reads back exactly: the same request id, time, version, segment,
 * label, and float32 features and outputs.
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JoinedRow } from '../../services/monitor/outcomes.js';
import { CLI } from '../cli/run-cli.js';

const ROWS = 1_000_000;
const T0 = 1_790_000_000_000;
const SEGMENTS = ['web', 'app', 'pos, "kiosk"'];
/** Old-generation heap of the server's worker and of the CLI: far below what 1,000,000 rows take (the CSV alone is ~115 MB). */
const HEAP_MB = 48;

/** Row i, made on demand: what the store would hold. The worker below has the same function (as text). */
function row(i: number): JoinedRow {
  const f = new Float32Array(5);
  f[0] = Math.sin(i) * 100;
  f[1] = i / 7;
  f[2] = -1 / (i + 1);
  f[3] = i % 13;
  f[4] = ((i * 7919) % 1000) / 999;
  return { requestId: `tx-${i}`, at: T0 + i, version: 1 + (i % 2), segment: SEGMENTS[i % 3]!, label: i % 11 === 0 ? 1 : 0, features: f.subarray(0, 4), outputs: f.subarray(4) };
}

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist');

/**
 * The server: a worker thread with a 48 MB heap running the built
 * ExportOutcomes handler on a gRPC server, over a synthetic store of
 * ROWS rows made as they are read (as OutcomeStore.joinedRows hands out views).
 */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const { experimentHandlers } = await import(workerData.dist + '/services/monitor/experiments.js');
  const { createGrpcServer, listen, serverCredentials } = await import(workerData.dist + '/libs/grpc/index.js');
  const { MonitorService } = await import(workerData.dist + '/libs/proto/index.js');
  const { ROWS, T0, SEGMENTS } = workerData;
  ${row.toString().replace(/: JoinedRow|!/g, '')}
  const source = {
    whenReady: async () => undefined,
    hasSamples: (name) => name === 'fraud',
    *joinedRows(_name, filter) {
      // Rows are in time order (at = T0 + i): start at the first that can pass --since.
      for (let i = filter.sinceMs ? Math.max(0, filter.sinceMs - T0) : 0; i < ROWS; i++) {
        const r = row(i);
        if ((!filter.version || r.version === filter.version) && (!filter.sinceMs || r.at >= filter.sinceMs)) yield r;
      }
    },
    widths: () => ({ inputs: 4, outputs: 1 }),
    segmentBy: () => 'channel',
    columnNames: (_n, kind, count) => Array.from({ length: count }, (_, j) => (kind === 'inputs' ? ['amount', 'age', 'ratio', 'hour'][j] : 'fraud_probability')),
  };
  const server = createGrpcServer({ maxMessageBytes: 4 * 1024 * 1024 });
  // Only the experiment RPCs: the others answer UNIMPLEMENTED here.
  server.addService(MonitorService, experimentHandlers({}, source));
  const port = await listen(server, '127.0.0.1', 0, serverCredentials(null));
  setInterval(() => parentPort.postMessage({ rss: process.memoryUsage().rss, heap: process.memoryUsage().heapUsed }), 50);
  parentPort.postMessage({ port });
})();
`;

let worker: Worker;
let addr: string;
let dir: string;
let workerHeapPeak = 0;
let workerError: unknown = null;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'export-'));
  worker = new Worker(WORKER, { eval: true, workerData: { dist: DIST, ROWS, T0, SEGMENTS }, resourceLimits: { maxOldGenerationSizeMb: HEAP_MB, maxYoungGenerationSizeMb: 32 } });
  worker.on('error', (err) => (workerError = err));
  const port = await new Promise<number>((resolve, reject) => {
    worker.on('message', (m: { port?: number; heap?: number }) => {
      if (m.port) resolve(m.port);
      if (m.heap) workerHeapPeak = Math.max(workerHeapPeak, m.heap);
    });
    worker.once('error', reject);
  });
  addr = `127.0.0.1:${port}`;
});

afterAll(async () => {
  await worker?.terminate();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs the CLI; returns its exit code, stderr and peak RSS (VmHWM, read from /proc while it runs). */
function runCli(args: string[]): Promise<{ code: number | null; stderr: string; peakRssBytes: number }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [`--max-old-space-size=${HEAP_MB}`, CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let peak = 0;
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const poll = setInterval(() => {
      void readFile(`/proc/${p.pid}/status`, 'utf8').then(
        (s) => {
          const kb = Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? 0);
          peak = Math.max(peak, kb * 1024);
        },
        () => undefined,
      );
    }, 50);
    p.once('close', (code) => {
      clearInterval(poll);
      resolve({ code, stderr, peakRssBytes: peak });
    });
  });
}

describe('outcomes export', () => {
  it('streams 1,000,000 joined rows to CSV in bounded memory, and they read back exactly', async () => {
    const file = path.join(dir, 'fraud.csv');
    const started = Date.now();
    const r = await runCli(['outcomes', 'export', 'fraud', '--format', 'csv', '--output', file, '--monitor', addr]);
    const seconds = (Date.now() - started) / 1000;
    expect(r.code, r.stderr).toBe(0);
    expect(workerError).toBeNull();
    expect(r.stderr).toMatch(/1000000 joined rows of fraud written to /);
    const bytes = (await stat(file)).size;
    console.log(
      `export: ${ROWS} rows, ${(bytes / 1e6).toFixed(1)} MB CSV in ${seconds.toFixed(1)} s; CLI peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB (heap limit ${HEAP_MB} MB); ` +
        `server worker peak heap ${(workerHeapPeak / 2 ** 20).toFixed(0)} MiB (limit ${HEAP_MB} MB)`,
    );
    // Both sides ran within a 48 MB old-generation heap (the worker or the CLI would have died otherwise) while the CSV is ~115 MB.
    expect(bytes).toBeGreaterThan(100e6);
    expect(r.peakRssBytes).toBeGreaterThan(0);
    expect(r.peakRssBytes).toBeLessThan(200 * 2 ** 20);
    expect(workerHeapPeak).toBeLessThan((HEAP_MB + 32) * 2 ** 20);

    // Read back, streaming, and compare each row with the source.
    const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
    let i = -1;
    let bad = '';
    for await (const line of lines) {
      if (i === -1) {
        expect(line).toBe('request_id,at_ms,version,segment:channel,label,amount,age,ratio,hour,output:fraud_probability');
        i++;
        continue;
      }
      const want = row(i);
      const cells = parseCsvLine(line);
      const ok =
        cells.length === 10 &&
        cells[0] === want.requestId &&
        Number(cells[1]) === want.at &&
        Number(cells[2]) === want.version &&
        cells[3] === want.segment &&
        Number(cells[4]) === want.label &&
        [0, 1, 2, 3].every((j) => Math.fround(Number(cells[5 + j])) === want.features[j] && Number(cells[5 + j]) === want.features[j]) &&
        Number(cells[9]) === want.outputs[0];
      if (!ok && !bad) bad = `row ${i}: ${line}`;
      i++;
    }
    expect(bad).toBe('');
    expect(i).toBe(ROWS);
  }, 120_000);

  it('--version and --since filter on the server; bad flags are usage errors', async () => {
    const file = path.join(dir, 'v2.jsonl');
    const since = T0 + ROWS - 1000;
    const r = await runCli(['outcomes', 'export', 'fraud', '--format', 'jsonl', '--version', '2', '--since', String(since), '--output', file, '--monitor', addr]);
    expect(r.code, r.stderr).toBe(0);
    const rows = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { request_id: string; version: number; at_ms: number; features: number[] });
    expect(rows).toHaveLength(500);
    expect(rows.every((x) => x.version === 2 && x.at_ms >= since)).toBe(true);
    const last = row(ROWS - 1);
    expect(rows.at(-1)).toEqual({ request_id: last.requestId, at_ms: last.at, version: 2, segment: last.segment, label: last.label, features: Array.from(last.features), outputs: Array.from(last.outputs) });
    const badFormat = await runCli(['outcomes', 'export', 'fraud', '--format', 'xml', '--monitor', addr]);
    expect(badFormat.code).toBe(2);
    const badSince = await runCli(['outcomes', 'export', 'fraud', '--format', 'csv', '--since', 'yesterday', '--monitor', addr]);
    expect(badSince.code).toBe(2);
    expect(badSince.stderr).toMatch(/^error: INVALID_ARGUMENT: --since must be/m);
    const missing = await runCli(['outcomes', 'export', 'nope', '--format', 'csv', '--monitor', addr]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error: NOT_FOUND: /m);
  }, 30_000);
});

/** Splits one CSV line (quoted fields with "" escapes). */
function parseCsvLine(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let v = '';
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        v += line.slice(i, q);
        if (line[q + 1] === '"') {
          v += '"';
          i = q + 2;
        } else {
          i = q + 2;
          break;
        }
      }
      out.push(v);
    } else {
      const c = line.indexOf(',', i);
      const end = c < 0 ? line.length : c;
      out.push(line.slice(i, end));
      i = end + 1;
    }
  }
  return out;
}
