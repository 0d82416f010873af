/**
 * `infermesh bench`: in one run, with one load generator (h2load) and one
 * payload, measures in-process ONNX Runtime, a bare grpc-js echo (the
 * transport floor), an inference replica called directly, and the full mesh
 * through the router, as callers feel them: 128 calls in flight, one at a
 * time (c1), a few callers each waiting for its answer (4 connections × 1),
 * and an open loop at a fixed rate; with each process's CPU per call. Then
 * batching on a compute-bound model, event-loop delay under a 50 ms model,
 * and peak memory. The mesh is the one `infermesh up` deploys by default
 * (mesh-services.ts, 2 replicas, default flags and tracing).
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
import { addressOf as addr, natsSpec, serviceSpec, startMeshServices, UP_DEFAULTS } from '../mesh-services.js';
import { prepareNatsAuth } from '../nats-auth.js';
import { ensureBinary, ensureNatsServer } from '../nats-server.js';
import { CliError, printJson, printText, progress } from '../output.js';
import { useOwnPlaintextMesh } from '../security.js';
import { freePort } from '../ports.js';
import { Supervisor } from '../supervisor.js';
import { addTicks, CLOCK_TICKS_PER_SECOND, sampleCpu, TICK_US, ticksBetween, usPerCall, type CpuGroups } from './cpu.js';
import { measureHopFloor, type HopFloor } from './hop-floor.js';
import { benchInProcess } from './in-process.js';
import { median, poolRounds, runH2load, type LoadRun, type LoadSpec } from './h2load.js';
import { SCENARIOS, type Scenario } from './scenarios.js';
import { renderReport, type BenchReport, type ScenarioResult, type TransportScenario } from './render.js';

export interface BenchOptions {
  requests: number;
  connections: number;
  streams: number;
  latencyRequests: number;
  batchRequests: number;
  /** Calls per few-callers run (per round). */
  fewRequests: number;
  /** Connections of the few-callers scenario, each with one call in flight. */
  fewCallers: number;
  /** Calls per open-loop run (per round). */
  openRequests: number;
  /** The open loop's offered rate in calls/s; default: half the grpc-js echo's calls/s at `connections`×`streams` in flight, measured in this run. */
  rate?: number;
  /** Calls sent to each target before any is measured (JIT and heap reach steady state). */
  warmup: number;
  /** Measured rounds; each round visits every target, in an order rotated by one each round and reversed every other one. */
  rounds: number;
  /** Which scenarios run (default all). */
  scenarios?: readonly Scenario[];
  json?: boolean;
}

/** Replicas of the mesh as `infermesh up` deploys it by default (its --replicas default). */
const REPLICAS = 2;
/** The open loop offers this share of the echo's capacity. */
const OPEN_SHARE = 0.5;
/** Messages per process-hop-floor run (≈ 1–2 s at 1 in flight; CPU read to about ±1 µs). */
const HOP_MESSAGES = 20_000;

interface Target {
  label: string;
  address: string;
  /** Whose CPU is read around each of its runs. */
  cpu: CpuGroups;
}

/** A scenario's runs over the rounds, with the CPU they cost. */
interface Runs {
  runs: LoadRun[];
  ticks: Record<string, number>;
}

