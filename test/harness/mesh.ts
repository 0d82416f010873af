/**
 * Starts the real services as processes (from dist/, built by `npm test`)
 * on free ports against one nats-server, and learns each bound port from
 * the service's `listening` log line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InferenceApi, MonitorApi, RegistryApi, type ClientSecurity } from '../../libs/client/index.js';
import { SERVICE_NODE_FLAGS } from '../../libs/config/index.js';
import { startNats, type NatsHandle, type NatsOptions } from './nats.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface ServiceProc {
  name: string;
  proc: ChildProcess;
  /** The fields of the `listening` line (grpcPort, restPort, metricsPort, address …). */
  info: Record<string, unknown>;
  logs: string[];
  /** Sends `signal` and resolves with the exit code once the process exits. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `services/<service>/main.js` with `args`; resolves when it logs `listening`. */
export async function startService(service: string, args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<ServiceProc> {
  const proc = spawn(process.execPath, [...SERVICE_NODE_FLAGS, path.join(ROOT, 'dist/services', service, 'main.js'), ...args], {
    env: { ...process.env, INFERMESH_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  let exited: number | null | undefined;
  const exitP = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve((exited = code))));
  const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${service} did not start in ${timeoutMs} ms:\n${logs.join('\n')}`)), timeoutMs);
    let buf = '';
    proc.stdout!.on('data', (b: Buffer) => {
      buf += b.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        logs.push(line);
        if (logs.length > 2000) logs.shift();
        try {
          const j = JSON.parse(line) as Record<string, unknown>;
          if (j.msg === 'listening') {
            clearTimeout(timer);
            resolve(j);
          }
        } catch {
          // Not JSON: keep as a log line.
        }
      }
    });
    proc.stderr!.on('data', (b: Buffer) => logs.push(b.toString()));
    void exitP.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${service} exited (${code}) before listening:\n${logs.join('\n')}`));
    });
  });
  let stopping = false;
  void exitP.then((code) => {
    // A service that dies on its own is a finding: show why.
    if (!stopping) process.stderr.write(`\n[harness] ${service} exited unexpectedly (${code ?? proc.signalCode}):\n${logs.slice(-30).join('\n')}\n`);
  });
  return {
    name: service,
    proc,
    info,
    logs,
    stop(signal = 'SIGTERM') {
      stopping = true;
      if (exited !== undefined) return Promise.resolve(exited);
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      return exitP.finally(() => clearTimeout(t));
    },
  };
}

export interface Mesh {
  nats: NatsHandle;
  registry: ServiceProc;
  monitor: ServiceProc;
  router: ServiceProc;
  replicas: ServiceProc[];
  routerAddr: string;
  registryAddr: string;
  monitorAddr: string;
  clients: { router: InferenceApi; registry: RegistryApi; monitor: MonitorApi };
  addReplica(extra?: string[]): Promise<ServiceProc>;
  /** Waits until the router serves `model` (optionally at `version`) from `replicas` ready replicas. */
  waitReady(model: string, version?: string): Promise<void>;
  stop(): Promise<void>;
}

export interface MeshOptions {
  replicas?: number;
  inferenceArgs?: string[];
  routerArgs?: string[];
  monitorArgs?: string[];
  env?: Record<string, string>;
  /** Extra nats-server configuration (TLS, authorization). */
  nats?: NatsOptions;
  /** TLS and token of the mesh's `clients` (default plaintext, no token). */
  client?: ClientSecurity;
}

/** Starts nats-server, registry, monitor, N inference replicas and a router. */
export async function startMesh(o: MeshOptions = {}): Promise<Mesh> {
  const nats = await startNats(o.nats);
  const common = ['--nats', nats.url, '--host', '127.0.0.1', '--port', '0'];
  const env = { INFERMESH_HEARTBEAT_MS: '500', INFERMESH_SAMPLE_FLUSH_MS: '200', ...(o.env ?? {}) };
  const started: ServiceProc[] = [];
  try {
    const registry = await startService('registry', common, env);
    started.push(registry);
    const addReplica = async (extra: string[] = []) => {
      const r = await startService('inference', [...common, ...(o.inferenceArgs ?? []), ...extra], env);
      replicas.push(r);
      started.push(r);
      return r;
    };
    const replicas: ServiceProc[] = [];
    await Promise.all(Array.from({ length: o.replicas ?? 1 }, () => addReplica()));
    // The router's Triton RepositoryModelLoad goes through the registry.
    const router = await startService('router', [...common, '--rest-port', '0', '--registry-address', `127.0.0.1:${registry.info.grpcPort}`, ...(o.routerArgs ?? [])], env);
    started.push(router);
    const routerAddr = `127.0.0.1:${router.info.grpcPort}`;
    const registryAddr = `127.0.0.1:${registry.info.grpcPort}`;
    // Last: its golden probes go through the router and its canary rollbacks through the registry.
    const monitor = await startService('monitor', [...common, '--metrics-port', '0', '--router-address', routerAddr, '--registry-address', registryAddr, ...(o.monitorArgs ?? [])], env);
    started.push(monitor);
    const monitorAddr = `127.0.0.1:${monitor.info.grpcPort}`;
    const sec = o.client ?? {};
    const clients = { router: new InferenceApi(routerAddr, sec), registry: new RegistryApi(registryAddr, sec), monitor: new MonitorApi(monitorAddr, sec) };
    let stopping: Promise<void> | null = null;
    return {
      nats,
      registry,
      monitor,
      router,
      replicas,
      routerAddr,
      registryAddr,
      monitorAddr,
      clients,
      addReplica,
      async waitReady(model, version = '') {
        const until = Date.now() + 30_000;
        for (;;) {
          try {
            if (await clients.router.modelReady(model, version)) return;
          } catch {
            // NOT_FOUND until the router has seen the model.
          }
          if (Date.now() > until) throw new Error(`model ${model}${version ? ` version ${version}` : ''} not ready through the router`);
          await new Promise((r) => setTimeout(r, 50));
        }
      },
      stop: () =>
        (stopping ??= (async () => {
          clients.router.close();
          clients.registry.close();
          clients.monitor.close();
          await Promise.all(started.map((s) => s.stop()));
          await nats.stop();
        })()),
    };
  } catch (err) {
    await Promise.all(started.map((s) => s.stop('SIGKILL')));
    await nats.stop();
    throw err;
  }
}
