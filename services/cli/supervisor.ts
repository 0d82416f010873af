/**
 * Child processes of `infermesh up` (and of bench and tune): started with
 * their output appended to `<logs>/<name>.log`, ready once they say so,
 * stopped in tiers (highest first) with SIGTERM and then SIGKILL, and watched
 * for unexpected exits. With a restart policy a child that exits unexpectedly
 * is started again after a backoff, until it crash-loops; without one, the
 * exit is reported to the owner.
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
  /**
   * The arguments of every restart, from what the first start reported
   * (`info`): e.g. the port it bound instead of 0. Default: `args`.
   */
  restartArgs?: (first: Started) => string[];
  /** What is known before it reports anything (e.g. the port it was given); replaced by the ready line's fields. */
  info?: Record<string, unknown>;
  /** Variables added to (or replacing) this process's environment for the child, e.g. its credentials (kept off the command line). */
  env?: Record<string, string>;
}

export interface Started {
  name: string;
  pid: number;
  logFile: string;
  /** The fields of the line that made it ready, if `readyLine` did. */
  info: Record<string, unknown>;
}

/** What the supervisor does about children that exit unexpectedly once ready. */
export interface RestartPolicy {
  /** The first restart's delay; it doubles with each exit up to `maxBackoffMs`. */
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** A child that stayed up this long starts over at `initialBackoffMs`. */
  healthyResetMs: number;
  /** This many exits within `windowMs` is a crash loop: the child is given up. */
  maxExits: number;
  windowMs: number;
  /** A child exited and will be started again in `delayMs`. */
  onRestarting?: (child: ChildStatus, how: string, delayMs: number) => void;
  /** A restarted child is ready again. */
  onRestarted?: (child: ChildStatus) => void;
  /** A child crash-looped and stays down. */
  onGiveUp?: (child: ChildStatus, how: string) => void;
  /** Any state change (for a status file). */
  onChange?: () => void;
}

/** `infermesh up`'s policy: 100 ms doubling to 10 s, reset after a minute up; 5 exits in 60 s is a crash loop. */
export const DEFAULT_RESTART: RestartPolicy = { initialBackoffMs: 100, maxBackoffMs: 10_000, healthyResetMs: 60_000, maxExits: 5, windowMs: 60_000 };

export type ChildState = 'starting' | 'running' | 'restarting' | 'gave up' | 'stopping' | 'stopped';

/** One child as `infermesh status` shows it. */
export interface ChildStatus {
  name: string;
  pid: number;
  state: ChildState;
  /** Epoch ms when the current process was started. */
  startedAtMs: number;
  restarts: number;
  /** How the last process ended ('' while none has), and when (epoch ms, 0 = never). */
  lastExit: string;
  lastExitAtMs: number;
  logFile: string;
  info: Record<string, unknown>;
}

interface Managed extends Started {
  spec: StartSpec;
  tier: number;
  proc: ChildProcess | null;
  log: WriteStream;
  ready: boolean;
  /** Resolves when the current process has exited. */
  exit: Promise<void>;
  exited: string | null;
  state: ChildState;
  startedAtMs: number;
  readyAtMs: number;
  restarts: number;
  lastExit: string;
  lastExitAtMs: number;
  /** Epoch ms of recent exits (crash-loop window). */
  exits: number[];
  backoffMs: number;
  restartTimer: NodeJS.Timeout | null;
  /** Set when the current start attempt failed on its own (timeout, spawn error): the exit reason to record. */
  failure: string | null;
}

