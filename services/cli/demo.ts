/**
 * The `up --demo` traffic: train the fraud model, push it as `fraud`
 * (alias production), wait until the router serves it, score sample
 * transactions concurrently, then read the monitor's stats for it.
 */
import { InferenceApi, MonitorApi, RegistryApi } from '../../libs/client/index.js';
import { codeName, isServiceError } from '../../libs/errors/index.js';
import { trainFraudModel } from '../../libs/onnx-builder/index.js';
import type { VersionStats } from '../../libs/proto/index.js';
import { CliError, step } from './output.js';

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
  stats: VersionStats[];
}

const MODEL = 'fraud';
const IN_FLIGHT = 32;
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
    const t0 = performance.now();
    const worker = async () => {
      while (next < rows.length && !signal.aborted) {
        const row = rows[next++]!;
        try {
          await router.infer(MODEL, [{ name: input, datatype: 'FP32', shape: [1, width], data: row }], { timeoutMs: 10_000 });
        } catch (err) {
          errors++;
          const code = isServiceError(err) ? codeName(err.code) : 'INTERNAL';
          errorsByCode[code] = (errorsByCode[code] ?? 0) + 1;
        }
      }
    };
    await step(
      `demo: scoring ${requests} transactions (${IN_FLIGHT} in flight)`,
      () => Promise.all(Array.from({ length: Math.min(IN_FLIGHT, rows.length) }, worker)),
      () => {
        const s = (performance.now() - t0) / 1000;
        return `${s.toFixed(1)} s, ${Math.round(requests / s)} req/s, ${errors} errors`;
      },
    );
    const seconds = (performance.now() - t0) / 1000;
    if (signal.aborted) throw new CliError('CANCELLED', 'demo stopped');

    const stats = await step('demo: collecting stats from the monitor', async () => {
      await sleep(SAMPLE_FLUSH_WAIT_MS, signal);
      // Wait (briefly) until the monitor has counted this run's requests.
      let last: VersionStats[] = [];
      await until(
        async () => {
          last = await monitor.stats(MODEL).catch(() => []);
          return (last.find((v) => v.version === version)?.requests ?? 0) >= requests;
        },
        5_000,
        signal,
        null,
      );
      return last;
    });
    return { model: MODEL, version, sent: requests, errors, errorsByCode, seconds, stats };
  } finally {
    registry.close();
    router.close();
    monitor.close();
  }
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
