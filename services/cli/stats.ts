/** `infermesh stats [NAME]`: serving statistics per model version, and how shadow versions compare, from the monitor. */
import { MonitorApi } from '../../libs/client/index.js';
import type { ShadowStats, VersionStats } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { UsageError, printJson, printText, remote } from './output.js';
import { formatMs, formatNumber, renderTable } from './table.js';

export interface StatsCommandOptions extends GlobalOptions {
  /** Refresh every N seconds (true = 2) until Ctrl-C. */
  watch?: boolean | string;
}

export async function statsCommand(name: string | undefined, o: StatsCommandOptions): Promise<void> {
  const api = new MonitorApi(o.monitor);
  try {
    const every = o.watch === undefined || o.watch === false ? 0 : o.watch === true ? 2 : Number(o.watch);
    if (o.watch !== undefined && o.watch !== false && !(every >= 0.1)) throw new UsageError('--watch: expected a number of seconds ≥ 0.1');
    const ac = new AbortController();
    if (every) process.once('SIGINT', () => ac.abort());
    for (;;) {
      const { versions, shadows } = await remote('monitor', o.monitor, () => api.report(name ?? ''));
      if (o.json) printJson({ versions, shadows, at: new Date().toISOString() });
      else {
        // Each refresh redraws the screen (ANSI clear + home) so the table stays in place.
        if (every && process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H');
        if (every) printText(`infermesh stats${name ? ` ${name}` : ''} — every ${every} s — ${new Date().toISOString()}\n`);
        printText(versions.length ? statsTable(versions) : 'no traffic recorded yet');
        if (shadows.length) printText(`\n${shadowTable(shadows)}`);
      }
      if (!every) return;
      await sleep(every * 1000, undefined, { signal: ac.signal }).catch(() => undefined);
      if (ac.signal.aborted) return;
    }
  } finally {
    api.close();
  }
}

/** The stats table (model, version, requests, errors, p50/p95/p99 ms, rps), sorted by model then version. */
export function statsTable(versions: readonly VersionStats[]): string {
  const rows = [...versions]
    .sort((a, b) => a.name.localeCompare(b.name) || a.version - b.version)
    .map((v) => [
      v.name,
      String(v.version),
      String(v.requests),
      String(v.errors),
      v.requests ? ((v.errors / v.requests) * 100).toFixed(2) : '0.00',
      formatMs(v.p50Ms),
      formatMs(v.p95Ms),
      formatMs(v.p99Ms),
      formatNumber(v.rps, 4),
    ]);
  return renderTable(['MODEL', 'VERSION', 'REQUESTS', 'ERRORS', 'ERROR_%', 'P50_MS', 'P95_MS', 'P99_MS', 'RPS'], rows, ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right']);
}

/**
 * The shadow table (model, shadow and production versions, mirrored requests,
 * agreement %, errors, p50/p99 ms of the shadow), sorted by model then shadow version.
 * `agreementRate` is a fraction in [0, 1]; the table shows it as a percentage.
 */
export function shadowTable(shadows: readonly ShadowStats[]): string {
  const rows = [...shadows]
    .sort((a, b) => a.name.localeCompare(b.name) || a.version - b.version || a.productionVersion - b.productionVersion)
    .map((s) => [
      s.name,
      String(s.version),
      String(s.productionVersion),
      String(s.requests),
      (s.agreementRate * 100).toFixed(1),
      String(s.errors),
      formatMs(s.p50Ms),
      formatMs(s.p99Ms),
    ]);
  return renderTable(['MODEL', 'SHADOW', 'PRODUCTION', 'REQUESTS', 'AGREEMENT %', 'ERRORS', 'P50_MS', 'P99_MS'], rows, [
    'left',
    'right',
    'right',
    'right',
    'right',
    'right',
    'right',
    'right',
  ]);
}