/** How long a child has after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;

export class Supervisor {
  private readonly children: Managed[] = [];
  private stopping: Promise<void> | null = null;

  /**
   * `onUnexpectedExit` hears of a ready child that exits before stopAll() and
   * is not restarted (no `restart` policy). With a policy, such a child is
   * started again with `restartArgs`, and given up after a crash loop.
   */
  constructor(
    private readonly logDir: string,
    private readonly onUnexpectedExit: (child: Started, how: string) => void,
    private readonly restart: RestartPolicy | null = null,
  ) {}

  /**
   * Starts one child and resolves once it is ready. Rejects (and kills it)
   * when it exits, fails to spawn, or is not ready within `timeoutMs`.
   */
  start(spec: StartSpec): Promise<Started> {
    if (this.stopping) return Promise.reject(new Error('shutting down'));
    const logFile = path.join(this.logDir, `${spec.name}.log`);
    // Appended: a restart (or the next `up`) keeps what the last process wrote.
    const log = createWriteStream(logFile, { flags: 'a' });
    const child: Managed = {
      name: spec.name,
      pid: -1,
      logFile,
      info: spec.info ?? {},
      spec,
      tier: spec.tier,
      proc: null,
      log,
      ready: false,
      exit: Promise.resolve(),
      exited: null,
      state: 'starting',
      startedAtMs: 0,
      readyAtMs: 0,
      restarts: 0,
      lastExit: '',
      lastExitAtMs: 0,
      exits: [],
      backoffMs: this.restart?.initialBackoffMs ?? 0,
      restartTimer: null,
      failure: null,
    };
    this.children.push(child);
    return this.launch(child, spec.args).then(
      () => child,
      (err: unknown) => {
        void this.stopOne(child);
        throw err;
      },
    );
  }

  /** How many children were started (running or not). */
  get size(): number {
    return this.children.length;
  }

  /** Pids of children that have not exited. */
  pids(): number[] {
    return this.children.filter((c) => c.proc && !c.exited && c.pid > 0).map((c) => c.pid);
  }

  /** Every child's state, in start order. */
  status(): ChildStatus[] {
    return this.children.map((c) => ({
      name: c.name,
      pid: c.pid,
      state: c.state,
      startedAtMs: c.startedAtMs,
      restarts: c.restarts,
      lastExit: c.lastExit,
      lastExitAtMs: c.lastExitAtMs,
      logFile: c.logFile,
      info: c.info,
    }));
  }

  /** Stops every child, highest tier first (a tier in parallel); resolves once all have exited. Idempotent. */
  stopAll(): Promise<void> {
    return (this.stopping ??= (async () => {
      // Nothing starts again from here on.
      for (const c of this.children) if (c.restartTimer) clearTimeout(c.restartTimer);
      const tiers = [...new Set(this.children.map((c) => c.tier))].sort((a, b) => b - a);
      for (const tier of tiers) await Promise.all(this.children.filter((c) => c.tier === tier).map((c) => this.stopOne(c)));
      for (const c of this.children) c.log.end();
    })());
  }

  /** SIGKILL to every child still running (a second Ctrl-C). */
  killAll(): void {
    for (const c of this.children) if (c.proc && !c.exited) signalGroup(c.pid, 'SIGKILL');
  }

  private changed(): void {
    this.restart?.onChange?.();
  }

  /**
   * Spawns the child's process and resolves once it is ready; rejects when it
   * exits, fails to spawn or is not ready in time (the process is then killed).
   * Exits after it was ready go to {@link exitedAfterReady}.
   */
  private launch(child: Managed, args: string[]): Promise<void> {
    const { spec, log } = child;
    const shownLog = path.relative(process.cwd(), child.logFile).startsWith('..') ? child.logFile : path.relative(process.cwd(), child.logFile);
    const proc = spawn(withParentDeath ? SETPRIV : spec.command, withParentDeath ? ['--pdeathsig', 'TERM', '--', spec.command, ...args] : args, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: childEnv(spec.env),
    });
    let exitedResolve!: () => void;
    child.proc = proc;
    child.pid = proc.pid ?? -1;
    child.ready = false;
    child.exited = null;
    child.failure = null;
    child.state = 'starting';
    child.startedAtMs = Date.now();
    child.exit = new Promise<void>((r) => (exitedResolve = r));
    const why = child.restarts ? `restart ${child.restarts} (the last process ${child.lastExit})` : 'start';
    if (!log.writableEnded) log.write(`--- infermesh: ${child.name} ${why}, pid ${child.pid}, at ${new Date(child.startedAtMs).toISOString()} ---\n`);
    this.changed();

    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | null) => {
        clearTimeout(timer);
        clearInterval(probe);
        if (settled) return;
        settled = true;
        if (err) {
          child.failure ??= err.message;
          reject(err);
          // Not ready: make sure it is gone (its exit then counts, see below).
          if (!child.exited) signalGroup(child.pid, 'SIGKILL');
        } else {
          child.ready = true;
          child.readyAtMs = Date.now();
          if (!this.stopping) child.state = 'running';
          this.changed();
          resolve();
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
      // Output that arrives after stopAll() ended the log is dropped.
      const write = (b: Buffer) => {
        if (!log.writableEnded) log.write(b);
      };
      proc.stdout!.on('data', (b: Buffer) => {
        write(b);
        keepTail(b);
        if (settled || !spec.readyLine) return;
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
        write(b);
        keepTail(b);
      });
      // 'close' comes after the last output, so the error can quote all of it.
      let closed: () => void = () => undefined;
      proc.once('close', () => closed());
      proc.once('error', (err) => {
        // Spawning failed: no 'exit' follows.
        if (child.exited) return;
        child.exited = String(err);
        exitedResolve();
        settle(new CliError('UNAVAILABLE', `${spec.name} could not start: ${err.message}`));
        this.exitedAfterStart(child, `could not start: ${err.message}`);
      });
      proc.once('exit', (code, signal) => {
        // After a spawn error ('error' above) there is nothing more to record.
        if (child.exited) return;
        const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
        child.exited = how;
        exitedResolve();
        if (!settled) {
          // Let the last output arrive so the error can quote it.
          const report = () => settle(new CliError('UNAVAILABLE', `${spec.name} ${how} before it was ready (see ${shownLog})${lastLines(tail)}`));
          const t = setTimeout(report, 300);
          closed = () => {
            clearTimeout(t);
            report();
          };
          const wasFailure = child.failure;
          this.exitedAfterStart(child, wasFailure ?? `${how} before it was ready`);
        } else this.exitedAfterStart(child, child.failure ?? how);
      });
    });
  }

  /** A process of `child` ended (ready or not): stop, report, restart or give up. */
  private exitedAfterStart(child: Managed, how: string): void {
    const now = Date.now();
    child.lastExit = how;
    child.lastExitAtMs = now;
    if (this.stopping) {
      child.state = 'stopped';
      return this.changed();
    }
    const everReady = child.ready || child.restarts > 0;
    // The first start failing is the caller's error (start() rejects); not a restart case.
    if (!everReady) {
      child.state = 'stopped';
      return this.changed();
    }
    const p = this.restart;
    if (!p) {
      child.state = 'stopped';
      this.changed();
      if (child.ready) this.onUnexpectedExit(child, how);
      return;
    }
    // A child that stayed up a while starts over at the shortest delay.
    if (child.ready && now - child.readyAtMs >= p.healthyResetMs) child.backoffMs = p.initialBackoffMs;
    child.exits = child.exits.filter((t) => now - t < p.windowMs);
    child.exits.push(now);
    if (child.exits.length >= p.maxExits) {
      child.state = 'gave up';
      this.changed();
      p.onGiveUp?.(child, how);
      return;
    }
    const delay = child.backoffMs;
    child.backoffMs = Math.min(p.maxBackoffMs, child.backoffMs * 2);
    child.state = 'restarting';
    this.changed();
    p.onRestarting?.(child, how, delay);
    child.restartTimer = setTimeout(() => {
      child.restartTimer = null;
      if (this.stopping) return;
      child.restarts++;
      const args = child.spec.restartArgs ? child.spec.restartArgs(child) : child.spec.args;
      this.launch(child, args).then(
        () => p.onRestarted?.(child),
        // Counted by exitedAfterStart when its process ends.
        () => undefined,
      );
    }, delay);
  }

  private async stopOne(c: Managed): Promise<void> {
    if (c.restartTimer) {
      clearTimeout(c.restartTimer);
      c.restartTimer = null;
    }
    if (!c.proc || c.exited || c.pid <= 0) {
      if (c.state !== 'gave up') c.state = 'stopped';
      return c.exit;
    }
    c.state = 'stopping';
    this.changed();
    const timer = setTimeout(() => signalGroup(c.pid, 'SIGKILL'), STOP_GRACE_MS);
    signalGroup(c.pid, 'SIGTERM');
    await c.exit;
    clearTimeout(timer);
  }
}

/** Signals the child's process group (the child and anything it forked). */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  if (pid <= 0) return;
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
    .filter((l) => l.trim() !== '' && !/^\s+at |^\s*\^\s*$|^Node\.js v\d/.test(l) && !l.startsWith('--- infermesh: '))
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
