/**
 * How the mesh grows: N replicas announcing through the real Announcer
 * (services/inference/announcer.ts, one NATS connection each, the default
 * 2 s heartbeat) and R routers' real RoutingTable instances (each with its
 * own NATS connection and KV mirrors), in this process, on one nats-server.
 *
 * Measured per fleet size: the routers' table rebuilds (count and CPU per
 * second, per router), NATS messages per second in and out of the server
 * (from its /varz), heap per router, and how long an alias move written to
 * the models bucket takes to show on every router.
 */
import { performance } from 'node:perf_hooks';
import net from 'node:net';
import { connect, type NatsConnection } from 'nats';
import { openBuckets } from '../../libs/bus/index.js';
import { createLogger } from '../../libs/log/index.js';
import { ReplicaStats, TrafficRecord, VersionRecord, VersionState } from '../../libs/proto/index.js';
import { Announcer } from '../../services/inference/announcer.js';
import { RoutingTable } from '../../services/router/routing-table.js';
import { startNats } from '../harness/nats.js';

export interface FleetPoint {
  replicas: number;
  routers: number;
  /** Table rebuilds per second per router while only heartbeats flow. */
  rebuildsPerSecPerRouter: number;
  /** CPU ms per second per router spent rebuilding (steady heartbeats). */
  rebuildMsPerSecPerRouter: number;
  /** Mean cost of one rebuild, µs. */
  rebuildMicros: number;
  /** Messages per second into / out of nats-server (heartbeats, watch deliveries, acks). */
  natsInPerSec: number;
  natsOutPerSec: number;
  /** Heap per router (KV mirrors, tables, replica links), MiB. */
  heapPerRouterMiB: number;
  /** Alias move to visible on all routers: median and max over the promotes, ms. */
  promoteMedianMs: number;
  promoteMaxMs: number;
}

const log = createLogger('fleet', 'error');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A TCP port that accepts and holds connections: the routers' replica links dial it (no gRPC behind it). */
async function sink(): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => (srv.close(), sockets.forEach((s) => s.destroy())) };
}

async function varz(httpPort: number): Promise<{ in: number; out: number }> {
  const j = (await (await fetch(`http://127.0.0.1:${httpPort}/varz`)).json()) as { in_msgs: number; out_msgs: number };
  return { in: j.in_msgs, out: j.out_msgs };
}

