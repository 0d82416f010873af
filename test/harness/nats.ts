/**
 * A real nats-server with JetStream for tests: a free loopback port, a fresh
 * store directory, and a stop() that kills the whole process group.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface NatsHandle {
  /** nats://127.0.0.1:<port> */
  url: string;
  port: number;
  /** JetStream store directory (removed by stop()). */
  dir: string;
  /** Kills the server and removes its directory. Idempotent. */
  stop(): Promise<void>;
  /** Kills the server and starts it again on the same port and store (an outage). */
  restart(): Promise<void>;
  /** Kills the server, keeping its store (the start of a longer outage). */
  down(): Promise<void>;
  /** Starts it again on the same port and store. */
  up(): Promise<void>;
}

/** Options of {@link startNats}. */
export interface NatsOptions {
  /**
   * Extra nats-server configuration (its config-file syntax), e.g. a `tls { … }`
   * or `authorization { … }` block. Written to a file in the store directory.
   */
  config?: string;
}

const BIN = 'nats-server';
const READY_TIMEOUT_MS = 10_000;
// A server leads its own process group, so it would outlive a test worker
// that is killed before stop() runs; setpriv (util-linux) makes the kernel
// kill it when the worker dies, then execs nats-server under the same pid.
const SETPRIV = '/usr/bin/setpriv';
const withParentDeath = existsSync(SETPRIV);

/** Starts nats-server with JetStream; resolves once its port accepts connections. */
export async function startNats(o: NatsOptions = {}): Promise<NatsHandle> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-nats-'));
  const extra: string[] = [];
  if (o.config) {
    const file = path.join(dir, 'extra.conf');
    await writeFile(file, o.config);
    extra.push('-c', file);
  }
  const launch = (p: number, d: string) => launchServer(p, d, extra);
  let proc: ChildProcess | null = await launch(port, dir);
  let stopped: Promise<void> | null = null;

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    dir,
    stop: () =>
      (stopped ??= (async () => {
        const p = proc;
        proc = null;
        if (p) await kill(p);
        await rm(dir, { recursive: true, force: true });
      })()),
    async restart() {
      if (stopped) throw new Error('nats-server was stopped');
      if (proc) await kill(proc);
      proc = await launch(port, dir);
    },
    async down() {
      if (proc) await kill(proc);
      proc = null;
    },
    async up() {
      if (stopped) throw new Error('nats-server was stopped');
      if (!proc) proc = await launch(port, dir);
    },
  };
}

async function launchServer(port: number, dir: string, extra: readonly string[]): Promise<ChildProcess> {
  // detached: the server leads its own process group, so stop() can kill the group.
  const args = [...extra, '-js', '-sd', dir, '-a', '127.0.0.1', '-p', String(port)];
  const proc = spawn(withParentDeath ? SETPRIV : BIN, withParentDeath ? ['--pdeathsig', 'KILL', '--', BIN, ...args] : args, {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString()).slice(-4000);
  });
  let exited: string | null = null;
  proc.once('error', (err) => (exited = String(err)));
  proc.once('exit', (code, sig) => (exited = `exited with ${code ?? sig}`));

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await accepts(port))) {
    if (exited !== null || Date.now() > deadline) {
      await kill(proc);
      throw new Error(`nats-server on port ${port} did not start (${exited ?? 'timeout'}): ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return proc;
}

/** SIGTERM to the process group, SIGKILL after 5 s; resolves once the server has exited. */
function kill(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null || proc.pid === undefined) return Promise.resolve();
  const pid = proc.pid;
  return new Promise((resolve) => {
    const timer = setTimeout(() => signal(pid, 'SIGKILL'), 5_000);
    proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    signal(pid, 'SIGTERM');
  });
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // Already gone.
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
