/**
 * `infermesh up`: a whole local mesh as supervised child processes —
 * nats-server with JetStream (unless --nats), registry, monitor, N inference
 * replicas and one or more routers — then optional demo traffic, then it runs
 * until SIGINT/SIGTERM and stops everything in order. A child that exits on
 * its own is started again on the port it had (backoff 100 ms doubling to
 * 10 s); one that crash-loops is given up with a message while the rest keep
 * serving. `<dir>/processes.json` says what runs (read by `infermesh status`).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { InferenceApi } from '../../libs/client/index.js';
import { demoTable, runDemo, type DemoResult } from './demo.js';
import { addressOf as addr, MESH_ROLES, natsSpec, routerPorts, startJoinedServices, startMeshServices, UP_DEFAULTS, type MeshPorts, type MeshRole } from './mesh-services.js';
import { prepareNatsAuth, type NatsAuth } from './nats-auth.js';
import { ensureNatsServer } from './nats-server.js';
import { removeAddressesFile, writeAddressesFile } from './addresses.js';
import { CliError, describeError, printJson, printText, progress } from './output.js';
import { freePort, isPortFree } from './ports.js';
import { entriesOf, ProcessesWriter } from './status-file.js';
import { DEFAULT_RESTART, Supervisor, type ChildStatus, type Started } from './supervisor.js';

export interface UpOptions extends MeshPorts {
  dir: string;
  replicas: number;
  /** Routers on this host (default 1): the n-th (from 0) on router-port+2n and rest-port+2n, so the default pairs 8500/8501, 8502/8503 never collide. */
  routers?: number;
  nats?: string;
  natsPort?: number;
  demo?: boolean;
  demoRequests: number;
  json?: boolean;
  /** The routers' --sample-rate: share of requests kept for drift, evaluation and outcomes. */
  sampleRate?: number;
  /** Worker threads per inference replica (their --workers). */
  workers?: number;
  /** Keep sampled spans in <dir>/traces (default true; `infermesh traces show`). */
  traces?: boolean;
  /** Join the mesh whose NATS is at this URL (all of a cluster's servers, comma-separated): start no nats-server, only `only`'s roles (default inference). */
  join?: string;
  /** Roles to start (comma-separated: registry, monitor, inference, router); default all, or inference with --join. */
  only?: string;
  /** Address the services bind (default 127.0.0.1). */
  host?: string;
  /** Address replicas announce to routers on other hosts (default --host; required when --host is 0.0.0.0). */
  advertise?: string;
  /** With --join --only monitor: where the mesh's routers and registry are. */
  routerAddress?: string;
  registryAddress?: string;
}

const NATS_DEFAULT_PORT = 4222;
/** Each service's trace file is rotated past this (one older file kept): at most about 2 × 8 MiB per service. */
export const TRACE_FILE_BYTES = UP_DEFAULTS.traceFileBytes;
const ROUTER_READY_TIMEOUT_MS = 30_000;

