/** `infermesh alerts [NAME] [--watch]`: alerts firing now and recently resolved, or a live feed of changes. */
import { MonitorApi } from '../../libs/client/index.js';
import { Alert_State, type Alert } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { printJson, printText, remote } from './output.js';
import { renderTable } from './table.js';

export interface AlertsCommandOptions extends GlobalOptions {
  watch?: boolean;
}

export async function alertsCommand(name: string | undefined, o: AlertsCommandOptions): Promise<void> {
  const api = new MonitorApi(o.monitor);
  try {
    if (!o.watch) {
      const alerts = await remote('monitor', o.monitor, () => api.alerts(name ?? ''));
      if (o.json) printJson({ alerts: alerts.map(alertJson) });
      else printText(alerts.length ? alertsTable(alerts) : 'no alerts');
      return;
    }
    // --watch: one line (or one JSON object) per change until Ctrl-C.
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    await remote('monitor', o.monitor, () =>
      api.watchAlerts(
        name ?? '',
        (a) => (o.json ? printJson(alertJson(a)) : printText(alertLine(a))),
        ac.signal,
      ),
    );
  } finally {
    api.close();
  }
}

function stateName(a: Alert): string {
  return a.state === Alert_State.FIRING ? 'firing' : a.state === Alert_State.RESOLVED ? 'resolved' : 'unknown';
}

/** The JSON form of an alert (snake_case, state as a word). */
export function alertJson(a: Alert): Record<string, unknown> {
  return {
    id: a.id,
    model: a.name,
    version: a.version,
    rule: a.rule,
    subject: a.subject,
    state: stateName(a),
    value: a.value,
    threshold: a.threshold,
    message: a.message,
    at: new Date(a.atMs).toISOString(),
    since: new Date(a.sinceMs).toISOString(),
  };
}

function alertLine(a: Alert): string {
  return `${new Date(a.atMs).toISOString()}  ${stateName(a).toUpperCase().padEnd(8)} ${a.id}  ${a.message}`;
}

/** STATE, MODEL, VERSION, RULE, SUBJECT, SINCE, MESSAGE; firing first. */
export function alertsTable(alerts: readonly Alert[]): string {
  const rows = alerts.map((a) => [stateName(a), a.name, a.version ? String(a.version) : '-', a.rule, a.subject || '-', new Date(a.sinceMs).toISOString(), a.message]);
  return renderTable(['STATE', 'MODEL', 'VERSION', 'RULE', 'SUBJECT', 'SINCE', 'MESSAGE'], rows, ['left', 'left', 'right', 'left', 'left', 'left', 'left']);
}
