/**
 * How a local mesh's processes are started, in one place: `infermesh up`
 * runs the mesh with these, and `infermesh bench` measures the mesh they
 * start, so the benchmark sees what `up` deploys (same flags, same NATS
 * users, same tracing defaults).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVICE_NODE_FLAGS } from '../../libs/config/index.js';
import { natsChildEnv, type NatsAuth } from './nats-auth.js';
import { accepts } from './ports.js';
import type { StartSpec, Started, Supervisor } from './supervisor.js';

const SERVICE_START_TIMEOUT_MS = 60_000;
const isListening = (j: Record<string, unknown>) => j.msg === 'listening';

/** Ports of the mesh's services; 0 = any free. Replica i (from 0) gets inferencePort+i, router n gets routerPort+2n and restPort+2n. */
export interface MeshPorts {
  routerPort: number;
  restPort: number;
  registryPort: number;
  monitorPort: number;
  metricsPort: number;
  inferencePort: number;
}

/**
 * What `infermesh up` gives its routers unless told otherwise (its flags' defaults), so
 * that bench measures the mesh exactly as up deploys it: every request sampled (a local
 * mesh is for trying drift and evaluation, and the routers cap samples per model per
 * second), spans kept in files of this size.
 */
export const UP_DEFAULTS = Object.freeze({ sampleRate: 1, traceFileBytes: 8 * 1024 * 1024 });

export interface MeshSpec extends MeshPorts {
  natsUrl: string;
  /** The users of the nats-server started for this mesh (natsSpec), or null with a NATS of the caller's. */
  natsAuth: NatsAuth | null;
  replicas: number;
  routers: number;
  /** Wraps each service's start (up prints `starting <name>… ok`). */
  announce?: (name: string, start: Promise<Started>) => Promise<Started>;
  /** The routers' addresses, once they have them (before the monitor starts when ports are 0). */
  onRouters?: (addresses: string[]) => void;
  /** The routers' --sample-rate (default: the router's own, 0.01). */
  sampleRate?: number;
  /** The replicas' --workers (default: the replica's own, 1). */
  workers?: number;
  /** Each service writes its sampled spans to `<traceDir>/<name>.jsonl` (INFERMESH_TRACE_FILE), at most `traceFileBytes` (+ one rotated file). */
  traceDir?: string;
  traceFileBytes?: number;
}

export interface MeshServices {
  registry: Started;
  monitor: Started;
  replicas: Started[];
  routers: Started[];
}

/** Replaces the value after `flag` in `args` (a copy), or appends the flag. */
export function withFlag(args: readonly string[], flag: string, value: string): string[] {
  const out = [...args];
  const i = out.indexOf(flag);
  if (i >= 0 && i + 1 < out.length) out[i + 1] = value;
  else out.push(flag, value);
  return out;
}

/** The ports of `count` routers from `first` (first, first+2, …: gRPC and REST ports interleave), or all 0 (any free) when `first` is 0. */
export function routerPorts(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => (first === 0 ? 0 : first + 2 * i));
}

export const addressOf = (c: Started) => `127.0.0.1:${c.info.grpcPort}`;

/** nats-server with JetStream in `<dir>/nats` on `port`, admitting only the users of `auth`. */
export function natsSpec(bin: string, dir: string, port: number, auth: NatsAuth): StartSpec {
  return {
    name: 'nats',
    command: bin,
    args: ['-c', auth.configFile, '-js', '-sd', path.join(dir, 'nats'), '-a', '127.0.0.1', '-p', String(port)],
    tier: 0,
    readyProbe: () => accepts(port),
    timeoutMs: 15_000,
    info: { port },
  };
}

export interface ServiceSpecOptions {
  /** The process's name (log file, status); every `router*` is the NATS user `router`. */
  name: string;
  /** The service folder whose main.js runs: registry, monitor, inference or router. */
  script: string;
  tier: number;
  natsUrl: string;
  natsAuth: NatsAuth | null;
  port: number;
  extra?: string[];
  /** Address the service binds (default 127.0.0.1). */
  host?: string;
  /** What a restart must keep beyond the gRPC port the first start bound. */
  pin?: (args: string[], first: Started) => string[];
  /** Variables for this service beyond its NATS user's. */
  env?: Record<string, string>;
}

