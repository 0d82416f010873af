/** `infermesh stats [NAME]`: serving statistics per model version, from the monitor. */
import { MonitorApi } from '../../libs/client/index.js';
import type { VersionStats } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { printJson, printText, remote } from './output.js';
import { formatMs, formatNumber, renderTable } from './table.js';

export async function statsCommand(name: string | undefined, o: GlobalOptions): Promise<void> {
  const api = new MonitorApi(o.monitor);
  try {
    const versions = await remote('monitor', o.monitor, () => api.stats(name ?? ''));
    if (o.json) {
      printJson({ versions });
      return;
    }
    printText(versions.length ? statsTable(versions) : 'no traffic recorded yet');
  } finally {
    api.close();
  }
}

/** The stats table (model, version, requests, errors, p50/p95/p99 ms, rps), sorted by model then version. */
export function statsTable(versions: readonly VersionStats[]): string {
  const rows = [...versions]
    .sort((a, b) => a.name.localeCompare(b.name) || a.version - b.version)
    .map((v) => [v.name, String(v.version), String(v.requests), String(v.errors), formatMs(v.p50Ms), formatMs(v.p95Ms), formatMs(v.p99Ms), formatNumber(v.rps, 4)]);
  return renderTable(['MODEL', 'VERSION', 'REQUESTS', 'ERRORS', 'P50_MS', 'P95_MS', 'P99_MS', 'RPS'], rows, ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right']);
}
