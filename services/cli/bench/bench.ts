/**
 * `infermesh bench`: in one run, with one load generator (h2load), one
 * payload and one concurrency, measures in-process ONNX Runtime, a bare
 * grpc-js echo (the transport floor), an inference replica called directly,
 * and the full mesh through the router; then batching on a compute-bound
 * model, event-loop delay under a 50 ms model, and peak memory.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as ort from 'onnxruntime-node';
import { InferenceApi, MonitorApi, RegistryApi, buildInferRequest } from '../../../libs/client/index.js';
import { SERVICE_NODE_FLAGS } from '../../../libs/config/index.js';
import { call as grpcCall } from '../../../libs/grpc/index.js';
import { mlpModel, slowModel, trainFraudModel } from '../../../libs/onnx-builder/index.js';
import { oip, RuntimeClient } from '../../../libs/proto/index.js';
import { ensureBinary, ensureNatsServer } from '../nats-server.js';
import { CliError, printJson, printText, progress } from '../output.js';
import { useOwnPlaintextMesh } from '../security.js';
import { accepts, freePort } from '../ports.js';
import { Supervisor, type Started } from '../supervisor.js';
import { renderTable } from '../table.js';
import { benchInProcess, type InProcessResult } from './in-process.js';
import { median, poolRounds, runH2load, type LoadResult, type LoadRun } from './h2load.js';

export interface BenchOptions {
  requests: number;
  connections: number;
  streams: number;
  latencyRequests: number;
  batchRequests: number;
  /** Calls sent to each target before any is measured (JIT and heap reach steady state). */
  warmup: number;
  /** Measured rounds; each round visits every target, in an order rotated by one each round and reversed every other one. */
  rounds: number;
  json?: boolean;
}

const WIDE_IN = 512;
const H2LOAD_HOW_TO = 'h2load (the load generator) is missing: sudo apt-get install -y nghttp2-client';
const isListening = (j: Record<string, unknown>) => j.msg === 'listening';

function rssPeakMb(pid: number): { peakMb: number; nowMb: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0);
  return { peakMb: Math.round(kb('VmHWM') / 1024), nowMb: Math.round(kb('VmRSS') / 1024) };
}

/** Sends `payload` once as raw bytes and returns the gRPC status (h2load sees only HTTP). */
function grpcStatusOf(target: string, payload: Uint8Array): Promise<number> {
  const c = new grpc.Client(target, grpc.credentials.createInsecure());
  return new Promise((resolve) =>
    c.makeUnaryRequest(oip.GRPCInferenceServiceService.modelInfer.path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(payload), (err) => {
      c.close();
      resolve(err ? err.code : 0);
    }),
  );
}