/** One mesh service as `up` starts it: loopback, its port (0 = any free), info logging, the service Node flags, its NATS user. */
export function serviceSpec(o: ServiceSpecOptions): StartSpec {
  const entry = fileURLToPath(new URL(`../${o.script}/main.js`, import.meta.url));
  const args = [...SERVICE_NODE_FLAGS, entry, '--nats', o.natsUrl, '--host', o.host ?? '127.0.0.1', '--port', String(o.port), '--log-level', 'info', ...(o.extra ?? [])];
  const pin = o.pin ?? ((a: string[]) => a);
  return {
    name: o.name,
    command: process.execPath,
    args,
    tier: o.tier,
    readyLine: isListening,
    timeoutMs: SERVICE_START_TIMEOUT_MS,
    // A restart binds the port the first start reported.
    restartArgs: (first) => pin(withFlag(args, '--port', String(first.info.grpcPort ?? o.port)), first),
    ...(o.natsAuth || o.env ? { env: { ...(o.env ?? {}), ...(o.natsAuth ? natsChildEnv(o.natsAuth, o.name.startsWith('router') ? 'router' : o.name) : {}) } } : {}),
  };
}

/**
 * Starts registry, inference replicas (`inference-1`…), routers and the
 * monitor on NATS at `natsUrl`, each with the default flags of its service.
 * Resolves once all are listening; rejects when one fails to start.
 */
export async function startMeshServices(supervisor: Supervisor, o: MeshSpec): Promise<MeshServices> {
  const wrap = o.announce ?? ((_: string, p: Promise<Started>) => p);
  const traceEnv = (name: string): Record<string, string> | undefined =>
    o.traceDir
      ? { INFERMESH_TRACE_FILE: path.join(o.traceDir, `${name}.jsonl`), ...(o.traceFileBytes ? { INFERMESH_TRACE_FILE_MAX_BYTES: String(o.traceFileBytes) } : {}) }
      : undefined;
  const service = (name: string, tier: number, script: string, port: number, extra: string[] = [], pin?: ServiceSpecOptions['pin']) =>
    wrap(name, supervisor.start(serviceSpec({ name, script, tier, natsUrl: o.natsUrl, natsAuth: o.natsAuth, port, extra, pin, env: traceEnv(name) })));
  const replicaFlags = o.workers !== undefined ? ['--workers', String(o.workers)] : [];
  const routerFlags = o.sampleRate !== undefined ? ['--sample-rate', String(o.sampleRate)] : [];
  let routerAddresses: string[] = [];
  let registryAddress = '';
  // Golden probes go through the routers and canary rollbacks through the registry: the monitor
  // needs their addresses. With fixed ports it starts beside the others; with port 0 it starts
  // once they have bound theirs. A restart gets the addresses the mesh has then.
  const startMonitor = (routerList: string[], registryAt: string) =>
    service('monitor', 1, 'monitor', o.monitorPort, ['--metrics-port', String(o.metricsPort), '--router-address', routerList.join(','), '--registry-address', registryAt], (args, first) => {
      let a = withFlag(args, '--metrics-port', String(first.info.metricsPort ?? o.metricsPort));
      if (routerAddresses.length) a = withFlag(a, '--router-address', routerAddresses.join(','));
      if (registryAddress) a = withFlag(a, '--registry-address', registryAddress);
      return a;
    });
  const rPorts = routerPorts(o.routerPort, o.routers);
  const restPorts = routerPorts(o.restPort, o.routers);
  const portsKnown = o.routerPort !== 0 && o.registryPort !== 0;
  const [registry, early, ...replicas] = await Promise.all([
    service('registry', 1, 'registry', o.registryPort),
    portsKnown ? startMonitor(rPorts.map((p) => `127.0.0.1:${p}`), `127.0.0.1:${o.registryPort}`) : null,
    ...Array.from({ length: o.replicas }, (_, i) => service(`inference-${i + 1}`, 2, 'inference', o.inferencePort === 0 ? 0 : o.inferencePort + i, replicaFlags)),
  ]);
  registryAddress = addressOf(registry!);
  const routers = await Promise.all(
    rPorts.map((port, i) =>
      service(o.routers === 1 ? 'router' : `router-${i + 1}`, 3, 'router', port, ['--rest-port', String(restPorts[i]), ...routerFlags, '--registry-address', registryAddress], (args, first) =>
        withFlag(args, '--rest-port', String(first.info.restPort ?? restPorts[i])),
      ),
    ),
  );
  routerAddresses = routers.map(addressOf);
  o.onRouters?.(routerAddresses);
  const monitor = early ?? (await startMonitor(routerAddresses, registryAddress));
  return { registry: registry!, monitor, replicas: replicas as Started[], routers };
}