function pool(r: Runs): ScenarioResult {
  const p = poolRounds(r.runs);
  return { ...p, cpuUsPerCall: usPerCall(r.ticks, p.succeeded + p.failed) };
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

/** Waits (up to a minute) until `target` answers `payload` with OK; a status other than NOT_FOUND/UNAVAILABLE fails at once. */
async function waitServes(target: string, payload: Uint8Array): Promise<void> {
  const until = Date.now() + 60_000;
  for (;;) {
    const code = await grpcStatusOf(target, payload);
    if (code === 0) return;
    const transient = code === grpc.status.NOT_FOUND || code === grpc.status.UNAVAILABLE;
    if (!transient || Date.now() > until) throw new CliError('INTERNAL', `benchmark payload answered ${grpc.status[code]} by ${target}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function benchCommand(o: BenchOptions): Promise<number> {
  const startedAt = performance.now();
  useOwnPlaintextMesh();
  // The services read settings from INFERMESH_* and OTEL_* variables: the bench's mesh gets none of
  // the caller's, so it runs with up's defaults (every request sampled, 5 % of traces kept in span files).
  for (const k of Object.keys(process.env)) if (/^(INFERMESH_|OTEL_)/.test(k)) delete process.env[k];
  const want = (s: Scenario) => !o.scenarios || o.scenarios.includes(s);
  await ensureBinary('h2load', 'nghttp2-client', H2LOAD_HOW_TO);
  const natsBin = await ensureNatsServer();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-bench-'));
  let failure: Error | null = null;
  const sup = new Supervisor(dir, (c, how) => (failure = new CliError('UNAVAILABLE', `${c.name} ${how} during the benchmark (log: ${c.logFile})`)));
  try {
    progress(`bench: starting the mesh as infermesh up deploys it (nats-server, registry, monitor, ${REPLICAS} inference replicas, router), a router with tracing off and two echo servers…\n`);
    const natsAuth = await prepareNatsAuth(dir, REPLICAS);
    const natsPort = await freePort();
    const nats = await sup.start(natsSpec(natsBin, dir, natsPort, natsAuth));
    const natsUrl = `nats://127.0.0.1:${natsPort}`;
    const ports = { routerPort: 0, restPort: 0, registryPort: 0, monitorPort: 0, metricsPort: 0, inferencePort: 0 };
    // up's defaults: every request sampled, spans kept in files (here in the bench's temporary folder).
    const traceDir = path.join(dir, 'traces');
    const mesh = await startMeshServices(sup, { ...ports, natsUrl, natsAuth, replicas: REPLICAS, routers: 1, sampleRate: UP_DEFAULTS.sampleRate, traceDir, traceFileBytes: UP_DEFAULTS.traceFileBytes });
    const [registry, monitor, router] = [mesh.registry, mesh.monitor, mesh.routers[0]!];
    // The tracing comparison: a second router, the same but for OTEL_TRACES_SAMPLER=always_off.
    const off = serviceSpec({ name: 'router-untraced', script: 'router', tier: 3, natsUrl, natsAuth, port: 0, extra: ['--rest-port', '0', '--sample-rate', String(UP_DEFAULTS.sampleRate)] });
    const routerOff = await sup.start({ ...off, env: { ...off.env, OTEL_TRACES_SAMPLER: 'always_off' } });
    const echoServer = (name: string, extra: string[], script = 'echo-server.js') =>
      sup.start({
        name,
        command: process.execPath,
        args: [...SERVICE_NODE_FLAGS, fileURLToPath(new URL(`./${script}`, import.meta.url)), '--port', '0', ...extra],
        tier: 3,
        readyLine: isListening,
        timeoutMs: 15_000,
      });
    const echo = await echoServer('echo', []);
    const rawEcho = await echoServer('echo-http2', ['--raw']);
    const hopEcho = want('few') || want('c1') ? await echoServer('hop-echo', [], 'hop-echo.js') : null;
    const routerAddr = addr(router);
    // "inference direct" calls the first replica; the replicas' CPU is both replicas' together.
    const replicaAddr = String(mesh.replicas[0]!.info.address);
    const replicaPids = mesh.replicas.map((r) => r.pid);
    const replicasRss = () => {
      const all = replicaPids.map(rssPeakMb);
      return { peakMb: Math.max(...all.map((m) => m.peakMb)), nowMb: Math.max(...all.map((m) => m.nowMb)) };
    };

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
    const idleMem = { inference: replicasRss(), router: rssPeakMb(router.pid) };

    const row = fraud.sampleRows(1, 3)[0]!;
    const enc = (r: oip.ModelInferRequest) => oip.ModelInferRequest.encode(r).finish();
    const fraudPayload = enc(buildInferRequest('fraud', [{ name: 'features', datatype: 'FP32', shape: [1, row.length], data: row }]));
    const wideRow = Array.from({ length: WIDE_IN }, (_, i) => Math.sin(i));
    const widePayload = (name: string) => enc(buildInferRequest(name, [{ name: 'features', datatype: 'FP32', shape: [1, WIDE_IN], data: wideRow }]));
    const slowPayload = enc(buildInferRequest('slow', [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }]));
    // Every replica serves the model before anything is measured (the router may call it ready once one does).
    for (const target of [routerAddr, ...mesh.replicas.map((r) => String(r.info.address))]) await waitServes(target, fraudPayload);

    const specs: Record<TransportScenario, Omit<LoadSpec, 'target' | 'payload'>> = {
      load: { requests: o.requests, connections: o.connections, streams: o.streams },
      c1: { requests: o.latencyRequests, connections: 1, streams: 1 },
      few: { requests: o.fewRequests, connections: o.fewCallers, streams: 1 },
      // Set once the rate is known.
      open: { requests: o.openRequests, connections: o.connections, streams: o.streams },
    };

    progress('bench: in-process ONNX Runtime…\n');
    const inproc = await benchInProcess(fraud.bytes, { features: new ort.Tensor('float32', Float32Array.from(row), [1, row.length]) }, 20_000);
    const targets: Target[] = [
      { label: 'grpc-js echo', address: addr(echo), cpu: { server: [echo.pid] } },
      { label: 'http2 echo (raw path)', address: addr(rawEcho), cpu: { server: [rawEcho.pid] } },
      { label: 'inference direct', address: replicaAddr, cpu: { replicas: replicaPids } },
      { label: 'mesh (router)', address: routerAddr, cpu: { router: [router.pid], replicas: replicaPids, 'monitor+nats': [monitor.pid, nats.pid] } },
      { label: 'mesh, tracing off', address: addr(routerOff), cpu: { router: [routerOff.pid], replicas: replicaPids, 'monitor+nats': [monitor.pid, nats.pid] } },
    ];
    const runs = new Map<string, Partial<Record<TransportScenario, Runs>>>(targets.map((t) => [t.label, {}]));
    /** One h2load run of `scenario` against `t`, with the CPU its processes spent meanwhile. */
    const measure = async (t: Target, scenario: TransportScenario) => {
      const before = sampleCpu(t.cpu);
      const run = await runH2load({ target: t.address, payload: fraudPayload, ...specs[scenario] });
      const spent = ticksBetween(before, sampleCpu(t.cpu));
      const r = (runs.get(t.label)![scenario] ??= { runs: [], ticks: {} });
      r.runs.push(run);
      addTicks(r.ticks, spent);
      return run;
    };
    /** Rounds over every target, rotated by one each round and reversed every other round: each target is first, last, before and after each other target equally often (the traced and untraced routers swap places). */
    const rounds = async (scenarios: TransportScenario[], what: string) => {
      for (let round = 0; round < o.rounds; round++) {
        progress(`bench: round ${round + 1} of ${o.rounds}: ${what}, per target…\n`);
        const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
        if (round % 2 === 1) order.reverse();
        for (const t of order) for (const s of scenarios) await measure(t, s);
      }
    };
    // A process's first tens of thousands of calls run slower (JIT tiers, heap growth): every target is
    // warmed first, then measured in rounds with the order rotated, so no target is always measured
    // first or last (the traced and untraced routers share the replicas).
    const fewToo = want('few') || want('open');
    for (const t of o.warmup > 0 ? targets : []) {
      progress(`bench: ${t.label}: warm-up, ${o.warmup} calls at ${o.connections}×${o.streams} in flight${fewToo ? `, then ${Math.min(o.warmup, 2000)} at ${o.fewCallers}×1` : ''}…\n`);
      await runH2load({ target: t.address, payload: fraudPayload, requests: o.warmup, connections: o.connections, streams: o.streams });
      if (fewToo) await runH2load({ target: t.address, payload: fraudPayload, ...specs.few, requests: Math.min(o.warmup, 2000) });
    }
    const closed = (['load', 'c1', 'few'] as const).filter(want);
    const what: Record<TransportScenario, string> = {
      load: `${o.requests} calls at ${o.connections}×${o.streams} in flight`,
      c1: `${o.latencyRequests} at concurrency 1`,
      few: `${o.fewRequests} from ${o.fewCallers} callers with 1 in flight each`,
      open: `${o.openRequests} calls offered at a fixed rate`,
    };
    if (closed.length) await rounds(closed, closed.map((s) => what[s]).join(', '));
    let hopFloor: HopFloor | undefined;
    if (hopEcho) {
      progress(`bench: process hop floor: ${HOP_MESSAGES} messages to a bare socket echo in another process, 1 then 4 in flight…\n`);
      hopFloor = await measureHopFloor(Number(hopEcho.info.grpcPort), hopEcho.pid, HOP_MESSAGES, [1, 4]);
    }

    // The open loop offers half the echo's capacity: its calls/s with 128 in flight (the most it
    // serves), not its few-callers rate (bounded by 4 callers' round trips, not by the server).
    let openLoop: BenchReport['openLoop'];
    if (want('open')) {
      let basis = 'given with --rate';
      let rate = o.rate;
      if (rate === undefined) {
        let capacity = runs.get('grpc-js echo')!.load?.runs.map((r) => r.rps);
        if (!capacity) {
          progress('bench: grpc-js echo: its calls/s at full load, for the open loop rate…\n');
          capacity = [(await runH2load({ target: addr(echo), payload: fraudPayload, ...specs.load })).rps];
        }
        rate = Math.max(1, Math.round(OPEN_SHARE * median(capacity)));
        basis = `${OPEN_SHARE * 100} % of the grpc-js echo's calls/s at ${o.connections}×${o.streams} in flight in this run (${Math.round(median(capacity))})`;
      }
      specs.open = { ...specs.open, rps: rate / o.connections };
      openLoop = { offeredRate: rate, basis, connections: o.connections, ratePerConnection: rate / o.connections, maxInFlight: o.connections * o.streams, requests: o.openRequests };
      await rounds(['open'], `${o.openRequests} calls offered at ${rate} calls/s (${o.connections} connections, up to ${o.connections * o.streams} in flight)`);
    }
    const transport: BenchReport['transport'] = {};
    for (const [label, r] of runs) transport[label] = Object.fromEntries(Object.entries(r).map(([s, x]) => [s, pool(x)]));

    // Memory with the demo model only, after the transport runs (the issue's budget is for this case).
    const demoMem = { inference: replicasRss(), router: rssPeakMb(router.pid) };

    const models = [...(want('batching') ? ['wide', 'wide-nobatch'] : []), ...(want('eventloop') ? ['slow'] : [])];
    if (models.length) progress(`bench: pushing ${models.join(', ')}…\n`);
    // Compute-bound: 5.2 M weights (21 MB), so one row at a time is memory-bound and batches pay.
    const wide = want('batching') ? mlpModel({ inputs: WIDE_IN, hidden: [2048, 2048], outputs: 1, seed: 2 }) : null;
    if (wide) {
      await reg.push(wide.bytes, { name: 'wide', alias: 'production', batching: { maxBatchSize: 64, maxQueueDelayMicros: 0 } });
      await reg.push(wide.bytes, { name: 'wide-nobatch', alias: 'production', batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 } });
    }
    if (want('eventloop')) await reg.push(slowModel({ millis: 50 }).bytes, { name: 'slow', alias: 'production', batching: { maxBatchSize: 1, maxQueueDelayMicros: 0 } });
    reg.close();
    for (const m of models) await waitReady(m);
    client.close();
    for (const p of [...(wide ? [widePayload('wide')] : []), ...(want('eventloop') ? [slowPayload] : [])]) {
      const code = await grpcStatusOf(routerAddr, p);
      if (code !== 0) throw new CliError('INTERNAL', `benchmark payload answered ${grpc.status[code]} by ${routerAddr}`);
    }

    let batching: BenchReport['batching'];
    if (wide) {
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
      batching = { model: `wide MLP ${WIDE_IN}→2048→2048→1, 1 row per call, through the mesh`, on: poolRounds(on), off: poolRounds(off) };
    }

    if (want('eventloop')) {
      progress('bench: event-loop delay of the inference replicas while they run a 50 ms model back to back…\n');
      await runH2load({ target: routerAddr, payload: slowPayload, requests: 60, connections: 1, streams: 8 });
    }
    const rt = new RuntimeClient(replicaAddr, grpc.credentials.createInsecure());
    const status = await grpcCall(rt.status, rt, {});
    rt.close();
    const endMem = { inference: replicasRss(), router: rssPeakMb(router.pid) };

    // The router flushes its samples to the monitor every second (its default).
    await new Promise((r) => setTimeout(r, 1_500));
    const mon = new MonitorApi(addr(monitor));
    const stats = await mon.stats();
    mon.close();
    const grpcErrors = stats.reduce((n, s) => n + s.errors, 0);
    const grpcErrorCodes = Object.fromEntries(stats.filter((s) => s.errors > 0).map((s) => [`${s.name}:${s.version}`, s.errorsByCode]));
    if (failure) throw failure;

    const report: BenchReport = {
      generator: 'h2load (nghttp2-client), 1 thread',
      durationS: Math.round((performance.now() - startedAt) / 1000),
      mesh: {
        as: 'infermesh up, default settings',
        processes: `nats-server (JetStream, one NATS user per service), registry, monitor, ${REPLICAS} inference replicas, 1 router; loopback, plaintext`,
        settings: `up's defaults (router --sample-rate ${UP_DEFAULTS.sampleRate}, each service's own defaults otherwise); the caller's INFERMESH_* and OTEL_* variables are not passed on`,
        tracing: "default sampling (parentbased_traceidratio, 5 % of roots); spans written to files as up keeps them (<dir>/traces), no OTLP exporter",
        replicas: REPLICAS,
        routers: 1,
        alsoStarted: "router-untraced (the same router with OTEL_TRACES_SAMPLER=always_off, for the tracing ratio); 'inference direct' calls inference-1",
      },
      scenarios: SCENARIOS.filter(want),
      load: { requests: o.requests, connections: o.connections, streams: o.streams, inFlight: o.connections * o.streams, latencyRequests: o.latencyRequests, warmup: o.warmup, rounds: o.rounds },
      ...(want('few') ? { fewCallers: { connections: o.fewCallers, streams: 1, requests: o.fewRequests } } : {}),
      ...(openLoop ? { openLoop } : {}),
      cpu: {
        source: '/proc/<pid>/stat utime+stime around each h2load run, summed over the rounds, divided by the calls',
        clockTicksPerSecond: CLOCK_TICKS_PER_SECOND,
        tickUs: TICK_US,
        // One tick over one run's calls: the most one run's reading can be off, per call.
        resolutionUsPerCall: Object.fromEntries(
          (['load', 'c1', 'few', 'open'] as const).filter(want).map((s) => [s, Math.round((TICK_US * 100) / (specs[s].requests || 1)) / 100]),
        ),
        groups: { server: 'the echo server called', router: 'the router called', replicas: `the ${REPLICAS} inference replicas together`, 'monitor+nats': "the monitor and nats-server together (the router's samples of each call reach the monitor through NATS)" },
      },
      machine: { cpus: os.availableParallelism(), node: process.version },
      smallModel: 'demo fraud model (8 features, logistic regression), 1 row per call',
      inProcess: inproc,
      transport,
      ...(hopFloor ? { hopFloor } : {}),
      ...(batching ? { batching } : {}),
      ...(want('eventloop') ? { inferenceEventLoop: { model: '50 ms per call', p99Ms: (status.stats?.eventLoopP99Micros ?? 0) / 1000, maxMs: (status.stats?.eventLoopMaxMicros ?? 0) / 1000 } } : {}),
      memoryMb: { idleWithDemoModel: idleMem, afterDemoLoad: demoMem, afterAllModels: endMem },
      replicaStats: status.stats,
      grpcErrors,
      grpcErrorCodes,
      ratios: ratiosOf(transport, runs, batching),
    };
    if (o.json) printJson(report);
    else printText(renderReport(report, inproc));
    return 0;
  } catch (err) {
    // What the services said is the likeliest cause (a replica that died or could not load a model
    // shows up here only as a model that never became ready): their warnings and errors go to stderr.
    progress(serviceComplaints(sup));
    throw failure ?? err;
  } finally {
    await sup.stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The last warnings and errors (and any non-JSON lines: crashes) of each started service's log, bounded. */
function serviceComplaints(sup: Supervisor): string {
  const out: string[] = [];
  for (const c of sup.status()) {
    let text = '';
    try {
      text = readFileSync(c.logFile, 'utf8');
    } catch {
      continue;
    }
    // JSON lines (our services) at warn or worse; other lines (crashes, restarts, nats-server) unless informational.
    const lines = text.split('\n').filter((l) => l && (l.startsWith('{') ? /"level":(4|5|6)0/.test(l) : !/\[(INF|DBG|TRC)\]| start, pid /.test(l)));
    for (const l of lines.slice(-5)) out.push(`bench: ${c.name}: ${l.slice(0, 400)}\n`);
  }
  return out.join('');
}

/** The ratios the targets are judged by; those whose scenarios did not run are left out. */
function ratiosOf(t: BenchReport['transport'], runs: Map<string, Partial<Record<TransportScenario, Runs>>>, batching: BenchReport['batching']): Record<string, number> {
  const echo = t['grpc-js echo']!;
  const http2 = t['http2 echo (raw path)']!;
  const mesh = t['mesh (router)']!;
  const off = t['mesh, tracing off']!;
  const direct = t['inference direct']!;
  const r: Record<string, number> = {};
  if (mesh.load && echo.load && direct.load && http2.load && off.load) {
    r.meshThroughputOverEcho = mesh.load.rps / echo.load.rps;
    r.meshThroughputOverHttp2Echo = mesh.load.rps / http2.load.rps;
    r.directThroughputOverEcho = direct.load.rps / echo.load.rps;
    // Paired per round (the two routers run back to back, in alternating order): the median of the
    // rounds' ratios, so machine load that drifts between rounds cancels out.
    const offRuns = runs.get('mesh, tracing off')!.load!.runs;
    r.tracingP99OverOff = median(runs.get('mesh (router)')!.load!.runs.map((x, i) => x.p99Us / offRuns[i]!.p99Us));
    r.tracingP99PooledOverOff = mesh.load.p99Us / off.load.p99Us;
  }
  if (mesh.c1 && echo.c1 && direct.c1 && http2.c1 && off.c1) {
    r.meshP50C1OverEcho = mesh.c1.p50Us / echo.c1.p50Us;
    r.meshP50C1OverHttp2Echo = mesh.c1.p50Us / http2.c1.p50Us;
    r.directP50C1OverEcho = direct.c1.p50Us / echo.c1.p50Us;
    r.tracingC1P99OverOff = mesh.c1.p99Us / off.c1.p99Us;
  }
  if (mesh.few && echo.few && direct.few && http2.few) {
    r.meshFewCallsOverEcho = mesh.few.rps / echo.few.rps;
    r.directFewCallsOverEcho = direct.few.rps / echo.few.rps;
    r.meshFewCallsOverHttp2Echo = mesh.few.rps / http2.few.rps;
  }
  if (mesh.open && echo.open && direct.open) {
    r.meshOpenP99OverEcho = mesh.open.p99Us / echo.open.p99Us;
    r.directOpenP99OverEcho = direct.open.p99Us / echo.open.p99Us;
    r.meshOpenP50OverEcho = mesh.open.p50Us / echo.open.p50Us;
  }
  if (batching) {
    r.batchingRowsPerSecOnOverOff = batching.on.rps / batching.off.rps;
    r.batchingP99OnOverOff = batching.on.p99Us / batching.off.p99Us;
  }
  return r;
}
