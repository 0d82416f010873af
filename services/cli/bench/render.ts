/** `infermesh bench`'s report: its JSON shape and the tables people read. */
import { renderTable } from '../table.js';
import type { LoadResult } from './h2load.js';
import type { HopFloor } from './hop-floor.js';
import type { InProcessResult } from './in-process.js';

/** The h2load scenarios run against every target. */
export type TransportScenario = 'load' | 'c1' | 'few' | 'open';

/** A scenario's pooled rounds, with the CPU its processes spent per call (µs) by group: server, router, replicas. */
export interface ScenarioResult extends LoadResult {
  cpuUsPerCall: Record<string, number>;
}

type Rss = { peakMb: number; nowMb: number };

export interface BenchReport {
  generator: string;
  /** Wall time of the whole run, start-up included. */
  durationS: number;
  /** How the measured mesh was started (as `infermesh up` by default). */
  mesh: Record<string, string | number>;
  scenarios: string[];
  load: { requests: number; connections: number; streams: number; inFlight: number; latencyRequests: number; warmup: number; rounds: number };
  fewCallers?: { connections: number; streams: number; requests: number };
  openLoop?: { offeredRate: number; basis: string; connections: number; ratePerConnection: number; maxInFlight: number; requests: number };
  cpu: { source: string; clockTicksPerSecond: number; tickUs: number; resolutionUsPerCall: Record<string, number>; groups: Record<string, string> };
  machine: { cpus: number; node: string };
  smallModel: string;
  inProcess: InProcessResult;
  /** Per target label, per scenario that ran. */
  transport: Record<string, Partial<Record<TransportScenario, ScenarioResult>>>;
  /** Two bare processes passing a small message each way: the per-hop cost under every target (hop-floor.ts). */
  hopFloor?: HopFloor;
  batching?: { model: string; on: LoadResult; off: LoadResult };
  inferenceEventLoop?: { model: string; p99Ms: number; maxMs: number };
  memoryMb: { idleWithDemoModel: { inference: Rss; router: Rss }; afterDemoLoad: { inference: Rss; router: Rss }; afterAllModels: { inference: Rss; router: Rss } };
  replicaStats: unknown;
  grpcErrors: number;
  grpcErrorCodes: Record<string, unknown>;
  ratios: Record<string, number>;
}

const us = (n: number | undefined) => (n === undefined ? '-' : String(Math.round(n)));
const f2 = (n: number | undefined) => (n === undefined ? '-' : n.toFixed(2));
const cpu = (n: number | undefined) => (n === undefined ? '-' : n.toFixed(n < 100 ? 1 : 0));
/** An open-loop rate marked with * when the target served less than 95 % of what was offered. */
const served = (r: ScenarioResult | undefined, offered: number | undefined) => (r ? `${us(r.rps)}${offered && r.rps < 0.95 * offered ? '*' : ''}` : '-');

