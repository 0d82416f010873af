/**
 * `infermesh up` as a process supervisor, started the way users start it
 * (node dist/services/cli/main.js up, its own process group, every port 0)
 * with two routers and two replicas. Under steady load from the typed client,
 * kill -9 in turn: one replica, the registry, the monitor, nats-server, one
 * router; each is restarted on its port and no call fails. Then a replica that
 * keeps dying is given up with a message while the other one serves, and
 * Ctrl-C (SIGINT to up's group) stops everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceApi, MonitorApi, RegistryApi } from '../../libs/client/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { CLI, cli, json } from './run-cli.js';

interface Entry {
  name: string;
  pid: number;
  state: string;
  restarts: number;
  lastExit: string;
  port: number;
}

interface Measured {
  killed: string;
  calls: number;
  failed: string[];
  /** From the kill until status shows it running again (its new process is listening), and until it is ready. */
  runningMs: number;
  readyMs: number;
}

const NAME = 'supmodel';
const model = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 12 });
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [0.5, -1, 0.25, 2] }];
const CALLERS = 8;
const DEADLINE_MS = 2_000;

/** The temp folder, and the mesh's state dir (`up --dir`) in it. */
let root: string;
let dir: string;
let up: ChildProcess;
let upExit: Promise<number | null>;
let upStderr = '';
let mesh: { router: string; routers: string[]; registry: string; monitor: string; replicas: string[] };
const measured: Measured[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What up's processes.json says now, by name. */
function procs(): Map<string, Entry> {
  const file = JSON.parse(readFileSync(path.join(dir, 'processes.json'), 'utf8')) as { processes: Entry[] };
  return new Map(file.processes.map((p) => [p.name, p]));
}
const proc = (name: string) => procs().get(name)!;

/** Polls `ok` every 25 ms until it holds; throws after `ms`. */
async function until(what: string, ok: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await Promise.resolve().then(ok).catch(() => false)) return;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms\nup's stderr:\n${upStderr}`);
    await sleep(25);
  }
}

/**
 * One call on a new client (a new connection: an old channel's reconnect
 * backoff would be measured instead of the process), then closed.
 */
async function fresh<C extends { close(): void }>(Client: new (address: string, timeoutMs: number) => C, address: string, call: (c: C) => Promise<boolean>): Promise<boolean> {
  const c = new Client(address, 500);
  try {
    return await call(c);
  } finally {
    c.close();
  }
}

/** `CALLERS` loops of the typed client with 2 s deadlines; every call's outcome is kept. */
function load(api: InferenceApi) {
  const outcomes: { ok: boolean; why: string; at: number }[] = [];
  let stop = false;
  const loop = async () => {
    while (!stop) {
      try {
        await api.infer(NAME, input, { timeoutMs: DEADLINE_MS });
        outcomes.push({ ok: true, why: '', at: performance.now() });
      } catch (err) {
        const e = err as grpc.ServiceError;
        outcomes.push({ ok: false, why: `${grpc.status[e.code] ?? e.code}: ${e.details ?? String(err)}`, at: performance.now() });
      }
    }
  };
  const loops = Array.from({ length: CALLERS }, loop);
  return {
    outcomes,
    async stop() {
      stop = true;
      await Promise.all(loops);
      return outcomes;
    },
  };
}

/**
 * kill -9 of `name` under load through `api`; resolves once it is back
 * (running, one more restart, new pid) and `ready` holds, then lets the load
 * run on a little. Returns the failed calls and the time from kill to ready.
 */
