import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface LoadSpec {
  /** host:port of a server answering /inference.GRPCInferenceService/ModelInfer. */
  target: string;
  /** A serialized ModelInferRequest (sent as the body of every call). */
  payload: Uint8Array;
  requests: number;
  connections: number;
  /** Concurrent streams per connection. */
  streams: number;
  /** Extra gRPC metadata as `name: value` headers. */
  headers?: string[];
  /**
   * Open loop: each connection starts calls at this rate (h2load --rps, per
   * client), so the whole run offers rps × connections calls/s whatever the
   * answers' latency; `streams` then only caps the calls in flight.
   */
  rps?: number;
}

export interface LoadResult {
  requests: number;
  succeeded: number;
  failed: number;
  seconds: number;
  /** Calls per second; for pooled rounds, the median of the rounds' rates. */
  rps: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  /** Each round's calls per second, when rounds were pooled. */
  roundsRps?: number[];
}

/** One h2load run with every request's latency (µs, sorted), for pooling rounds. */
export interface LoadRun extends LoadResult {
  latencies: number[];
}

/** The length-prefixed gRPC message framing h2load sends as the body. */
export function grpcFrame(payload: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + payload.byteLength);
  b.writeUInt32BE(payload.byteLength, 1);
  b.set(payload, 5);
  return b;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/**
 * Drives gRPC unary calls with h2load (nghttp2's C HTTP/2 load generator,
 * one thread) and reads every request's latency from its log file. h2load
 * judges HTTP status only; callers check gRPC status separately.
 */
export function runH2load(spec: LoadSpec): Promise<LoadRun> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-bench-'));
  const body = path.join(dir, 'body.bin');
  const log = path.join(dir, 'requests.log');
  writeFileSync(body, grpcFrame(spec.payload));
  const args = [
    '-n', String(spec.requests), '-c', String(spec.connections), '-m', String(spec.streams), '-t', '1',
    '-d', body, '--log-file', log,
    '-H', 'content-type: application/grpc', '-H', 'te: trailers',
    ...(spec.headers ?? []).flatMap((h) => ['-H', h]),
    ...(spec.rps !== undefined ? ['--rps', String(spec.rps)] : []),
    `http://${spec.target}/inference.GRPCInferenceService/ModelInfer`,
  ];
  return new Promise((resolve, reject) => {
    execFile('h2load', args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout) => {
      try {
        if (err) throw new Error(`h2load failed: ${String(err.message).split('\n')[0]}`);
        const fin = /finished in ([\d.]+)(ms|s)/.exec(stdout);
        const req = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(stdout);
        if (!fin || !req) throw new Error(`unexpected h2load output: ${stdout.slice(0, 300)}`);
        const seconds = Number(fin[1]) / (fin[2] === 'ms' ? 1000 : 1);
        const lat = readFileSync(log, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => Number(l.split('\t')[2]))
          .sort((a, b) => a - b);
        const succeeded = Number(req[2]);
        resolve({
          requests: Number(req[1]),
          succeeded,
          failed: Number(req[3]),
          seconds,
          rps: succeeded / seconds,
          p50Us: quantile(lat, 0.5),
          p99Us: quantile(lat, 0.99),
          p999Us: quantile(lat, 0.999),
          latencies: lat,
        });
      } catch (e) {
        reject(e);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

/** The median (mean of the middle two for an even count; 0 for none). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Several rounds of one scenario as one result: counts and seconds add up,
 * the rate is the median of the rounds' rates (one disturbed round moves it
 * little), and the latency quantiles come from every request of every round.
 */
export function poolRounds(runs: readonly LoadRun[]): LoadResult {
  const lat = runs.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const rates = runs.map((r) => r.rps);
  return {
    requests: runs.reduce((n, r) => n + r.requests, 0),
    succeeded: runs.reduce((n, r) => n + r.succeeded, 0),
    failed: runs.reduce((n, r) => n + r.failed, 0),
    seconds: runs.reduce((n, r) => n + r.seconds, 0),
    rps: median(rates),
    p50Us: quantile(lat, 0.5),
    p99Us: quantile(lat, 0.99),
    p999Us: quantile(lat, 0.999),
    roundsRps: rates.map((r) => Math.round(r)),
  };
}
