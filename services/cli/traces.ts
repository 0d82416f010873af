/** `infermesh traces slow NAME`: a model's slowest recent requests, with trace ids and where their time went, from the monitor. */
import { MonitorApi } from '../../libs/client/index.js';
import { codeName } from '../../libs/errors/index.js';
import type { SlowRequest } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { printJson, printText, remote } from './output.js';
import { formatMsFine, renderTable } from './table.js';

export interface SlowCommandOptions extends GlobalOptions {
  limit?: number;
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