async function killUnderLoad(name: string, api: InferenceApi, ready: () => Promise<boolean>): Promise<Measured> {
  const before = proc(name);
  expect(before.state).toBe('running');
  const l = load(api);
  await until('load flowing', () => l.outcomes.length >= 50);
  const t0 = performance.now();
  process.kill(before.pid, 'SIGKILL');
  let runningMs = 0;
  await until(`${name} back`, async () => {
    const p = proc(name);
    if (!(p.state === 'running' && p.restarts === before.restarts + 1 && p.pid !== before.pid)) return false;
    runningMs ||= Math.round(performance.now() - t0);
    return ready();
  });
  const readyMs = Math.round(performance.now() - t0);
  const atReady = l.outcomes.length;
  await until('load after the restart', () => l.outcomes.length >= atReady + 200);
  const outcomes = await l.stop();
  const m = { killed: name, calls: outcomes.length, failed: outcomes.filter((o) => !o.ok).map((o) => o.why), runningMs, readyMs };
  measured.push(m);
  const p = proc(name);
  expect(p.port).toBe(before.port);
  expect(p.lastExit).toBe('was killed by SIGKILL');
  // The new process was told the port the first one had bound (they were all started with port 0).
  const args = cmdline(p.pid);
  expect(args[args.indexOf(name === 'nats' ? '-p' : '--port') + 1]).toBe(String(before.port));
  return m;
}

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'infermesh-up-sup-'));
  dir = path.join(root, 'mesh');
  await writeFile(path.join(root, 'model.onnx'), model.bytes);
  const zero = ['--nats-port', '--router-port', '--rest-port', '--registry-port', '--monitor-port', '--metrics-port', '--inference-port'].flatMap((f) => [f, '0']);
  // Its own process group, as a terminal would start it: signals go to the group.
  up = spawn(process.execPath, [CLI, 'up', '--dir', dir, '--replicas', '2', '--routers', '2', ...zero, '--json'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  upExit = new Promise((resolve) => up.once('exit', (code) => resolve(code)));
  up.stderr!.on('data', (b: Buffer) => (upStderr += b.toString()));
  mesh = await new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`up not ready within 60 s\n${upStderr}`)), 60_000);
    up.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (!out.includes('\n')) return;
      clearTimeout(t);
      resolve(JSON.parse(out.slice(0, out.indexOf('\n'))));
    });
    void upExit.then((code) => reject(new Error(`up exited (${code})\n${upStderr}`)));
  });
  const pushed = json(await cli(['models', 'push', path.join(root, 'model.onnx'), '--name', NAME, '--alias', 'production', '--registry', mesh.registry, '--json']));
  expect(pushed.version).toBe(1);
  // Ready on both replicas (each asked on its own port) and at both routers.
  for (const a of [...mesh.replicas, ...mesh.routers]) {
    const api = new InferenceApi(a, 1_000);
    await until(`${NAME} ready at ${a}`, () => api.modelReady(NAME, '1'));
    api.close();
  }
}, 90_000);

