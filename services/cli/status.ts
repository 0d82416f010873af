/**
 * `infermesh status`: the processes of the mesh that `infermesh up --dir DIR`
 * runs, from the `<dir>/processes.json` it keeps, each checked against the
 * kernel (a pid that no longer runs is shown as such, not as `running`), and
 * for each replica whether the routers send it work (status-routers.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CliError, printJson, printText } from './output.js';
import { readProcessesFile, type ProcessEntry } from './status-file.js';
import { appliedClientTls } from './security.js';
import { fetchRouterView, routerViewOf, routerViewText, type RouterView } from './status-routers.js';
import { renderTable } from './table.js';

export interface StatusOptions {
  dir: string;
  json?: boolean;
}

/** Whether `pid` runs (a zombie counts as gone). */
function running(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it runs, as someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  const stat = readFileSyncSafe(`/proc/${pid}/stat`);
  // The state field follows the ")" that ends the command name.
  return stat === null || stat[stat.lastIndexOf(')') + 2] !== 'Z';
}

function readFileSyncSafe(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** `1h02m`, `3m05s`, `12s`. */
function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  return `${h}h${String(m % 60).padStart(2, '0')}m`;
}

/** Replica processes of `up` (inference-1, …). */
const isReplica = (p: ProcessEntry) => /^inference(-\d+)?$/.test(p.name);

/**
 * Prints the table (or JSON); resolves to the exit status: 0 when every
 * process runs and no router reports a replica not ready, 1 otherwise.
 * Throws UNAVAILABLE when no `up` runs with this directory.
 */
export async function statusCommand(o: StatusOptions): Promise<number> {
  const dir = path.resolve(o.dir);
  let file;
  try {
    file = await readProcessesFile(dir);
  } catch (err) {
    throw new CliError('FAILED_PRECONDITION', `cannot read ${path.join(o.dir, 'processes.json')}: ${(err as Error).message}`);
  }
  if (!file) throw new CliError('UNAVAILABLE', `infermesh up is not running with --dir ${o.dir} (no ${path.join(o.dir, 'processes.json')}); start it with infermesh up${o.dir === '.infermesh' ? '' : ` --dir ${o.dir}`}`);
  if (file.stoppedAtMs || !running(file.pid)) {
    const when = file.stoppedAtMs ? `it stopped at ${new Date(file.stoppedAtMs).toISOString()}` : `its process ${file.pid} is gone`;
    throw new CliError('UNAVAILABLE', `infermesh up is not running with --dir ${o.dir} (${when})`);
  }
  // The routers' view of the replicas, asked of every running router at once.
  const tls = appliedClientTls();
  const answers = await Promise.all(
    file.processes.filter((p) => p.restPort && running(p.pid)).map((p) => fetchRouterView(p.name, p.restPort!, tls)),
  );
  const now = Date.now();
  const rows = file.processes.map((p: ProcessEntry) => {
    // The file says what up last saw; the kernel says whether that pid still runs.
    const alive = running(p.pid);
    const state = (p.state === 'running' || p.state === 'starting') && !alive ? 'exited' : p.state;
    return {
      name: p.name,
      pid: p.pid,
      state,
      uptimeMs: state === 'running' ? now - p.startedAtMs : 0,
      restarts: p.restarts,
      port: p.port,
      lastExit: p.lastExit,
      lastExitAtMs: p.lastExitAtMs,
      logFile: p.logFile,
      // Replicas that run: whether the routers send them work (null for other processes).
      routerView: isReplica(p) && state === 'running' ? routerViewOf(p, answers) : (null as RouterView | null),
    };
  });
  const healthy = rows.every((r) => r.state === 'running' && r.routerView?.ready !== false);
  if (o.json) {
    printJson({ up: { pid: file.pid, uptimeMs: now - file.startedAtMs }, routers: file.routers, healthy, processes: rows });
  } else {
    printText(`infermesh up (pid ${file.pid}) running for ${duration(now - file.startedAtMs)}${file.routers.length ? `; ${file.routers.length === 1 ? 'router' : 'routers'} ${file.routers.join(', ')}` : ''}`);
    printText(
      renderTable(
        ['NAME', 'PID', 'STATE', 'UPTIME', 'RESTARTS', 'PORT', 'LAST EXIT', 'ROUTER VIEW'],
        rows.map((r) => [
          r.name,
          String(r.pid),
          r.state,
          r.state === 'running' ? duration(r.uptimeMs) : '-',
          String(r.restarts),
          r.port ? String(r.port) : '-',
          r.lastExit ? `${r.lastExit} (${duration(now - r.lastExitAtMs)} ago)` : '-',
          r.routerView ? routerViewText(r.routerView) : '-',
        ]),
        ['left', 'right', 'left', 'right', 'right', 'right', 'left', 'left'],
      ),
    );
  }
  return healthy ? 0 : 1;
}
