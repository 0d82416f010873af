/**
 * `infermesh traces slow NAME`: a model's slowest recent requests, with trace ids and where their time went, from the monitor;
 * `infermesh traces show TRACE_ID`: one trace as a waterfall, from the span files `up` keeps.
 */
import { MonitorApi } from '../../libs/client/index.js';
import { codeName } from '../../libs/errors/index.js';
import type { SlowRequest } from '../../libs/proto/index.js';
import path from 'node:path';
import { defaultStateDir, type GlobalOptions } from './addresses.js';
import { CliError, printJson, printText, remote } from './output.js';
import { formatMsFine, renderTable } from './table.js';

export interface SlowCommandOptions extends GlobalOptions {
  limit?: number;
}

export interface ShowCommandOptions extends GlobalOptions {
  /** A folder of span files (INFERMESH_TRACE_FILE's) instead of <dir>/traces. */
  traces?: string;
  /** Show the trace of this model's slowest recent request (from the monitor). */
  slowest?: string;
}

/** `infermesh traces show TRACE_ID`: the trace's spans from the local span files, as a waterfall. */
export async function showCommand(id: string | undefined, o: ShowCommandOptions): Promise<void> {
  const { checkTraceId, loadTrace, renderWaterfall, traceFiles, traceRows } = await import('./trace-view.js');
  if ((id === undefined) === (o.slowest === undefined)) throw new CliError('INVALID_ARGUMENT', 'give a trace id or --slowest NAME', 2);
  let traceId: string;
  if (o.slowest !== undefined) {
    const api = new MonitorApi(o.monitor);
    try {
      const [slowest] = await remote('monitor', o.monitor, () => api.slowRequests(o.slowest!, 1));
      if (!slowest?.traceId) throw new CliError('NOT_FOUND', `no slow request of ${o.slowest} with a trace in the monitor's window`);
      traceId = slowest.traceId;
    } finally {
      api.close();
    }
  } else traceId = checkTraceId(id!);
  const dir = path.resolve(o.traces ?? path.join(o.dir ?? defaultStateDir, 'traces'));
  const files = await traceFiles(dir);
  if (files.length === 0) {
    throw new CliError('NOT_FOUND', `no span files in ${dir}; infermesh up keeps them there (unless --no-traces); elsewhere point --traces at the folder of the services' INFERMESH_TRACE_FILE`);
  }
  const spans = await loadTrace(files, traceId);
  if (spans.length === 0) {
    throw new CliError(
      'NOT_FOUND',
      `trace ${traceId} is not in ${dir}: spans are kept for the sampled requests (OTEL_TRACES_SAMPLER_ARG, 5 % by default) and the slowest of each window (infermesh traces slow NAME), a moment after the request, and the oldest are dropped past 2 files of 8 MiB per service`,
    );
  }
  const rows = traceRows(spans);
  if (o.json) printJson({ traceId, spans: rows });
  else printText(renderWaterfall(traceId, rows));
}

export async function slowCommand(name: string, o: SlowCommandOptions): Promise<void> {
  const api = new MonitorApi(o.monitor);
  try {
    const requests = await remote('monitor', o.monitor, () => api.slowRequests(name, o.limit ?? 20));
    if (o.json) {
      printJson({ requests });
      return;
    }
    printText(requests.length ? slowTable(requests) : `no slow requests of ${name} in the monitor's window`);
  } finally {
    api.close();
  }
}

/** The slow-request table, in the monitor's order (slowest first); times in ms to the µs, TIME in UTC. */
export function slowTable(requests: readonly SlowRequest[]): string {
  const rows = requests.map((r) => [
    r.atMs ? new Date(r.atMs).toISOString() : '-',
    String(r.version),
    r.traceId || '-',
    formatMsFine(r.latencyMs),
    formatMsFine(r.routerMs),
    formatMsFine(r.networkMs),
    formatMsFine(r.queueMs),
    formatMsFine(r.computeMs),
    codeName(r.code),
  ]);
  return renderTable(
    ['TIME', 'VERSION', 'TRACE_ID', 'TOTAL_MS', 'ROUTER_MS', 'NETWORK_MS', 'QUEUE_MS', 'COMPUTE_MS', 'CODE'],
    rows,
    ['left', 'right', 'left', 'right', 'right', 'right', 'right', 'right', 'left'],
  );
}
