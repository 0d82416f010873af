/**
 * A real three-node NATS JetStream cluster for tests: three nats-server
 * processes clustered over loopback routes, each with its own client,
 * cluster and monitoring port and store. Nodes can be killed with SIGKILL,
 * started again on their store, or started again empty; the JetStream meta
 * leader and each stream's leader are read from the servers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const BIN = 'nats-server';
const SETPRIV = '/usr/bin/setpriv';
const withParentDeath = existsSync(SETPRIV);

export interface ClusterNode {
  name: string;
  /** The host the node listens on (127.0.0.1, or a test namespace's address). */
  host: string;
  port: number;
  clusterPort: number;
  httpPort: number;
  url: string;
  storeDir: string;
  running: boolean;
}

export interface NatsCluster {
  nodes: ClusterNode[];
  /** Every node's URL, comma-separated (what services get as --nats). */
  urls: string;
  /** SIGKILL of node i (its store stays). */
  kill(i: number): Promise<void>;
  /** Starts node i again on its store; with `empty`, its store is removed first. */
  start(i: number, o?: { empty?: boolean }): Promise<void>;
  /** The JetStream meta leader's node index, or -1 while there is none. */
  metaLeader(): Promise<number>;
  /** The node index leading `stream`, or -1 while there is none. */
  streamLeader(stream: string): Promise<number>;
  /** Per node: the streams it holds and their message counts (from /jsz), for running nodes. */
  streams(i: number): Promise<Map<string, number>>;
  /** Waits until a meta leader is elected and every running node reports JetStream; resolves with the leader. */
  waitReady(timeoutMs?: number): Promise<number>;
  /**
   * Waits until every stream has a leader on a running node and, as that
   * leader sees it, every running follower is current (caught up): before a
   * node is killed again, as an operator would. Killing the only up-to-date
   * copies of a stream one after the other (or wiping one) loses what only
   * they held, on any Raft system.
   */
  waitCurrent(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** Host of each node (default 127.0.0.1 for all). */
  hosts?: string[];
  /** Wraps each node's command (e.g. `ip netns exec ns1`). */
  wrap?: (i: number) => string[];
}

/** Starts three clustered nats-servers with JetStream; resolves once they have elected a meta leader. */
export async function startNatsCluster(o: ClusterOptions = {}): Promise<NatsCluster> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'infermesh-natsc-'));
  const hosts = o.hosts ?? ['127.0.0.1', '127.0.0.1', '127.0.0.1'];
  const nodes: ClusterNode[] = [];
  for (let i = 0; i < 3; i++) {
    const host = hosts[i]!;
    const [port, clusterPort, httpPort] = hosts.every((h) => h === '127.0.0.1') ? [await freePort(), await freePort(), await freePort()] : [4222, 6222, 8222];
    nodes.push({ name: `n${i + 1}`, host, port, clusterPort, httpPort, url: `nats://${host}:${port}`, storeDir: path.join(root, `n${i + 1}`), running: false });
  }
  const procs: (ChildProcess | null)[] = [null, null, null];
  const logs: string[] = ['', '', ''];
  const configFile = async (i: number) => {
    const n = nodes[i]!;
    const routes = nodes.filter((_, j) => j !== i).map((m) => `nats-route://${m.host}:${m.clusterPort}`);
    const file = path.join(root, `${n.name}.conf`);
    await writeFile(
      file,
      [
        `server_name: ${n.name}`,
        `listen: "${n.host}:${n.port}"`,
        `http: "${n.host}:${n.httpPort}"`,
        `jetstream { store_dir: "${n.storeDir}" }`,
        `cluster { name: infermesh-test, listen: "${n.host}:${n.clusterPort}", routes: [${routes.map((r) => `"${r}"`).join(', ')}] }`,
        '',
      ].join('\n'),
    );
    return file;
  };
  const launch = async (i: number) => {
    const n = nodes[i]!;
    await mkdir(n.storeDir, { recursive: true });
    const cmd = [BIN, '-c', await configFile(i)];
    const wrapped = [...(o.wrap?.(i) ?? []), ...(withParentDeath ? [SETPRIV, '--pdeathsig', 'KILL', '--'] : []), ...cmd];
    const p = spawn(wrapped[0]!, wrapped.slice(1), { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr!.on('data', (b: Buffer) => (logs[i] = (logs[i] + b.toString()).slice(-8000)));
    procs[i] = p;
    let exited: string | null = null;
    p.once('exit', (code, sig) => {
      exited = `exited with ${code ?? sig}`;
      n.running = false;
    });
    const deadline = Date.now() + 10_000;
    while (!(await accepts(n.host, n.port))) {
      if (exited !== null || Date.now() > deadline) throw new Error(`nats-server ${n.name} did not start (${exited ?? 'timeout'}): ${logs[i]}`);
      await sleep(50);
    }
    n.running = true;
  };
  const jsz = async (i: number, query: string): Promise<Record<string, unknown> | null> => {
    const n = nodes[i]!;
    if (!n.running) return null;
    try {
      const res = await fetch(`http://${n.host}:${n.httpPort}/jsz?${query}`, { signal: AbortSignal.timeout(1_000) });
      return (await res.json()) as Record<string, unknown>;
    } catch {
      return null;
    }
  };
  const indexOf = (name: unknown) => nodes.findIndex((n) => n.name === name);
  const cluster: NatsCluster = {
    nodes,
    urls: nodes.map((n) => n.url).join(','),
    async kill(i) {
      const p = procs[i];
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const gone = new Promise((r) => p.once('exit', r));
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        // Gone already.
      }
      await gone;
      nodes[i]!.running = false;
      procs[i] = null;
    },
    async start(i, so = {}) {
      if (nodes[i]!.running) throw new Error(`${nodes[i]!.name} is running`);
      if (so.empty) await rm(nodes[i]!.storeDir, { recursive: true, force: true });
      await launch(i);
    },
    async metaLeader() {
      for (let i = 0; i < 3; i++) {
        const j = await jsz(i, 'leader-only=false');
        const meta = j?.meta_cluster as { leader?: string } | undefined;
        if (meta?.leader) return indexOf(meta.leader);
      }
      return -1;
    },
    async streamLeader(stream) {
      for (let i = 0; i < 3; i++) {
        const j = await jsz(i, 'accounts=true&streams=true');
        for (const a of (j?.account_details as { stream_detail?: { name: string; cluster?: { leader?: string } }[] }[] | undefined) ?? []) {
          for (const s of a.stream_detail ?? []) if (s.name === stream && s.cluster?.leader) return indexOf(s.cluster.leader);
        }
      }
      return -1;
    },
    async streams(i) {
      const out = new Map<string, number>();
      const j = await jsz(i, 'accounts=true&streams=true');
      for (const a of (j?.account_details as { stream_detail?: { name: string; state?: { messages?: number } }[] }[] | undefined) ?? []) {
        for (const s of a.stream_detail ?? []) out.set(s.name, s.state?.messages ?? 0);
      }
      return out;
    },
    async waitReady(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const leader = await cluster.metaLeader();
        if (leader >= 0) {
          const all = await Promise.all(nodes.map((n, i) => (n.running ? jsz(i, '') : Promise.resolve({}))));
          if (all.every((j, i) => !nodes[i]!.running || (j !== null && (j as { config?: unknown }).config !== undefined))) return leader;
        }
        if (Date.now() > deadline) throw new Error(`NATS cluster has no meta leader after ${timeoutMs} ms:\n${logs.join('\n---\n').slice(-3000)}`);
        await sleep(100);
      }
    },
    async waitCurrent(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      type Detail = { name: string; cluster?: { leader?: string; replicas?: { name: string; current?: boolean; offline?: boolean; lag?: number }[] } };
      let settled = 0;
      let why = '';
      for (;;) {
        const views = await Promise.all(nodes.map((n, i) => (n.running ? jsz(i, 'accounts=true&streams=true') : Promise.resolve(null))));
        const led = new Map<string, Detail>();
        const all = new Set<string>();
        views.forEach((j, i) => {
          for (const a of (j?.account_details as { stream_detail?: Detail[] }[] | undefined) ?? []) {
            for (const d of a.stream_detail ?? []) {
              all.add(d.name);
              if (d.cluster?.leader === nodes[i]!.name) led.set(d.name, d);
            }
          }
        });
        why = '';
        for (const name of all) {
          const d = led.get(name);
          if (!d) why ||= `${name} has no leader`;
          for (const r of d?.cluster?.replicas ?? []) {
            const up = nodes.find((n) => n.name === r.name)?.running;
            if (up && (!r.current || r.offline || (r.lag ?? 0) > 0)) why ||= `${name}: ${r.name} not current (lag ${r.lag ?? 0})`;
          }
        }
        // Twice in a row: a follower just restarted may look current before its first catch-up request.
        settled = why === '' && all.size > 0 ? settled + 1 : 0;
        if (settled >= 2) return;
        if (Date.now() > deadline) throw new Error(`NATS cluster not caught up after ${timeoutMs} ms: ${why}`);
        await sleep(250);
      }
    },
    async stop() {
      await Promise.all(nodes.map((_, i) => cluster.kill(i)));
      await rm(root, { recursive: true, force: true });
    },
  };
  try {
    await Promise.all(nodes.map((_, i) => launch(i)));
    await cluster.waitReady();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
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