/** Runs the mesh until a signal (resolves to exit status 0) or a start-up failure (1). */
export async function upCommand(o: UpOptions): Promise<number> {
  const dir = path.resolve(o.dir);
  const logDir = path.join(dir, 'logs');
  await mkdir(logDir, { recursive: true });
  await mkdir(path.join(dir, 'nats'), { recursive: true });
  const traceDir = o.traces === false ? '' : path.join(dir, 'traces');
  if (traceDir) await mkdir(traceDir, { recursive: true });
  const routerCount = o.routers ?? 1;
  // Paths for people: relative when under the working directory.
  const shown = (file: string) => {
    const rel = path.relative(process.cwd(), file);
    return rel && !rel.startsWith('..') ? rel : file;
  };

  const abort = new AbortController();
  let finish!: (code: number) => void;
  const finished = new Promise<number>((r) => (finish = r));
  // Children hold the event loop open too; this keeps it open with --nats and no children yet.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let stopping = false;
  const startedAtMs = Date.now();
  let stoppedAtMs: number | undefined;
  let routerAddresses: string[] = [];
  const shutdown = (code: number) => {
    if (stopping) return;
    stopping = true;
    abort.abort();
    const any = supervisor.size > 0;
    if (any) progress('stopping the mesh… ');
    removeAddressesFile(dir);
    void supervisor.stopAll().then(async () => {
      if (any) progress('stopped\n');
      stoppedAtMs = Date.now();
      await statusFile.update();
      clearInterval(keepAlive);
      finish(code);
    });
  };
  const fail = (err: unknown) => {
    if (stopping) return;
    process.stderr.write(`${describeError(err).line}\n`);
    shutdown(1);
  };
  const statusFile = new ProcessesWriter(dir, () => ({
    pid: process.pid,
    startedAtMs,
    updatedAtMs: Date.now(),
    ...(stoppedAtMs ? { stoppedAtMs } : {}),
    routers: routerAddresses,
    processes: entriesOf(supervisor.status()),
  }));
  const policy = {
    ...DEFAULT_RESTART,
    onRestarting: (c: ChildStatus, how: string, delayMs: number) =>
      progress(`infermesh: ${c.name} (pid ${c.pid}) ${how}; restarting it in ${delayMs} ms (see ${shown(c.logFile)})\n`),
    onRestarted: (c: ChildStatus) => progress(`infermesh: ${c.name} is back (pid ${c.pid}, restart ${c.restarts})\n`),
    onGiveUp: (c: ChildStatus, how: string) =>
      process.stderr.write(
        `error: UNAVAILABLE: ${c.name} exited ${DEFAULT_RESTART.maxExits} times within ${DEFAULT_RESTART.windowMs / 1000} s (last: ${how}); ` +
          `gave up restarting it, the rest of the mesh keeps running (see ${shown(c.logFile)})\n`,
      ),
    onChange: () => void statusFile.update(),
  };
  // With a restart policy the supervisor restarts or gives up; it reports no unexpected exit.
  const supervisor = new Supervisor(logDir, (child: Started, how) => fail(new CliError('UNAVAILABLE', `${child.name} (pid ${child.pid}) ${how} unexpectedly; see ${shown(child.logFile)}`)), policy);
  const onSignal = () => {
    if (stopping) {
      // A second signal: stop waiting for graceful exits.
      supervisor.killAll();
      return;
    }
    progress('\n');
    shutdown(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    if (o.join !== undefined || o.only !== undefined || (o.host !== undefined && o.host !== '127.0.0.1')) {
      await joinMesh(o, supervisor, (name, work) => announce(name, work, (c) => `:${c.info.grpcPort}`, true, abort.signal), (a) => (routerAddresses = a));
      void statusFile.update();
      if (!stopping) progress(`press Ctrl-C to stop; infermesh status${o.dir === '.infermesh' ? '' : ` --dir ${o.dir}`} lists the processes\n`);
      const code = await finished;
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      return code;
    }
    await checkPorts(o);
    // The nats-server started here admits only its users, one per service (nats-auth.ts); --nats keeps the caller's credentials.
    const natsAuth = o.nats ? null : await prepareNatsAuth(dir, o.replicas);
    const natsUrl = o.nats ?? (await startNats(supervisor, dir, o.natsPort, abort.signal, natsAuth!));
    // The services as mesh-services.ts starts them (bench measures the same).
    const { registry, monitor, replicas, routers } = await startMeshServices(supervisor, {
      ...o,
      routers: routerCount,
      natsUrl,
      natsAuth,
      ...(traceDir ? { traceDir, traceFileBytes: TRACE_FILE_BYTES } : {}),
      announce: (name, work) =>
        announce(
          name,
          work,
          (c) => `:${c.info.grpcPort}${c.info.metricsPort !== undefined ? `, metrics :${c.info.metricsPort}` : ''}${c.info.restPort !== undefined ? `, REST :${c.info.restPort}` : ''}`,
          true,
          abort.signal,
        ),
      onRouters: (a) => (routerAddresses = a),
    });
    const registryAddress = addr(registry);
    void statusFile.update();

    const addresses = { router: routerAddresses[0]!, registry: registryAddress, monitor: addr(monitor) };
    await announce(
      routerCount === 1 ? 'waiting for the router to be ready' : 'waiting for the routers to be ready',
      Promise.all(routerAddresses.map((a) => waitRouterReady(a, abort.signal))),
      () => '',
      false,
      abort.signal,
    );
    const rests = routers.map((r) => `127.0.0.1:${r.info.restPort}`);
    const summary = {
      ready: true,
      ...addresses,
      rest: rests[0],
      routers: routerAddresses,
      rests,
      metrics: `127.0.0.1:${monitor.info.metricsPort}`,
      replicas: replicas.map((r) => addr(r)),
      nats: natsUrl,
      logs: logDir,
      traces: traceDir,
      pids: supervisor.pids(),
    };
    // The CLI finds this mesh without flags (`--dir`, INFERMESH_DIR or ./.infermesh).
    writeAddressesFile(dir, {
      pid: process.pid,
      router: summary.router,
      routers: summary.routers,
      rest: summary.rest ?? '',
      registry: summary.registry,
      monitor: summary.monitor,
      metrics: summary.metrics,
      nats: natsUrl,
      logs: logDir,
      traces: traceDir,
    });
    if (!o.json) {
      const front =
        routerCount === 1
          ? `router ${summary.router} (REST ${summary.rest})`
          : `routers ${routerAddresses.map((a, i) => `${a} (REST ${rests[i]})`).join(', ')}`;
      printText(
        `infermesh ready: ${front}, registry ${summary.registry}, monitor ${summary.monitor} (metrics ${summary.metrics}), ` +
          `${replicas.length} inference ${replicas.length === 1 ? 'replica' : 'replicas'}, nats ${natsUrl}; logs in ${logDir}${traceDir ? `, sampled spans in ${traceDir}` : ''}`,
      );
      if (routerCount > 1) printText(`clients fail over between the routers: give them all, e.g. --router ${routerAddresses.join(',')}`);
    }
    let demo: DemoResult | undefined;
    if (o.demo) {
      // Demo traffic spreads over every router (the client's round-robin).
      demo = await runDemo({ ...addresses, router: routerAddresses.join(',') }, o.demoRequests, abort.signal);
      if (!o.json) printText(demoTable(demo));
    }
    if (o.json) printJson(demo ? { ...summary, demo } : summary);
    if (!stopping) progress(`press Ctrl-C to stop; infermesh status${o.dir === '.infermesh' ? '' : ` --dir ${o.dir}`} lists the processes\n`);
  } catch (err) {
    fail(err);
  }
  const code = await finished;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}

/** Fails fast, naming the flag, when a port the mesh needs is taken. */
async function checkPorts(o: UpOptions): Promise<void> {
  const n = o.routers ?? 1;
  const wanted: [number, string][] = [
    ...routerPorts(o.routerPort, n).map((p): [number, string] => [p, '--router-port']),
    ...routerPorts(o.restPort, n).map((p): [number, string] => [p, '--rest-port']),
    [o.registryPort, '--registry-port'],
    [o.monitorPort, '--monitor-port'],
    [o.metricsPort, '--metrics-port'],
    ...Array.from({ length: o.replicas }, (_, i): [number, string] => [o.inferencePort === 0 ? 0 : o.inferencePort + i, '--inference-port']),
  ];
  if (o.natsPort !== undefined && !o.nats) wanted.push([o.natsPort, '--nats-port']);
  const taken: string[] = [];
  const seen = new Map<number, string>();
  for (const [port, flag] of wanted) {
    if (port === 0) continue;
    if (port > 65535) taken.push(`port ${port} (${flag}) is out of range`);
    else if (seen.has(port)) taken.push(`port ${port} is given to both ${seen.get(port)} and ${flag}`);
    else if (!(await isPortFree(port))) taken.push(`port ${port} (${flag}) is already in use`);
    seen.set(port, flag);
  }
  if (taken.length) throw new CliError('FAILED_PRECONDITION', `${taken.join('; ')}; choose other ports with the flags named, or stop what uses them`);
}

/** Starts nats-server with JetStream in `<dir>/nats` on `port` (default 4222 when free, else any free port). */
async function startNats(supervisor: Supervisor, dir: string, port: number | undefined, signal: AbortSignal, auth: NatsAuth): Promise<string> {
  const bin = await ensureNatsServer();
  // 0 means any free port (nats-server itself would take 0 as its default, 4222).
  const p = port === 0 ? await freePort() : (port ?? ((await isPortFree(NATS_DEFAULT_PORT)) ? NATS_DEFAULT_PORT : await freePort()));
  await announce(
    'nats-server',
    supervisor.start(natsSpec(bin, dir, p, auth)),
    () => `:${p}, users in ${path.relative(process.cwd(), auth.credentialsFile).startsWith('..') ? auth.credentialsFile : path.relative(process.cwd(), auth.credentialsFile)}`,
    true,
    signal,
  );
  return `nats://127.0.0.1:${p}`;
}

/** Prints `starting <what>… ok (<detail>)` (or `failed`) once `work` settles; several may run at once. */
async function announce<T>(what: string, work: Promise<T>, detail: (r: T) => string, starting = true, signal?: AbortSignal): Promise<T> {
  const label = starting ? `starting ${what}…` : `${what}…`;
  try {
    const r = await work;
    const d = detail(r);
    progress(`${label} ok${d ? ` (${d})` : ''}\n`);
    return r;
  } catch (err) {
    // Once stopping, children that had not started yet are not news.
    if (!signal?.aborted) progress(`${label} failed\n`);
    throw err;
  }
}

async function waitRouterReady(address: string, signal: AbortSignal): Promise<void> {
  const api = new InferenceApi(address, 2_000);
  try {
    const end = Date.now() + ROUTER_READY_TIMEOUT_MS;
    for (;;) {
      if (signal.aborted) throw new CliError('CANCELLED', 'stopped');
      if (await api.ready().catch(() => false)) return;
      if (Date.now() > end) throw new CliError('DEADLINE_EXCEEDED', `the router at ${address} did not report ready within ${ROUTER_READY_TIMEOUT_MS / 1000} s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    api.close();
  }
}

/** The roles of `--only` (comma-separated), or the default: all, or inference alone with --join. */
export function rolesOf(only: string | undefined, joining: boolean): Set<MeshRole> {
  if (only === undefined || only.trim() === '') return new Set(joining ? ['inference'] : MESH_ROLES);
  const roles = new Set<MeshRole>();
  for (const r of only.split(',').map((x) => x.trim()).filter(Boolean)) {
    if (!(MESH_ROLES as readonly string[]).includes(r)) throw new CliError('INVALID_ARGUMENT', `--only: unknown role ${JSON.stringify(r.slice(0, 40))}; roles are ${MESH_ROLES.join(', ')}`);
    roles.add(r as MeshRole);
  }
  return roles;
}

/**
 * `up --join nats://… [--only roles] [--host ADDR] [--advertise ADDR]`:
 * starts only the given roles (default: inference replicas) on this machine
 * against a mesh's NATS, so another machine adds replicas (or routers) with
 * one command. Services bind --host; replicas announce --advertise (a bound
 * 0.0.0.0 is no address another host can dial, so it needs --advertise).
 */
async function joinMesh(o: UpOptions, supervisor: Supervisor, announce: (name: string, work: Promise<Started>) => Promise<Started>, onRouters: (a: string[]) => void): Promise<void> {
  const natsUrl = o.join ?? o.nats;
  if (!natsUrl) throw new CliError('INVALID_ARGUMENT', '--only and --host need --join nats://HOST:4222 (the mesh\'s NATS; every server of a cluster, comma-separated)');
  for (const u of natsUrl.split(',')) {
    if (!/^(nats|tls):\/\/[^\s/]+$/.test(u.trim())) throw new CliError('INVALID_ARGUMENT', `--join: ${JSON.stringify(u.slice(0, 80))} is not a nats://HOST:PORT URL`);
  }
  if (o.demo) throw new CliError('INVALID_ARGUMENT', '--demo starts a whole mesh; it cannot be combined with --join or --only');
  const roles = rolesOf(o.only, o.join !== undefined);
  const host = o.host ?? '127.0.0.1';
  const wildcard = host === '0.0.0.0' || host === '::';
  if (wildcard && !o.advertise && roles.has('inference')) {
    throw new CliError('INVALID_ARGUMENT', `--host ${host}: replicas need --advertise ADDR, the address routers on other hosts reach this one at`);
  }
  const advertise = o.advertise ?? host;
  const started = await startJoinedServices(supervisor, {
    ...o,
    natsUrl,
    roles,
    host,
    advertise,
    replicas: o.replicas,
    routers: o.routers ?? 1,
    ...(o.routerAddress ? { routerAddresses: o.routerAddress.split(',') } : {}),
    ...(o.registryAddress ? { registryAddress: o.registryAddress } : {}),
    announce,
  });
  const at = (c: Started) => `${advertise}:${c.info.grpcPort}`;
  onRouters(started.routers.map(at));
  const summary = {
    ready: true,
    joined: natsUrl,
    roles: [...roles],
    ...(started.registry ? { registry: at(started.registry) } : {}),
    ...(started.monitor ? { monitor: at(started.monitor) } : {}),
    routers: started.routers.map(at),
    rests: started.routers.map((r) => `${advertise}:${r.info.restPort}`),
    replicas: started.replicas.map(at),
    pids: supervisor.pids(),
  };
  if (o.json) printJson(summary);
  else {
    const parts = [
      summary.registry && `registry ${summary.registry}`,
      summary.monitor && `monitor ${summary.monitor}`,
      summary.routers.length && `routers ${summary.routers.join(', ')}`,
      summary.replicas.length && `${summary.replicas.length} inference ${summary.replicas.length === 1 ? 'replica' : 'replicas'} (${summary.replicas.join(', ')})`,
    ].filter(Boolean);
    printText(`infermesh joined ${natsUrl}: ${parts.join(', ')}`);
  }
}