/** The roles `up --only` can start. */
export const MESH_ROLES = ['registry', 'monitor', 'inference', 'router'] as const;
export type MeshRole = (typeof MESH_ROLES)[number];

export interface JoinSpec extends MeshPorts {
  /** The mesh's NATS (every server of a cluster, comma-separated). */
  natsUrl: string;
  roles: ReadonlySet<MeshRole>;
  replicas: number;
  routers: number;
  /** Address the services bind (default 127.0.0.1). */
  host: string;
  /** Address the replicas announce to the routers (HOST; the bound port is added), default `host`. */
  advertise: string;
  /** Router and registry addresses the monitor uses (its probes, rollbacks) when they run elsewhere. */
  routerAddresses?: string[];
  registryAddress?: string;
  announce?: (name: string, start: Promise<Started>) => Promise<Started>;
}

/**
 * Starts only `roles` against an existing mesh's NATS (`up --join`): e.g.
 * two more inference replicas on a second host, announcing an address the
 * routers on other hosts can reach. The NATS credentials come from this
 * process's environment (INFERMESH_NATS_USER/…), as with `up --nats`.
 */
export async function startJoinedServices(supervisor: Supervisor, o: JoinSpec): Promise<Partial<MeshServices> & { replicas: Started[]; routers: Started[] }> {
  const wrap = o.announce ?? ((_: string, p: Promise<Started>) => p);
  const service = (name: string, tier: number, script: string, port: number, extra: string[] = [], pin?: ServiceSpecOptions['pin']) =>
    wrap(name, supervisor.start(serviceSpec({ name, script, tier, natsUrl: o.natsUrl, natsAuth: null, port, extra, pin, host: o.host })));
  const shown = (c: Started) => `${o.advertise}:${c.info.grpcPort}`;
  const registry = o.roles.has('registry') ? await service('registry', 1, 'registry', o.registryPort) : undefined;
  const replicas = o.roles.has('inference')
    ? await Promise.all(
        Array.from({ length: o.replicas }, (_, i) =>
          service(`inference-${i + 1}`, 2, 'inference', o.inferencePort === 0 ? 0 : o.inferencePort + i, ['--advertise', o.advertise]),
        ),
      )
    : [];
  const rPorts = routerPorts(o.routerPort, o.routers);
  const restPorts = routerPorts(o.restPort, o.routers);
  const routers = o.roles.has('router')
    ? await Promise.all(
        rPorts.map((port, i) =>
          service(o.routers === 1 ? 'router' : `router-${i + 1}`, 3, 'router', port, ['--rest-port', String(restPorts[i])], (args, first) =>
            withFlag(args, '--rest-port', String(first.info.restPort ?? restPorts[i])),
          ),
        ),
      )
    : [];
  let monitor: Started | undefined;
  if (o.roles.has('monitor')) {
    const routerList = [...routers.map(shown), ...(o.routerAddresses ?? [])];
    const registryAt = registry ? shown(registry) : (o.registryAddress ?? '');
    const extra = ['--metrics-port', String(o.metricsPort)];
    if (routerList.length) extra.push('--router-address', routerList.join(','));
    if (registryAt) extra.push('--registry-address', registryAt);
    monitor = await service('monitor', 1, 'monitor', o.monitorPort, extra, (args, first) => withFlag(args, '--metrics-port', String(first.info.metricsPort ?? o.metricsPort)));
  }
  return { ...(registry ? { registry } : {}), ...(monitor ? { monitor } : {}), replicas, routers };
}