afterAll(async () => {
  if (up && up.exitCode === null && up.signalCode === null) {
    try {
      process.kill(-up.pid!, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  if (measured.length) console.log(`up-supervisor:\n${measured.map((m) => `  kill -9 ${m.killed}: ${m.failed.length} failed of ${m.calls} calls, running after ${m.runningMs} ms, ready after ${m.readyMs} ms`).join('\n')}`);
  if (root) await rm(root, { recursive: true, force: true });
});

describe('infermesh up restarts what dies, and no call fails', () => {
  let single: InferenceApi;
  let both: InferenceApi;
  beforeAll(() => {
    // Processes other than the routers: one router address (its client still retries UNAVAILABLE).
    single = new InferenceApi(mesh.routers[1]!, DEADLINE_MS);
    both = new InferenceApi(mesh.routers, DEADLINE_MS);
  });
  afterAll(() => {
    single?.close();
    both?.close();
  });

  it('status lists every process running', async () => {
    const r = await cli(['status', '--dir', dir, '--json']);
    const s = json(r);
    expect(s.healthy).toBe(true);
    expect(s.routers).toEqual(mesh.routers);
    expect(s.processes.map((p: Entry) => p.name).sort()).toEqual(['inference-1', 'inference-2', 'monitor', 'nats', 'registry', 'router-1', 'router-2']);
    for (const p of s.processes as Entry[]) expect(p).toMatchObject({ state: 'running', restarts: 0, lastExit: '' });
    // Started with port 0 everywhere, the monitor still knows where its golden probes and rollbacks go.
    const args = cmdline(proc('monitor').pid);
    expect(args[args.indexOf('--router-address') + 1]).toBe(mesh.routers.join(','));
    expect(args[args.indexOf('--registry-address') + 1]).toBe(mesh.registry);
  });

  it('kill -9 of an inference replica', async () => {
    // Ready: the new process has loaded the model and says so on its own port.
    const m = await killUnderLoad('inference-1', single, () => fresh(InferenceApi, mesh.replicas[0]!, (c) => c.modelReady(NAME, '1')));
    expect(m.failed).toEqual([]);
    const log = readFileSync(path.join(dir, 'logs', 'inference-1.log'), 'utf8');
    expect(log).toMatch(/^--- infermesh: inference-1 restart 1 \(the last process was killed by SIGKILL\), pid \d+, at .* ---$/m);
    expect(log.match(/"msg":"listening"/g)).toHaveLength(2);
  }, 40_000);

  it('kill -9 of the registry', async () => {
    const m = await killUnderLoad('registry', single, () => fresh(RegistryApi, mesh.registry, async (c) => (await c.list()).some((x) => x.name === NAME)));
    expect(m.failed).toEqual([]);
  }, 40_000);

  it('kill -9 of the monitor', async () => {
    const m = await killUnderLoad('monitor', single, () => fresh(MonitorApi, mesh.monitor, async (c) => (await c.stats(NAME), true)));
    // The restarted monitor keeps the routers' and registry's addresses.
    const args = cmdline(proc('monitor').pid);
    expect(args[args.indexOf('--router-address') + 1]).toBe(mesh.routers.join(','));
    expect(args[args.indexOf('--registry-address') + 1]).toBe(mesh.registry);
    expect(m.failed).toEqual([]);
  }, 40_000);

  it('kill -9 of nats-server', async () => {
    // Ready: the registry reads its models from JetStream again (a fresh connection each try).
    const m = await killUnderLoad('nats', single, () => fresh(RegistryApi, mesh.registry, async (c) => (await c.list()).some((x) => x.name === NAME)));
    expect(m.failed).toEqual([]);
  }, 40_000);

  it('kill -9 of one of two routers: the client fails over to the other', async () => {
    const m = await killUnderLoad('router-1', both, () => fresh(InferenceApi, mesh.routers[0]!, (c) => c.modelReady(NAME, '1')));
    expect(m.failed).toEqual([]);
  }, 40_000);

  it('a replica that keeps dying is given up with a message; the other one serves', async () => {
    const l = load(single);
    await until('load flowing', () => l.outcomes.length >= 50);
    // kill -9 each new process of inference-2 as soon as it appears: 5 exits within a minute.
    let last = -1;
    let kills = 0;
    await until(
      'inference-2 given up',
      () => {
        const p = proc('inference-2');
        if (p.state === 'gave up') return true;
        if (p.pid !== last && p.pid > 0 && (p.state === 'running' || p.state === 'starting')) {
          last = p.pid;
          try {
            process.kill(p.pid, 'SIGKILL');
            kills++;
          } catch {
            // It died on its own already.
          }
        }
        return false;
      },
      20_000,
    );
    expect(kills).toBe(5);
    // Serving on: the calls after the give-up all land on inference-1 (itself restarted above).
    const n = l.outcomes.length;
    await until('load after the give-up', () => l.outcomes.length >= n + 200);
    const outcomes = await l.stop();
    measured.push({ killed: 'inference-2 (5 times: crash loop)', calls: outcomes.length, failed: outcomes.filter((o) => !o.ok).map((o) => o.why), runningMs: NaN, readyMs: NaN });
    expect(outcomes.filter((o) => !o.ok).map((o) => o.why)).toEqual([]);
    expect(upStderr).toMatch(/^error: UNAVAILABLE: inference-2 exited 5 times within 60 s \(last: was killed by SIGKILL[^)]*\); gave up restarting it, the rest of the mesh keeps running \(see .*inference-2\.log\)$/m);

    // status: the table for people, JSON for scripts; unhealthy now (exit status 1).
    const table = await cli(['status', '--dir', dir]);
    expect(table.code).toBe(1);
    expect(table.stdout, table.stderr).toMatch(/^NAME\s+PID\s+STATE\s+UPTIME\s+RESTARTS\s+PORT\s+LAST EXIT\s+ROUTER VIEW$/m);
    expect(table.stdout).toMatch(/^inference-1\s+\d+\s+running\s+\S+\s+1\s+\d+\s+was killed by SIGKILL \(\d+s ago\)\s+ready$/m);
    expect(table.stdout).toMatch(/^inference-2\s+\d+\s+gave up\s+-\s+4\s+\d+\s+was killed by SIGKILL/m);
    const s = JSON.parse((await cli(['status', '--dir', dir, '--json'])).stdout) as { healthy: boolean; processes: Entry[] };
    expect(s.healthy).toBe(false);
    const byName = new Map(s.processes.map((p) => [p.name, p]));
    for (const name of ['inference-1', 'registry', 'monitor', 'nats', 'router-1']) expect(byName.get(name)).toMatchObject({ state: 'running', restarts: 1 });
    expect(byName.get('router-2')).toMatchObject({ state: 'running', restarts: 0 });
  }, 40_000);

  it('Ctrl-C (SIGINT to the group) stops everything; status then says up is not running', async () => {
    const pids = [...procs().values()].map((p) => p.pid);
    process.kill(-up.pid!, 'SIGINT');
    expect(await upExit).toBe(0);
    for (const pid of pids) expect(alive(pid), `pid ${pid} still running`).toBe(false);
    const r = await cli(['status', '--dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: UNAVAILABLE: infermesh up is not running with --dir .* \(it stopped at /m);
  }, 20_000);
});

/** A process's arguments, from /proc. */
function cmdline(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}
