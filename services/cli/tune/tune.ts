/**
 * `infermesh tune NAME --model FILE`: like Triton's Model Analyzer, tries
 * every (worker count × max batch size × max queue delay) on a local mesh of
 * its own and reports the one with the most rows/s whose p99 meets a target.
 * Each worker count gets a fresh inference replica; each batching policy is
 * a new version of NAME pushed with the alias production, measured once the
 * router answers with it, with h2load through the router.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InferenceApi, MonitorApi, RegistryApi, buildInferRequest } from '../../../libs/client/index.js';
import { isServiceError, Status } from '../../../libs/errors/index.js';
import { oip } from '../../../libs/proto/index.js';
import { runH2load, type LoadResult } from '../bench/h2load.js';
import { ensureBinary } from '../nats-server.js';
import { CliError, printJson, printText, progress } from '../output.js';
import { tunePlan, type TuneOptions } from './options.js';
import { readTuneInput, requestTensors, rowsPerRequest } from './tune-input.js';
import { TuneMesh } from './mesh.js';
import { byThroughput, chooseBest, meets, renderTune, withApply, type TuneConfig, type TuneResult } from './report.js';

export type { TuneOptions } from './options.js';

const H2LOAD_HOW_TO = 'h2load (the load generator) is missing: sudo apt-get install -y nghttp2-client';
/** How long a pushed version has to be served by the router. */
const READY_TIMEOUT_MS = 60_000;

