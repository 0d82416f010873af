/**
 * `infermesh up`: a whole local mesh as child processes — nats-server with
 * JetStream (unless --nats), registry, monitor, N inference replicas and the
 * router — then optional demo traffic, then it runs until SIGINT/SIGTERM and
 * stops everything in order. A child that dies stops the rest (exit 1).
 */
import { SERVICE_NODE_FLAGS } from '../../libs/config/index.js';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InferenceApi } from '../../libs/client/index.js';
import { runDemo, type DemoResult } from './demo.js';
import { ensureNatsServer } from './nats-server.js';
import { CliError, describeError, printJson, printText, progress } from './output.js';
import { accepts, freePort, isPortFree } from './ports.js';
import { statsTable } from './stats.js';
import { Supervisor, type Started } from './supervisor.js';

export interface UpOptions {
  dir: string;
  replicas: number;
  nats?: string;
  natsPort?: number;
  routerPort: number;
  restPort: number;
  registryPort: number;
  monitorPort: number;
  metricsPort: number;
  inferencePort: number;
  demo?: boolean;
  demoRequests: number;
  json?: boolean;
}

const NATS_DEFAULT_PORT = 4222;
const SERVICE_START_TIMEOUT_MS = 60_000;
const ROUTER_READY_TIMEOUT_MS = 30_000;
const isListening = (j: Record<string, unknown>) => j.msg === 'listening';

/** Runs the mesh until a signal (resolves to exit status 0) or a failure (1). */
export async function upCommand(o: UpOptions): Promise<number> {
  const dir = path.resolve(o.dir);
  const logDir = path.join(dir, 'logs');
  await mkdir(logDir, { recursive: true });
  await mkdir(path.join(dir, 'nats'), { recursive: true });

  const abort = new AbortController();
  let finish!: (code: number) => void;
  const finished = new Promise<number>((r) => (finish = r));
  // Children hold the event loop open too; this keeps it open with --nats and no children yet.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let stopping = false;
  const shutdown = (code: number) => {
    if (stopping) return;
    stopping = true;
    abort.abort();
    const any = supervisor.size > 0;
    if (any) progress('stopping the mesh… ');
    void supervisor.stopAll().then(() => {
      if (any) progress('stopped\n');
      clearInterval(keepAlive);
      finish(code);
    });
  };
  const fail = (err: unknown) => {
    if (stopping) return;
    process.stderr.write(`${describeError(err).line}\n`);
    shutdown(1);
  };
  const supervisor = new Supervisor(logDir, (child: Started, how) =>
    fail(new CliError('UNAVAILABLE', `${child.name} (pid ${child.pid}) ${how} unexpectedly; see ${path.relative(process.cwd(), child.logFile) || child.logFile}`)),
  );
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
    await checkPorts(o);
    const natsUrl = o.nats ?? (await startNats(supervisor, dir, o.natsPort, abort.signal));
    const entry = (service: string) => fileURLToPath(new URL(`../${service}/main.js`, import.meta.url));
    const service = (name: string, tier: number, script: string, port: number, extra: string[] = []) =>
      announce(
        name,
        supervisor.start({
          name,
          command: process.execPath,
          args: [...SERVICE_NODE_FLAGS, entry(script), '--nats', natsUrl, '--host', '127.0.0.1', '--port', String(port), '--log-level', 'info', ...extra],
          tier,
          readyLine: isListening,
          timeoutMs: SERVICE_START_TIMEOUT_MS,
        }),
        (c) => `:${c.info.grpcPort}${c.info.metricsPort !== undefined ? `, metrics :${c.info.metricsPort}` : ''}${c.info.restPort !== undefined ? `, REST :${c.info.restPort}` : ''}`,
        true,
        abort.signal,
      );
    const [registry, monitor, ...replicas] = await Promise.all([
      service('registry', 1, 'registry', o.registryPort),
      // Probes go through the router and canary rollbacks through the registry (fixed ports; 0 leaves the defaults).
      service('monitor', 1, 'monitor', o.monitorPort, [
        '--metrics-port',
        String(o.metricsPort),
        ...(o.routerPort ? ['--router-address', `127.0.0.1:${o.routerPort}`] : []),
        ...(o.registryPort ? ['--registry-address', `127.0.0.1:${o.registryPort}`] : []),
      ]),
      ...Array.from({ length: o.replicas }, (_, i) => service(`inference-${i + 1}`, 2, 'inference', o.inferencePort === 0 ? 0 : o.inferencePort + i)),
    ]);
    const router = await service('router', 3, 'router', o.routerPort, ['--rest-port', String(o.restPort)]);

    const addr = (c: Started) => `127.0.0.1:${c.info.grpcPort}`;
    const addresses = { router: addr(router), registry: addr(registry!), monitor: addr(monitor!) };
    await announce('waiting for the router to be ready', waitRouterReady(addresses.router, abort.signal), () => '', false, abort.signal);
    const summary = {
      ready: true,
      ...addresses,
      rest: `127.0.0.1:${router.info.restPort}`,
      metrics: `127.0.0.1:${monitor!.info.metricsPort}`,
      replicas: replicas.map((r) => addr(r)),
      nats: natsUrl,
      logs: logDir,
      pids: supervisor.pids(),
    };
    if (!o.json) {
      printText(
        `infermesh ready: router ${summary.router} (REST ${summary.rest}), registry ${summary.registry}, monitor ${summary.monitor} (metrics ${summary.metrics}), ` +
          `${replicas.length} inference ${replicas.length === 1 ? 'replica' : 'replicas'}, nats ${natsUrl}; logs in ${path.relative(process.cwd(), logDir) || logDir}`,
      );
    }
    let demo: DemoResult | undefined;
    if (o.demo) {
      demo = await runDemo(addresses, o.demoRequests, abort.signal);
      if (!o.json) printText(statsTable(demo.stats));
    }
    if (o.json) printJson(demo ? { ...summary, demo } : summary);
    if (!stopping) progress('press Ctrl-C to stop\n');
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
  const wanted: [number, string][] = [
    [o.routerPort, '--router-port'],
    [o.restPort, '--rest-port'],
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
    if (seen.has(port)) taken.push(`port ${port} is given to both ${seen.get(port)} and ${flag}`);
    else if (!(await isPortFree(port))) taken.push(`port ${port} (${flag}) is already in use`);
    seen.set(port, flag);
  }
  if (taken.length) throw new CliError('FAILED_PRECONDITION', `${taken.join('; ')}; choose other ports with the flags named, or stop what uses them`);
}

/** Starts nats-server with JetStream in `<dir>/nats` on `port` (default 4222 when free, else any free port). */
async function startNats(supervisor: Supervisor, dir: string, port: number | undefined, signal: AbortSignal): Promise<string> {
  const bin = await ensureNatsServer();
  // 0 means any free port (nats-server itself would take 0 as its default, 4222).
  const p = port === 0 ? await freePort() : (port ?? ((await isPortFree(NATS_DEFAULT_PORT)) ? NATS_DEFAULT_PORT : await freePort()));
  await announce(
    'nats-server',
    supervisor.start({
      name: 'nats',
      command: bin,
      args: ['-js', '-sd', path.join(dir, 'nats'), '-a', '127.0.0.1', '-p', String(p)],
      tier: 0,
      readyProbe: () => accepts(p),
      timeoutMs: 15_000,
    }),
    () => `:${p}`,
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
