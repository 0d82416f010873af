/**
 * Child processes of `infermesh up`: started with their output in
 * `<logs>/<name>.log`, ready once they say so, stopped in tiers (highest
 * first) with SIGTERM and then SIGKILL, and watched for unexpected exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { childEnv } from './addresses.js';
import { CliError } from './output.js';

// A child leads its own process group (so a terminal's Ctrl-C reaches only
// us, and we stop children in order). setpriv (util-linux) asks the kernel to
// send it SIGTERM should we die without stopping it, then execs the command
// under the same pid.
const SETPRIV = '/usr/bin/setpriv';
const withParentDeath = existsSync(SETPRIV);

export interface StartSpec {
  name: string;
  command: string;
  args: string[];
  /** Stopped after every child of a higher tier. */
  tier: number;
  /** Ready when a stdout line parses as JSON and this returns true (its fields become `info`). */
  readyLine?: (line: Record<string, unknown>) => boolean;
  /** Ready when this resolves true (polled every 50 ms). */
  readyProbe?: () => Promise<boolean>;
  timeoutMs: number;
}

export interface Started {
  name: string;
  pid: number;
  logFile: string;
  /** The fields of the line that made it ready, if `readyLine` did. */
  info: Record<string, unknown>;
}

interface Managed extends Started {
  tier: number;
  proc: ChildProcess;
  log: WriteStream;
  ready: boolean;
  exit: Promise<void>;
  exited: string | null;
}

/** How long a child has after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;

export class Supervisor {
  private readonly children: Managed[] = [];
  private stopping: Promise<void> | null = null;

  /** `onUnexpectedExit` hears of a ready child that exits before stopAll(). */
  constructor(private readonly logDir: string, private readonly onUnexpectedExit: (child: Started, how: string) => void) {}

  /**
   * Starts one child and resolves once it is ready. Rejects (and kills it)
   * when it exits, fails to spawn, or is not ready within `timeoutMs`.
   */
  start(spec: StartSpec): Promise<Started> {
    if (this.stopping) return Promise.reject(new Error('shutting down'));
    const logFile = path.join(this.logDir, `${spec.name}.log`);
    const shownLog = path.relative(process.cwd(), logFile).startsWith('..') ? logFile : path.relative(process.cwd(), logFile);
    const log = createWriteStream(logFile, { flags: 'w' });
    const proc = spawn(withParentDeath ? SETPRIV : spec.command, withParentDeath ? ['--pdeathsig', 'TERM', '--', spec.command, ...spec.args] : spec.args, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: childEnv(),
    });
    let exitedResolve!: () => void;
    const child: Managed = {
      name: spec.name,
      pid: proc.pid ?? -1,
      logFile,
      info: {},
      tier: spec.tier,
      proc,
      log,
      ready: false,
      exited: null,
      exit: new Promise<void>((r) => (exitedResolve = r)),
    };
    this.children.push(child);

    return new Promise<Started>((resolve, reject) => {
      const settle = (err: Error | null) => {
        clearTimeout(timer);
        clearInterval(probe);
        if (err) {
          reject(err);
          void this.stopOne(child);
        } else if (!child.ready) {
          child.ready = true;
          resolve(child);
        }
      };
      const timer = setTimeout(
        () => settle(new CliError('DEADLINE_EXCEEDED', `${spec.name} was not ready within ${spec.timeoutMs / 1000} s (see ${shownLog})${lastLines(tail)}`)),
        spec.timeoutMs,
      );
      // The end of the child's output, quoted when it fails to start.
      let tail = '';
      const keepTail = (b: Buffer) => {
        if (!child.ready) tail = (tail + b.toString()).slice(-4000);
      };
      let probe: NodeJS.Timeout | undefined;
      if (spec.readyProbe) {
        let busy = false;
        probe = setInterval(() => {
          if (busy || child.ready || child.exited) return;
          busy = true;
          spec.readyProbe!().then(
            (ok) => {
              busy = false;
              if (ok && !child.exited) settle(null);
            },
            () => (busy = false),
          );
        }, 50);
      }
      let buf = '';
      proc.stdout!.on('data', (b: Buffer) => {
        log.write(b);
        keepTail(b);
        if (child.ready || !spec.readyLine) return;
        buf += b.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const json = parseJson(line);
          if (json && spec.readyLine(json)) {
            child.info = json;
            buf = '';
            settle(null);
            return;
          }
        }
      });
      proc.stderr!.on('data', (b: Buffer) => {
        log.write(b);
        keepTail(b);
      });
      // 'close' comes after the last output, so the log file gets all of it.
      let closed: () => void = () => undefined;
      proc.once('close', () => {
        log.end();
        closed();
      });
      proc.once('error', (err) => {
        child.exited = String(err);
        exitedResolve();
        settle(new CliError('UNAVAILABLE', `${spec.name} could not start: ${err.message}`));
      });
      proc.once('exit', (code, signal) => {
        const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
        child.exited = how;
        exitedResolve();
        if (!child.ready) {
          // Let the last output arrive so the error can quote it.
          const report = () => settle(new CliError('UNAVAILABLE', `${spec.name} ${how} before it was ready (see ${shownLog})${lastLines(tail)}`));
          const t = setTimeout(report, 300);
          closed = () => {
            clearTimeout(t);
            report();
          };
        } else if (!this.stopping) this.onUnexpectedExit(child, how);
      });
    });
  }

  /** How many children were started (running or not). */
  get size(): number {
    return this.children.length;
  }

  /** Pids of children that have not exited. */
  pids(): number[] {
    return this.children.filter((c) => !c.exited && c.pid > 0).map((c) => c.pid);
  }

  /** Stops every child, highest tier first (a tier in parallel); resolves once all have exited. Idempotent. */
  stopAll(): Promise<void> {
    return (this.stopping ??= (async () => {
      const tiers = [...new Set(this.children.map((c) => c.tier))].sort((a, b) => b - a);
      for (const tier of tiers) await Promise.all(this.children.filter((c) => c.tier === tier).map((c) => this.stopOne(c)));
    })());
  }

  /** SIGKILL to every child still running (a second Ctrl-C). */
  killAll(): void {
    for (const c of this.children) if (!c.exited) signalGroup(c.pid, 'SIGKILL');
  }

  private async stopOne(c: Managed): Promise<void> {
    if (c.exited || c.pid <= 0) return c.exit;
    const timer = setTimeout(() => signalGroup(c.pid, 'SIGKILL'), STOP_GRACE_MS);
    signalGroup(c.pid, 'SIGTERM');
    await c.exit;
    clearTimeout(timer);
  }
}

/** Signals the child's process group (the child and anything it forked). */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** The last few output lines, indented, for an error message (pino's JSON reduced to its msg and err). */
function lastLines(text: string, n = 6): string {
  const lines = text
    .split('\n')
    // A child's stack frames say nothing to the person reading this.
    .filter((l) => l.trim() !== '' && !/^\s+at |^\s*\^\s*$|^Node\.js v\d/.test(l))
    .slice(-n)
    .map((l) => {
      const j = parseJson(l);
      const shown = j ? [j.msg, j.err, j.error].filter((x) => x !== undefined).map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(': ') || l : l;
      return `  | ${shown.slice(0, 300)}`;
    });
  return lines.length ? `; its last output:\n${lines.join('\n')}` : '';
}

function parseJson(line: string): Record<string, unknown> | null {
  if (!line.startsWith('{')) return null;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
}