export async function tuneCommand(name: string, o: TuneOptions): Promise<number> {
  // Everything the user typed is checked before any process starts.
  const plan = tunePlan(o);
  const parsedInput = await readTuneInput(o.input);
  let modelBytes: Buffer;
  try {
    modelBytes = await readFile(o.model);
  } catch (err) {
    throw new CliError('NOT_FOUND', `cannot read ${o.model}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  await ensureBinary('h2load', 'nghttp2-client', H2LOAD_HOW_TO);

  const configs: TuneConfig[] = plan.workers.flatMap((workers) =>
    plan.batchSizes.flatMap((maxBatchSize) => plan.queueDelaysUs.map((maxQueueDelayMicros) => ({ workers, maxBatchSize, maxQueueDelayMicros }))),
  );
  const dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-tune-'));
  progress(`tune: ${configs.length} ${configs.length === 1 ? 'configuration' : 'configurations'} (workers ${plan.workers.join(',')} × max batch ${plan.batchSizes.join(',')} × queue delay µs ${plan.queueDelaysUs.join(',')}); starting nats-server, registry, monitor and router…\n`);
  const mesh = await TuneMesh.create(dir);
  const reg = new RegistryApi(mesh.registry);
  const api = new InferenceApi(mesh.router);
  const mon = new MonitorApi(mesh.monitor);
  try {
    const results: TuneResult[] = [];
    let payload: { request: oip.ModelInferRequest; bytes: Uint8Array; rows: number } | null = null;
    let warnedUnbatchable = false;
    let replicaWorkers = 0;
    for (const [i, c] of configs.entries()) {
      const label = `tune: [${i + 1}/${configs.length}] workers=${c.workers} max_batch=${c.maxBatchSize} queue_delay_us=${c.maxQueueDelayMicros}`;
      if (c.workers !== replicaWorkers) {
        progress(`tune: starting an inference replica with ${c.workers} worker ${c.workers === 1 ? 'thread' : 'threads'}…\n`);
        await mesh.startReplica(c.workers);
        replicaWorkers = c.workers;
      }
      const rec = await reg.push(modelBytes, { name, alias: 'production', batching: { maxBatchSize: c.maxBatchSize, maxQueueDelayMicros: c.maxQueueDelayMicros } });
      if (!rec.batchable && c.maxBatchSize > 1 && !warnedUnbatchable) {
        progress(`tune: the model's inputs have no dynamic leading dimension, so it is never batched; every batch size behaves as 1\n`);
        warnedUnbatchable = true;
      }
      progress(`${label}: pushed version ${rec.version}, waiting for the router to serve it…\n`);
      const version = String(rec.version);
      await until(() => api.modelReady(name, version).catch(() => false), `version ${version} of ${name} did not become ready`);
      if (!payload) {
        const meta = await api.metadata(name, version);
        const tensors = requestTensors(parsedInput, meta.inputs);
        const request = buildInferRequest(name, tensors);
        payload = { request, bytes: oip.ModelInferRequest.encode(request).finish(), rows: rowsPerRequest(tensors) };
      }
      // Promotion reaches the router through the KV watch: wait until production answers with this version.
      const req = payload.request;
      await until(async () => (await servedVersion(api, req)) === version, `the router did not move production of ${name} to version ${version}`);

      const load = { target: mesh.router, payload: payload.bytes, connections: o.connections, streams: o.streams };
      const warm = await runH2load({ ...load, requests: Math.max(50, Math.min(500, Math.floor(o.requests / 4))) });
      const run = await runH2load({ ...load, requests: o.requests });
      const grpcErrors = await routerErrors(mon, name, rec.version, warm.succeeded + run.succeeded);
      mesh.check();
      const r = result(c, rec.version, payload.rows, run, grpcErrors, plan.p99TargetMs);
      results.push(r);
      progress(`${label}: ${Math.round(r.rowsPerSec)} rows/s, p50 ${r.p50Ms.toFixed(1)} ms, p99 ${r.p99Ms.toFixed(1)} ms${r.failed + r.grpcErrors ? `, ${r.failed + r.grpcErrors} errors` : ''}${r.meetsTarget ? '' : ' (misses the target)'}\n`);
    }

    const best = withApply(chooseBest(results)!, name, o.model);
    const inFlight = o.connections * o.streams;
    if (o.json) {
      printJson({
        configs: byThroughput(results),
        best,
        target: { p99Ms: plan.p99TargetMs, met: results.some((r) => r.meetsTarget) },
        load: { generator: 'h2load (nghttp2-client), 1 thread', requests: o.requests, connections: o.connections, streams: o.streams, inFlight, rowsPerRequest: payload!.rows },
        machine: { cpus: os.availableParallelism(), node: process.version },
      });
    } else {
      printText(renderTune(results, best, { p99TargetMs: plan.p99TargetMs, inFlight, requests: o.requests }));
    }
    return 0;
  } finally {
    reg.close();
    api.close();
    mon.close();
    await mesh.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function result(c: TuneConfig, modelVersion: number, rows: number, run: LoadResult, grpcErrors: number, p99TargetMs: number): TuneResult {
  const callsPerSec = run.rps;
  const r = {
    ...c,
    modelVersion,
    rowsPerRequest: rows,
    requests: run.requests,
    succeeded: run.succeeded,
    failed: run.failed,
    grpcErrors,
    seconds: run.seconds,
    callsPerSec,
    rowsPerSec: callsPerSec * rows,
    p50Ms: run.p50Us / 1000,
    p99Ms: run.p99Us / 1000,
    p999Ms: run.p999Us / 1000,
  };
  return { ...r, meetsTarget: meets(r, p99TargetMs) };
}

/**
 * The version that answers `req` through the router; '' while the router
 * cannot serve it yet (UNAVAILABLE, NOT_FOUND). Other errors are the
 * request's fault and end the run.
 */
async function servedVersion(api: InferenceApi, req: oip.ModelInferRequest): Promise<string> {
  try {
    return (await api.inferRaw(req)).modelVersion;
  } catch (err) {
    if (isServiceError(err) && (err.code === Status.UNAVAILABLE || err.code === Status.NOT_FOUND)) return '';
    throw err;
  }
}

/**
 * Errors the router recorded for `version` (h2load sees only HTTP status,
 * while gRPC errors travel in trailers). Waits until the monitor has counted
 * at least `calls` requests, or 5 s.
 */
async function routerErrors(mon: MonitorApi, name: string, version: number, calls: number): Promise<number> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const v = (await mon.stats(name).catch(() => [])).find((s) => s.version === version);
    if ((v && v.requests >= calls) || Date.now() > deadline) return v?.errors ?? 0;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Polls `ok` every 50 ms until it resolves true; DEADLINE_EXCEEDED with `what` after 60 s. */
async function until(ok: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new CliError('DEADLINE_EXCEEDED', `${what} within ${READY_TIMEOUT_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