/** Runs one fleet size; `windowMs` of steady heartbeats, then `promotes` alias moves. */
export async function runFleet(o: { replicas: number; routers: number; windowMs?: number; promotes?: number; heartbeatMs?: number }): Promise<FleetPoint> {
  const windowMs = o.windowMs ?? 10_000;
  const heartbeatMs = o.heartbeatMs ?? 2_000;
  const httpPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const nats = await startNats({ config: `http: "127.0.0.1:${httpPort}"\nmax_connections: 10000\n` });
  const hole = await sink();
  const conns: NatsConnection[] = [];
  const announcers: Announcer[] = [];
  const tables: RoutingTable[] = [];
  // Count rebuilds: wrap the table's private rebuild (the real one runs).
  const proto = RoutingTable.prototype as unknown as { rebuild(): void };
  const realRebuild = proto.rebuild;
  let rebuilds = 0;
  let rebuildMs = 0;
  proto.rebuild = function (this: unknown) {
    const t = performance.now();
    realRebuild.call(this);
    rebuildMs += performance.now() - t;
    rebuilds++;
  };
  try {
    const admin = await connect({ servers: nats.url });
    conns.push(admin);
    const b = await openBuckets(admin);
    for (const v of [1, 2]) await b.models.put(`m.v.${v}`, VersionRecord.encode(VersionRecord.fromPartial({ name: 'm', version: v, sizeBytes: 1, batchable: true, createdAtMs: Date.now() })).finish());
    let target = 1;
    const setAlias = (v: number) => b.models.put('m.traffic', TrafficRecord.encode(TrafficRecord.fromPartial({ name: 'm', aliases: { production: v }, updatedAtMs: Date.now() })).finish());
    await setAlias(target);
    const versions = [
      { name: 'm', version: 1, state: VersionState.VERSION_STATE_READY, reason: '' },
      { name: 'm', version: 2, state: VersionState.VERSION_STATE_READY, reason: '' },
    ];
    // Replicas: each its own connection and Announcer; counters change each beat as a serving replica's do.
    for (let i = 0; i < o.replicas; i++) {
      const nc = await connect({ servers: nats.url, name: `replica-${i}` });
      conns.push(nc);
      const kv = await nc.jetstream().views.kv('infermesh-replicas');
      let requests = 0;
      const a = new Announcer(kv, { id: `inf-${i}`, address: `127.0.0.1:${hole.port}`, device: 'cpu', workers: 1, intervalMs: heartbeatMs }, () => versions, () => ReplicaStats.fromPartial({ requests: (requests += 100) }), log);
      announcers.push(a);
      // Spread the first beats over one interval, as replicas started at different times are.
      setTimeout(() => void a.put(), Math.floor((i / o.replicas) * heartbeatMs)).unref();
    }
    await sleep(heartbeatMs + 200);
    const heapBefore = (global.gc?.(), process.memoryUsage().heapUsed);
    for (let r = 0; r < o.routers; r++) {
      const nc = await connect({ servers: nats.url, name: `router-${r}` });
      conns.push(nc);
      const rb = await openBuckets(nc);
      tables.push(await RoutingTable.create(rb.models, rb.replicas, { maxMessageBytes: 4 * 1024 * 1024, promoteReadyFraction: 1, log }));
    }
    await sleep(1_000);
    const heapAfter = (global.gc?.(), process.memoryUsage().heapUsed);
    for (const t of tables) if (t.replicaCount() !== o.replicas) throw new Error(`a router sees ${t.replicaCount()} of ${o.replicas} replicas`);

    // Steady heartbeats.
    rebuilds = 0;
    rebuildMs = 0;
    const v0 = await varz(httpPort);
    const t0 = performance.now();
    await sleep(windowMs);
    const secs = (performance.now() - t0) / 1000;
    const v1 = await varz(httpPort);
    const steady = { rebuilds, rebuildMs };

    // Promotes: alias moves written to the bucket, timed until every router resolves the new target.
    const times: number[] = [];
    for (let p = 0; p < (o.promotes ?? 5); p++) {
      target = target === 1 ? 2 : 1;
      const start = performance.now();
      await setAlias(target);
      const until = Date.now() + 10_000;
      while (!tables.every((t) => t.resolve('m', 'production')?.record.version === target)) {
        if (Date.now() > until) throw new Error('promote not visible on every router within 10 s');
        await new Promise((r) => setImmediate(r));
      }
      times.push(performance.now() - start);
      await sleep(300);
    }
    times.sort((a, b) => a - b);
    return {
      replicas: o.replicas,
      routers: o.routers,
      rebuildsPerSecPerRouter: round(steady.rebuilds / secs / o.routers, 2),
      rebuildMsPerSecPerRouter: round(steady.rebuildMs / secs / o.routers, 3),
      rebuildMicros: round(steady.rebuilds ? (steady.rebuildMs * 1000) / steady.rebuilds : 0, 1),
      natsInPerSec: Math.round((v1.in - v0.in) / secs),
      natsOutPerSec: Math.round((v1.out - v0.out) / secs),
      heapPerRouterMiB: round((heapAfter - heapBefore) / o.routers / 1024 / 1024, 2),
      promoteMedianMs: round(times[Math.floor(times.length / 2)]!, 1),
      promoteMaxMs: round(times[times.length - 1]!, 1),
    };
  } finally {
    proto.rebuild = realRebuild;
    for (const t of tables) t.close();
    await Promise.all(announcers.map((a) => a.close().catch(() => undefined)));
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    hole.close();
    await nats.stop();
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