/** The report as tables and lines for people. */
export function renderReport(r: BenchReport, inproc: InProcessResult): string {
  const t = r.transport;
  const labels = Object.keys(t);
  const lines: string[] = [
    `mesh: as infermesh up deploys it by default: ${r.mesh.processes}; ${r.mesh.settings}; tracing: ${r.mesh.tracing}`,
    `load: h2load; ${r.load.rounds} rounds after a warm-up, target order rotated each round (calls/s: median of the rounds; latency in µs over all rounds)`,
  ];
  if (t['grpc-js echo']?.load || t['grpc-js echo']?.c1) {
    const rows: string[][] = [['onnxruntime in-process', us(inproc.rps), us(inproc.p50Us), us(inproc.p99Us), us(inproc.p999Us), '-', '-']];
    for (const l of labels) rows.push([l, us(t[l]!.load?.rps), us(t[l]!.load?.p50Us), us(t[l]!.load?.p99Us), us(t[l]!.load?.p999Us), us(t[l]!.c1?.p50Us), us(t[l]!.c1?.p99Us)]);
    lines.push(
      '',
      `${r.load.inFlight} calls in flight (${r.load.connections} connections × ${r.load.streams}); c1 = concurrency 1`,
      renderTable(['SCENARIO', 'CALLS/S', 'P50', 'P99', 'P99.9', 'C1_P50', 'C1_P99'], rows, ['left', 'right', 'right', 'right', 'right', 'right', 'right']),
    );
  }
  const open = r.openLoop;
  if (r.fewCallers || open) {
    const rows = labels.map((l) => [l, us(t[l]!.few?.rps), us(t[l]!.few?.p50Us), us(t[l]!.few?.p99Us), served(t[l]!.open, open?.offeredRate), us(t[l]!.open?.p50Us), us(t[l]!.open?.p99Us), us(t[l]!.open?.p999Us)]);
    lines.push(
      '',
      [
        r.fewCallers ? `few callers: ${r.fewCallers.connections} connections × 1 call in flight` : '',
        open ? `open loop: ${open.offeredRate} calls/s offered (${open.basis}) over ${open.connections} connections, at most ${open.maxInFlight} in flight; * = served < 95 % of it` : '',
      ]
        .filter(Boolean)
        .join('; '),
      renderTable(['SCENARIO', 'FEW CALLS/S', 'FEW P50', 'FEW P99', 'OPEN CALLS/S', 'OPEN P50', 'OPEN P99', 'OPEN P99.9'], rows, ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right']),
    );
  }
  const cpuRows: string[][] = [];
  for (const l of labels) {
    const groups = [...new Set(Object.values(t[l]!).flatMap((x) => Object.keys(x!.cpuUsPerCall)))];
    for (const g of groups) cpuRows.push([l, g, cpu(t[l]!.load?.cpuUsPerCall[g]), cpu(t[l]!.c1?.cpuUsPerCall[g]), cpu(t[l]!.few?.cpuUsPerCall[g]), cpu(t[l]!.open?.cpuUsPerCall[g])]);
  }
  if (cpuRows.length) {
    const res = Object.entries(r.cpu.resolutionUsPerCall).map(([s, v]) => `${s} ±${v < 10 ? v.toFixed(1) : Math.round(v)}`).join(', ');
    lines.push(
      '',
      `CPU µs per call (utime+stime from /proc, 1 tick = ${r.cpu.tickUs} µs; resolution per round: ${res} µs; replicas = both together; monitor+nats = the monitor and nats-server, which take the samples of the calls)`,
      renderTable(['SCENARIO', 'PROCESS', `${r.load.inFlight} IN FLIGHT`, 'C1', 'FEW', 'OPEN'], cpuRows, ['left', 'left', 'right', 'right', 'right', 'right']),
    );
  }
  if (r.hopFloor) {
    lines.push(
      '',
      `process hop floor: two Node processes, a ${r.hopFloor.messageBytes}-byte message each way over a ${r.hopFloor.transport}; the echo's call crosses one such hop, a call through the mesh two (caller → router → replica)`,
      renderTable(
        ['IN FLIGHT', 'CALLER CPU µs/MSG', 'ANSWERER CPU µs/MSG', 'RTT P50', 'RTT P99'],
        r.hopFloor.runs.map((h) => [String(h.inFlight), cpu(h.callerUs), cpu(h.answererUs), us(h.p50Us), us(h.p99Us)]),
        ['right', 'right', 'right', 'right', 'right'],
      ),
    );
  }
  if (r.batching) {
    lines.push(
      '',
      renderTable(
        ['WIDE MLP (MESH)', 'ROWS/S', 'P50', 'P99'],
        [
          ['batching on', us(r.batching.on.rps), us(r.batching.on.p50Us), us(r.batching.on.p99Us)],
          ['batching off', us(r.batching.off.rps), us(r.batching.off.p50Us), us(r.batching.off.p99Us)],
        ],
        ['left', 'right', 'right', 'right'],
      ),
    );
  }
  const q = r.ratios;
  lines.push('');
  if (q.meshThroughputOverEcho !== undefined)
    lines.push(`mesh / echo throughput:        ${f2(q.meshThroughputOverEcho)}  (inference direct / echo: ${f2(q.directThroughputOverEcho)}; mesh / http2 echo: ${f2(q.meshThroughputOverHttp2Echo)})`);
  if (q.meshP50C1OverEcho !== undefined)
    lines.push(`mesh / echo p50 at c1:         ${f2(q.meshP50C1OverEcho)}  (inference direct / echo: ${f2(q.directP50C1OverEcho)}; mesh / http2 echo: ${f2(q.meshP50C1OverHttp2Echo)})`);
  if (q.meshFewCallsOverEcho !== undefined)
    lines.push(`mesh / echo calls/s, few callers: ${f2(q.meshFewCallsOverEcho)}  (inference direct / echo: ${f2(q.directFewCallsOverEcho)}; mesh / http2 echo: ${f2(q.meshFewCallsOverHttp2Echo)})`);
  if (q.meshOpenP99OverEcho !== undefined)
    lines.push(`mesh / echo p99, open loop:    ${f2(q.meshOpenP99OverEcho)}  (inference direct / echo: ${f2(q.directOpenP99OverEcho)}; mesh / echo p50: ${f2(q.meshOpenP50OverEcho)})`);
  if (q.tracingP99OverOff !== undefined || q.tracingC1P99OverOff !== undefined)
    lines.push(`tracing (default sampling) / off, p99: ${f2(q.tracingP99OverOff)} under load (median of the rounds' ratios; pooled ${f2(q.tracingP99PooledOverOff)}), ${f2(q.tracingC1P99OverOff)} at c1`);
  if (q.batchingRowsPerSecOnOverOff !== undefined) lines.push(`batching on / off rows/s:      ${f2(q.batchingRowsPerSecOnOverOff)}  (p99 on / off: ${f2(q.batchingP99OnOverOff)})`);
  if (r.inferenceEventLoop) lines.push(`inference event-loop delay under a 50 ms model: p99 ${f2(r.inferenceEventLoop.p99Ms)} ms, max ${f2(r.inferenceEventLoop.maxMs)} ms`);
  const m = r.memoryMb;
  lines.push(
    `RSS, demo model only: inference ${m.afterDemoLoad.inference.peakMb} MB peak (idle ${m.idleWithDemoModel.inference.nowMb}), router ${m.afterDemoLoad.router.peakMb} MB peak (idle ${m.idleWithDemoModel.router.nowMb}); inference = the larger replica`,
    `RSS peak after the other models too: inference ${m.afterAllModels.inference.peakMb} MB, router ${m.afterAllModels.router.peakMb} MB`,
    `gRPC errors seen by the router: ${r.grpcErrors}`,
    `${r.machine.cpus} CPUs, Node ${r.machine.node}; the run took ${r.durationS} s`,
  );
  return lines.join('\n');
}