export async function benchCommand(o: BenchOptions): Promise<number> {
  useOwnPlaintextMesh();
  await ensureBinary('h2load', 'nghttp2-client', H2LOAD_HOW_TO);
  const natsBin = await ensureNatsServer();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-bench-'));
  let failure: Error | null = null;
  const sup = new Supervisor(dir, (c, how) => (failure = new CliError('UNAVAILABLE', `${c.name} ${how} during the benchmark (log: ${c.logFile})`)));
  const entry = (s: string) => fileURLToPath(new URL(`../../${s}/main.js`, import.meta.url));
  try {
    progress('bench: starting nats-server, registry, monitor, one inference replica, router and a grpc-js echo server…\n');
    const natsPort = await freePort();
    await sup.start({ name: 'nats', command: natsBin, args: ['-js', '-sd', path.join(dir, 'nats'), '-a', '127.0.0.1', '-p', String(natsPort)], tier: 0, readyProbe: () => accepts(natsPort), timeoutMs: 15_000 });
    const nats = `nats://127.0.0.1:${natsPort}`;
    const svc = (name: string, tier: number, extra: string[] = [], script = name) =>
      sup.start({ name, command: process.execPath, args: [...SERVICE_NODE_FLAGS, entry(script), '--nats', nats, '--port', '0', '--log-level', 'info', ...extra], tier, readyLine: isListening, timeoutMs: 60_000 });
    // The mesh runs with tracing as deployed: default sampling (5 % of roots), spans
    // exported through the batch processor (to /dev/null). A second router with
    // tracing off serves the comparison.
    process.env.INFERMESH_TRACE_FILE = '/dev/null';
    const [registry, monitor, inference] = await Promise.all([
      svc('registry', 1),
      svc('monitor', 1, ['--metrics-port', '0']),
      svc('inference', 2, ['--heartbeat-ms', '1000']),
    ]);
    const router = await svc('router', 3, ['--rest-port', '0', '--sample-flush-ms', '250']);
    delete process.env.INFERMESH_TRACE_FILE;
    process.env.OTEL_TRACES_SAMPLER = 'always_off';
    const routerOff = await svc('router-untraced', 3, ['--rest-port', '0', '--sample-flush-ms', '250'], 'router');
    delete process.env.OTEL_TRACES_SAMPLER;
    const echoServer = (name: string, extra: string[]) =>
      sup.start({
        name,
        command: process.execPath,
        args: [...SERVICE_NODE_FLAGS, fileURLToPath(new URL('./echo-server.js', import.meta.url)), '--port', '0', ...extra],
        tier: 3,
        readyLine: isListening,
        timeoutMs: 15_000,
      });
    const echo = await echoServer('echo', []);
    const rawEcho = await echoServer('echo-http2', ['--raw']);
    const addr = (s: Started) => `127.0.0.1:${s.info.grpcPort}`;
    const routerAddr = addr(router);
    const replicaAddr = String(inference.info.address);

    progress('bench: making and pushing the demo fraud model…\n');
    const fraud = trainFraudModel();
    const reg = new RegistryApi(addr(registry));
    await reg.push(fraud.bytes, { name: 'fraud', alias: 'production' });
    const client = new InferenceApi(routerAddr);
    const waitReady = async (m: string) => {
      const until = Date.now() + 60_000;
      while (!(await client.modelReady(m).catch(() => false))) {
        if (Date.now() > until) throw new CliError('DEADLINE_EXCEEDED', `model ${m} did not become ready`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await waitReady('fraud');
    const idleMem = { inference: rssPeakMb(inference.pid), router: rssPeakMb(router.pid) };

    const row = fraud.sampleRows(1, 3)[0]!;
    const enc = (r: oip.ModelInferRequest) => oip.ModelInferRequest.encode(r).finish();
    const fraudPayload = enc(buildInferRequest('fraud', [{ name: 'features', datatype: 'FP32', shape: [1, row.length], data: row }]));
    const wideRow = Array.from({ length: WIDE_IN }, (_, i) => Math.sin(i));
    const widePayload = (name: string) => enc(buildInferRequest(name, [{ name: 'features', datatype: 'FP32', shape: [1, WIDE_IN], data: wideRow }]));
    const slowPayload = enc(buildInferRequest('slow', [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }]));
    for (const [target, p] of [[routerAddr, fraudPayload], [replicaAddr, fraudPayload]] as const) {
      const code = await grpcStatusOf(target, p);
      if (code !== 0) throw new CliError('INTERNAL', `benchmark payload answered ${grpc.status[code]} by ${target}`);
    }

    const load = { requests: o.requests, connections: o.connections, streams: o.streams };
    const c1 = { requests: o.latencyRequests, connections: 1, streams: 1 };
    const results: Record<string, { load: LoadResult; c1: LoadResult } | InProcessResult> = {};

    progress('bench: in-process ONNX Runtime…\n');
    const inproc = await benchInProcess(fraud.bytes, { features: new ort.Tensor('float32', Float32Array.from(row), [1, row.length]) }, 20_000);
    results['onnxruntime in-process'] = inproc;
    const targets: [string, string][] = [
      ['grpc-js echo', addr(echo)],
      ['http2 echo (raw path)', addr(rawEcho)],
      ['inference direct', replicaAddr],
      ['mesh (router)', routerAddr],
      ['mesh, tracing off', addr(routerOff)],
    ];
    // A process's first tens of thousands of calls run slower (JIT tiers, heap growth): every target is
    // warmed first, then measured in rounds with the order rotated, so no target is always measured
    // first or last (the traced and untraced routers share one replica).
    for (const [label, target] of o.warmup > 0 ? targets : []) {
      progress(`bench: ${label}: warm-up, ${o.warmup} calls at ${o.connections}×${o.streams} in flight…\n`);
      await runH2load({ target, payload: fraudPayload, requests: o.warmup, connections: o.connections, streams: o.streams });
    }
    const runs = new Map<string, { load: LoadRun[]; c1: LoadRun[] }>(targets.map(([label]) => [label, { load: [], c1: [] }]));
    for (let round = 0; round < o.rounds; round++) {
      progress(`bench: round ${round + 1} of ${o.rounds}: ${o.requests} calls at ${o.connections}×${o.streams} in flight and ${o.latencyRequests} at concurrency 1, per target…\n`);
      // Rotated by one each round, and reversed every other round: each target is first, last, before
      // and after each other target equally often (the traced and untraced routers swap places).
      const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
      if (round % 2 === 1) order.reverse();
      for (const [label, target] of order) {
        const r = runs.get(label)!;
        r.load.push(await runH2load({ target, payload: fraudPayload, ...load }));
        r.c1.push(await runH2load({ target, payload: fraudPayload, ...c1 }));
      }
    }
    for (const [label, r] of runs) results[label] = { load: poolRounds(r.load), c1: poolRounds(r.c1) };

    // Memory with the demo model only, after the transport runs (the budget is for this case).
    const demoMem = { inference: rssPeakMb(inference.pid), router: rssPeakMb(router.pid) };

    progress('bench: pushing a compute-bound wide MLP (with and without batching) and a 50 ms model…\n');
    // Compute-bound: 5.2 M weights (21 MB), so one row at a time is memory-bound and batches pay.
    const wide = mlpModel({ inputs: WIDE_IN, hidden: [2048, 2048], outputs: 1, seed: 2 });
    const slow = slowModel({ millis: 50 });
    await reg.push(wide.bytes, { name: 'wide', alias: 'production', batching: { maxBatchSize: 64, maxQueueDelayMicros: 0 } });
    await reg.push(wide.bytes, { name: 'wide-nobatch', alias: 'production', batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 } });
    await reg.push(slow.bytes, { name: 'slow', alias: 'production', batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 } });
    reg.close();
    for (const m of ['wide', 'wide-nobatch', 'slow']) await waitReady(m);
    client.close();
    for (const [target, p] of [[routerAddr, widePayload('wide')], [routerAddr, slowPayload]] as const) {
      const code = await grpcStatusOf(target, p);
      if (code !== 0) throw new CliError('INTERNAL', `benchmark payload answered ${grpc.status[code]} by ${target}`);
    }

    progress(`bench: batching: wide MLP through the mesh, ${o.batchRequests} calls with batching on, then off, in each of ${o.rounds} rounds…\n`);
    const batchLoad = { requests: o.batchRequests, connections: o.connections, streams: o.streams };
    await runH2load({ target: routerAddr, payload: widePayload('wide'), ...batchLoad, requests: Math.min(500, o.batchRequests) });
    await runH2load({ target: routerAddr, payload: widePayload('wide-nobatch'), ...batchLoad, requests: Math.min(200, o.batchRequests) });
    const on: LoadRun[] = [];
    const off: LoadRun[] = [];
    for (let round = 0; round < o.rounds; round++) {
      on.push(await runH2load({ target: routerAddr, payload: widePayload('wide'), ...batchLoad }));
      off.push(await runH2load({ target: routerAddr, payload: widePayload('wide-nobatch'), ...batchLoad }));
    }
    const batchOn = poolRounds(on);
    const batchOff = poolRounds(off);

    progress('bench: event-loop delay of the inference replica while it runs a 50 ms model back to back…\n');
    await runH2load({ target: routerAddr, payload: slowPayload, requests: 60, connections: 1, streams: 8 });
    const rt = new RuntimeClient(replicaAddr, grpc.credentials.createInsecure());
    const status = await grpcCall(rt.status, rt, {});
    rt.close();
    const endMem = { inference: rssPeakMb(inference.pid), router: rssPeakMb(router.pid) };

    await new Promise((r) => setTimeout(r, 600));
    const mon = new MonitorApi(addr(monitor));
    const stats = await mon.stats();
    mon.close();
    const grpcErrors = stats.reduce((n, s) => n + s.errors, 0);
    const grpcErrorCodes = Object.fromEntries(stats.filter((s) => s.errors > 0).map((s) => [`${s.name}:${s.version}`, s.errorsByCode]));
    if (failure) throw failure;

    const pooled = (label: string) => results[label] as { load: LoadResult; c1: LoadResult };
    const echoR = pooled('grpc-js echo');
    const http2EchoR = pooled('http2 echo (raw path)');
    const meshR = pooled('mesh (router)');
    const offR = pooled('mesh, tracing off');
    const directR = pooled('inference direct');
    const ratios = {
      meshThroughputOverEcho: meshR.load.rps / echoR.load.rps,
      meshThroughputOverHttp2Echo: meshR.load.rps / http2EchoR.load.rps,
      directThroughputOverEcho: directR.load.rps / echoR.load.rps,
      meshP50C1OverEcho: meshR.c1.p50Us / echoR.c1.p50Us,
      meshP50C1OverHttp2Echo: meshR.c1.p50Us / http2EchoR.c1.p50Us,
      // Paired per round (the two routers run back to back, in alternating order): the median of the
      // rounds' ratios, so machine load that drifts between rounds cancels out.
      tracingP99OverOff: median(runs.get('mesh (router)')!.load.map((r, i) => r.p99Us / runs.get('mesh, tracing off')!.load[i]!.p99Us)),
      tracingP99PooledOverOff: meshR.load.p99Us / offR.load.p99Us,
      tracingC1P99OverOff: meshR.c1.p99Us / offR.c1.p99Us,
      batchingRowsPerSecOnOverOff: batchOn.rps / batchOff.rps,
      batchingP99OnOverOff: batchOn.p99Us / batchOff.p99Us,
    };
    const report = {
      generator: 'h2load (nghttp2-client), 1 thread',
      load: { ...load, inFlight: o.connections * o.streams, latencyRequests: o.latencyRequests, warmup: o.warmup, rounds: o.rounds },
      machine: { cpus: os.availableParallelism(), node: process.version },
      smallModel: 'demo fraud model (8 features, logistic regression), 1 row per call',
      inProcess: inproc,
      transport: Object.fromEntries(targets.map(([label]) => [label, results[label]])),
      batching: { model: `wide MLP ${WIDE_IN}→2048→2048→1, 1 row per call, through the mesh`, on: batchOn, off: batchOff },
      inferenceEventLoop: { model: '50 ms per call', p99Ms: (status.stats?.eventLoopP99Micros ?? 0) / 1000, maxMs: (status.stats?.eventLoopMaxMicros ?? 0) / 1000 },
      memoryMb: { idleWithDemoModel: idleMem, afterDemoLoad: demoMem, afterAllModels: endMem },
      replicaStats: status.stats,
      grpcErrors,
      grpcErrorCodes,
      ratios,
    };
    if (o.json) printJson(report);
    else printText(renderReport(report, results, targets, inproc));
    return 0;
  } finally {
    await sup.stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

const us = (n: number) => String(Math.round(n));
const f2 = (n: number) => n.toFixed(2);

function renderReport(r: { ratios: Record<string, number>; batching: { on: LoadResult; off: LoadResult }; inferenceEventLoop: { p99Ms: number; maxMs: number }; memoryMb: Record<string, Record<string, { peakMb: number; nowMb: number }>>; grpcErrors: number; load: { inFlight: number; rounds: number } }, results: Record<string, unknown>, targets: [string, string][], inproc: InProcessResult): string {
  const rows: string[][] = [['onnxruntime in-process', us(inproc.rps), us(inproc.p50Us), us(inproc.p99Us), us(inproc.p999Us), '-', '-']];
  for (const [label] of targets) {
    const x = results[label] as { load: LoadResult; c1: LoadResult };
    rows.push([label, us(x.load.rps), us(x.load.p50Us), us(x.load.p99Us), us(x.load.p999Us), us(x.c1.p50Us), us(x.c1.p99Us)]);
  }
  const lines = [
    `load: h2load, ${r.load.inFlight} calls in flight; ${r.load.rounds} rounds after a warm-up (calls/s: median of the rounds; latency in µs over all rounds); c1 = concurrency 1`,
    renderTable(['SCENARIO', 'CALLS/S', 'P50', 'P99', 'P99.9', 'C1_P50', 'C1_P99'], rows, ['left', 'right', 'right', 'right', 'right', 'right', 'right']),
    '',
    renderTable(
      ['WIDE MLP (MESH)', 'ROWS/S', 'P50', 'P99'],
      [
        ['batching on', us(r.batching.on.rps), us(r.batching.on.p50Us), us(r.batching.on.p99Us)],
        ['batching off', us(r.batching.off.rps), us(r.batching.off.p50Us), us(r.batching.off.p99Us)],
      ],
      ['left', 'right', 'right', 'right'],
    ),
    '',
    `mesh / echo throughput:        ${f2(r.ratios.meshThroughputOverEcho!)}  (inference direct / echo: ${f2(r.ratios.directThroughputOverEcho!)}; mesh / http2 echo: ${f2(r.ratios.meshThroughputOverHttp2Echo!)})`,
    `mesh / echo p50 at c1:         ${f2(r.ratios.meshP50C1OverEcho!)}  (mesh / http2 echo: ${f2(r.ratios.meshP50C1OverHttp2Echo!)})`,
    `tracing (default sampling) / off, p99: ${f2(r.ratios.tracingP99OverOff!)} under load (median of the rounds' ratios; pooled ${f2(r.ratios.tracingP99PooledOverOff!)}), ${f2(r.ratios.tracingC1P99OverOff!)} at c1`,
    `batching on / off rows/s:      ${f2(r.ratios.batchingRowsPerSecOnOverOff!)}  (p99 on / off: ${f2(r.ratios.batchingP99OnOverOff!)})`,
    `inference event-loop delay under a 50 ms model: p99 ${f2(r.inferenceEventLoop.p99Ms)} ms, max ${f2(r.inferenceEventLoop.maxMs)} ms`,
    `RSS, demo model only: inference ${r.memoryMb.afterDemoLoad!.inference!.peakMb} MB peak (idle ${r.memoryMb.idleWithDemoModel!.inference!.nowMb}), router ${r.memoryMb.afterDemoLoad!.router!.peakMb} MB peak (idle ${r.memoryMb.idleWithDemoModel!.router!.nowMb})`,
    `RSS peak after the wide and slow models too: inference ${r.memoryMb.afterAllModels!.inference!.peakMb} MB, router ${r.memoryMb.afterAllModels!.router!.peakMb} MB`,
    `gRPC errors seen by the router: ${r.grpcErrors}`,
  ];
  return lines.join('\n');
}
