/**
 * The local mesh `infermesh tune` measures: nats-server, registry, monitor
 * and router for the whole run, and one inference replica at a time, started
 * afresh for each worker count. Every process listens on a free port.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVICE_NODE_FLAGS } from '../../../libs/config/index.js';
import { ensureNatsServer } from '../nats-server.js';
import { CliError } from '../output.js';
import { accepts, freePort } from '../ports.js';
import { useOwnPlaintextMesh } from '../security.js';
import { Supervisor, type Started } from '../supervisor.js';

const isListening = (j: Record<string, unknown>) => j.msg === 'listening';
const entry = (service: string) => fileURLToPath(new URL(`../../${service}/main.js`, import.meta.url));

/** Inference flags for `workers` threads of one intra-op thread each; oversubscribing is asked for only past the cores. */
export function inferenceFlags(workers: number, cores = os.availableParallelism()): string[] {
  return ['--workers', String(workers), '--intra-op-threads', '1', ...(workers > cores ? ['--oversubscribe'] : [])];
}

export class TuneMesh {
  /** Set when a ready child exits on its own; checked between measurements. */
  private failure: Error | null = null;
  private replica: { sup: Supervisor; started: Started } | null = null;
  private replicas = 0;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly dir: string,
    private readonly sup: Supervisor,
    private readonly natsUrl: string,
    /** host:port of the registry, monitor and router. */
    readonly registry: string,
    readonly monitor: string,
    readonly router: string,
  ) {}

  /** Starts nats-server (JetStream in `dir`), registry, monitor and router; logs go to `dir`. */
  static async create(dir: string): Promise<TuneMesh> {
    useOwnPlaintextMesh();
    const natsBin = await ensureNatsServer();
    let mesh: TuneMesh | null = null;
    let early: Error | null = null;
    const sup = new Supervisor(dir, (c, how) => {
      const err = new CliError('UNAVAILABLE', `${c.name} ${how} during tuning (log: ${c.logFile})`);
      if (mesh) mesh.failure ??= err;
      else early ??= err;
    });
    try {
      const natsPort = await freePort();
      await sup.start({ name: 'nats', command: natsBin, args: ['-js', '-sd', path.join(dir, 'nats'), '-a', '127.0.0.1', '-p', String(natsPort)], tier: 0, readyProbe: () => accepts(natsPort), timeoutMs: 15_000 });
      const natsUrl = `nats://127.0.0.1:${natsPort}`;
      const svc = (name: string, tier: number, extra: string[]) => sup.start(serviceSpec(name, tier, natsUrl, extra));
      const [registry, monitor] = await Promise.all([svc('registry', 1, []), svc('monitor', 1, ['--metrics-port', '0'])]);
      const router = await svc('router', 3, ['--rest-port', '0', '--sample-flush-ms', '250']);
      const addr = (s: Started) => `127.0.0.1:${s.info.grpcPort}`;
      mesh = new TuneMesh(dir, sup, natsUrl, addr(registry), addr(monitor), addr(router));
      mesh.failure = early;
      return mesh;
    } catch (err) {
      await sup.stopAll();
      throw err;
    }
  }

  /** Stops the current inference replica (if any) and starts one with `workers` worker threads. */
  async startReplica(workers: number): Promise<Started> {
    await this.stopReplica();
    // A supervisor of its own, so this replica can be stopped while the rest runs on.
    const name = `inference-${++this.replicas}-w${workers}`;
    const sup = new Supervisor(this.dir, (c, how) => (this.failure ??= new CliError('UNAVAILABLE', `${c.name} ${how} during tuning (log: ${c.logFile})`)));
    this.replica = { sup, started: await sup.start(serviceSpec(name, 2, this.natsUrl, ['--heartbeat-ms', '1000', ...inferenceFlags(workers)])) };
    return this.replica.started;
  }

  /** Throws if a process of the mesh exited on its own since the start. */
  check(): void {
    if (this.failure) throw this.failure;
  }

  /** Stops the replica, then the rest (highest tier first). Idempotent. */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      await this.stopReplica();
      await this.sup.stopAll();
    })());
  }

  private async stopReplica(): Promise<void> {
    const r = this.replica;
    this.replica = null;
    if (r) await r.sup.stopAll();
  }
}

function serviceSpec(name: string, tier: number, natsUrl: string, extra: string[]) {
  const service = name.startsWith('inference') ? 'inference' : name;
  return {
    name,
    command: process.execPath,
    args: [...SERVICE_NODE_FLAGS, entry(service), '--nats', natsUrl, '--port', '0', '--log-level', 'info', ...extra],
    tier,
    readyLine: isListening,
    timeoutMs: 60_000,
  };
}
