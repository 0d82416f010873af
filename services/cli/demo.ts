/**
 * The `up --demo` traffic: train the fraud model, push it as `fraud`
 * (alias production), wait until the router serves it, score sample
 * transactions from a few callers (one request in flight each, as services
 * that score their own transactions would), then show the latency the
 * callers saw beside the router's (the monitor's stats).
 */
import { InferenceApi, MonitorApi, RegistryApi } from '../../libs/client/index.js';
import { codeName, isServiceError } from '../../libs/errors/index.js';
import { trainFraudModel } from '../../libs/onnx-builder/index.js';
import type { VersionStats } from '../../libs/proto/index.js';
import { CliError, step } from './output.js';
import { formatMs, formatNumber, renderTable } from './table.js';

export interface DemoAddresses {
  registry: string;
  router: string;
  monitor: string;
}

export interface DemoResult {
  model: string;
  version: number;
  sent: number;
  errors: number;
  errorsByCode: Record<string, number>;
  seconds: number;
  /** Callers, each with one request in flight. */
  callers: number;
  /** Latency percentiles as the callers measured them (ms), every attempt and the network included. */
  caller: { p50Ms: number; p95Ms: number; p99Ms: number; rps: number };
  stats: VersionStats[];
}

const MODEL = 'fraud';
/** A few callers, one request in flight each: the latency a caller sees, not a load test's. */
const CALLERS = 4;
/** The router flushes its samples to the monitor every second by default. */
const SAMPLE_FLUSH_WAIT_MS = 1_500;

/** Runs the demo; `signal` stops it between steps and between requests. */
export async function runDemo(addr: DemoAddresses, requests: number, signal: AbortSignal): Promise<DemoResult> {
  const registry = new RegistryApi(addr.registry);
  const router = new InferenceApi(addr.router);
  const monitor = new MonitorApi(addr.monitor);
  try {
    const model = await step('demo: training the fraud model', async () => trainFraudModel(), (m) => `ROC AUC ${m.auc.toFixed(3)} on held-out rows`);
    const pushed = await step(`demo: pushing ${MODEL} (alias production)`, () => registry.push(model.bytes, { name: MODEL, alias: 'production', description: 'infermesh demo: card fraud logistic regression' }), (v) => `version ${v.version}`);
    const version = pushed.version;
    await step(`demo: waiting until the router serves ${MODEL} v${version}`, () => until(() => router.modelReady(MODEL, String(version)), 60_000, signal, `${MODEL} v${version} not ready through the router`));

    const input = model.inputs[0]!.name;
    const width = model.featureNames.length;
    const rows = model.sampleRows(requests, 42);
    const errorsByCode: Record<string, number> = {};
    let errors = 0;
    let next = 0;
    const latencies = new Float64Array(rows.length);
    const t0 = performance.now();
    const worker = async () => {
      while (next < rows.length && !signal.aborted) {
        const i = next++;
        const row = rows[i]!;
        const sent = performance.now();
        try {
          await router.infer(MODEL, [{ name: input, datatype: 'FP32', shape: [1, width], data: row }], { timeoutMs: 10_000 });
          latencies[i] = performance.now() - sent;
        } catch (err) {
          latencies[i] = Number.NaN;
          errors++;
          const code = isServiceError(err) ? codeName(err.code) : 'INTERNAL';
          errorsByCode[code] = (errorsByCode[code] ?? 0) + 1;
        }
      }
    };
    // One call first: the channel's connection set-up is not a scoring latency.
    await router.infer(MODEL, [{ name: input, datatype: 'FP32', shape: [1, width], data: rows[0]! }], { timeoutMs: 10_000 });
    await step(
      `demo: scoring ${requests} transactions from ${CALLERS} callers, one request in flight each`,
      () => Promise.all(Array.from({ length: Math.min(CALLERS, rows.length) }, worker)),
      () => {
        const s = (performance.now() - t0) / 1000;
        return `${s.toFixed(1)} s, ${Math.round(requests / s)} req/s, ${errors} errors`;
      },
    );
    const seconds = (performance.now() - t0) / 1000;
    if (signal.aborted) throw new CliError('CANCELLED', 'demo stopped');
    const ok = Float64Array.from(latencies.filter((v) => !Number.isNaN(v))).sort();
    const caller = { p50Ms: quantile(ok, 0.5), p95Ms: quantile(ok, 0.95), p99Ms: quantile(ok, 0.99), rps: requests / seconds };

    const stats = await step('demo: collecting stats from the monitor', async () => {
      await sleep(SAMPLE_FLUSH_WAIT_MS, signal);
      // Wait (briefly) until the monitor has counted this run's requests.
      let last: VersionStats[] = [];
      await until(
        async () => {
          last = await monitor.stats(MODEL).catch(() => []);
          return (last.find((v) => v.version === version)?.requests ?? 0) >= requests + 1;
        },
        5_000,
        signal,
        null,
      );
      return last;
    });
    return { model: MODEL, version, sent: requests, errors, errorsByCode, seconds, callers: CALLERS, caller, stats };
  } finally {
    registry.close();
    router.close();
    monitor.close();
  }
}

/** The q-quantile of sorted values (nearest rank); 0 when there are none. */
function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/**
 * The demo's result for people: the latency its callers saw (connection,
 * router, replica and back) beside the router's own (from the monitor,
 * which counts the demo's one warm-up call too), and the callers' rate.
 */
export function demoTable(d: DemoResult): string {
  const router = d.stats.find((v) => v.version === d.version);
  const rows = [
    [d.model, String(d.version), `${d.callers} callers`, String(d.sent), String(d.errors), formatMs(d.caller.p50Ms), formatMs(d.caller.p95Ms), formatMs(d.caller.p99Ms), formatNumber(d.caller.rps, 4)],
    ...(router
      ? [[d.model, String(d.version), 'router', String(router.requests), String(router.errors), formatMs(router.p50Ms), formatMs(router.p95Ms), formatMs(router.p99Ms), '-']]
      : []),
  ];
  return renderTable(['MODEL', 'VERSION', 'SEEN_BY', 'REQUESTS', 'ERRORS', 'P50_MS', 'P95_MS', 'P99_MS', 'REQ/S'], rows, ['left', 'right', 'left', 'right', 'right', 'right', 'right', 'right', 'right']);
}

/** Polls `check` every 100 ms until true; then resolves. On timeout throws DEADLINE_EXCEEDED(`failure`), or just resolves when `failure` is null. */
async function until(check: () => Promise<boolean>, timeoutMs: number, signal: AbortSignal, failure: string | null): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (signal.aborted) throw new CliError('CANCELLED', 'demo stopped');
    if (await check().catch(() => false)) return;
    if (Date.now() > end) {
      if (failure === null) return;
      throw new CliError('DEADLINE_EXCEEDED', failure);
    }
    await sleep(100, signal);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
