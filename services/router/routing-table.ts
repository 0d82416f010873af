import type { ChannelCredentials } from '@grpc/grpc-js';
import type { KV } from 'nats';
import { KvMirror, parseModelKey } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { ReplicaRecord, TrafficRecord, VersionRecord } from '../../libs/proto/index.js';
import { ReplicaConn } from './replica-conn.js';
import { ReplicaTrust } from './replica-trust.js';
import { buildRoutes, routeOf, type ReplicaState, type ModelRoutes as CoreModelRoutes, type Route as CoreRoute, type RoutingState } from './routing-core.js';
import type { TlsMaterial } from '../../libs/grpc/index.js';

/** The routing table's routes: those of the pure routing core, with the router's replica links. */
export type Route = CoreRoute<ReplicaConn>;
export type ModelRoutes = CoreModelRoutes<ReplicaConn>;

export interface RoutingTableOptions {
  maxMessageBytes: number;
  /**
   * Share of the replicas serving a model on which a new alias target must be
   * ready before the alias moves for this router (1 = all of them).
   */
  promoteReadyFraction: number;
  log: Logger;
  /** How the router reaches replicas (TLS, with its certificate under mutual TLS); default plaintext. */
  credentials?: ChannelCredentials;
  /** Name expected in the replicas' certificates instead of their announced host ('' = the host). */
  serverName?: string;
  /** The TLS material behind `credentials`, to diagnose replicas that fail TLS (ReplicaTrust); null/absent = plaintext. */
  tls?: TlsMaterial | null;
  /** Plaintext replica links over node:http2 directly (`--raw-link`); default false: through grpc-js like TLS ones. */
  rawLink?: boolean;
}

/**
 * The router's picture of the mesh, built from the registry's KV (versions,
 * aliases) and the replicas' heartbeats, held in memory so that serving
 * never waits on NATS. Rebuilt whenever either bucket changes.
 *
 * An alias moves to its new version only once that version is ready on at
 * least one replica; until then it keeps serving its previous target.
 *
 * It is the router's RoutingState: requests are resolved against it by the
 * pure functions of routing-core.ts.
 */
export class RoutingTable implements RoutingState<ReplicaConn> {
  private readonly versions = new Map<string, Map<number, VersionRecord>>();
  private readonly traffic = new Map<string, TrafficRecord>();
  private readonly replicas = new Map<string, { rec: ReplicaRecord; conn: ReplicaConn }>();
  private readonly effective = new Map<string, number>();
  private routes = new Map<string, ModelRoutes>();
  private mirrors: KvMirror[] = [];
  private rebuildScheduled = false;
  synced = false;
  /** Replicas this router cannot verify over TLS: not ready until they can be. */
  private readonly trust: ReplicaTrust;

  private constructor(private readonly o: RoutingTableOptions) {
    this.trust = new ReplicaTrust({ tls: o.tls ?? null, serverName: o.serverName ?? '', log: o.log, onChange: () => this.scheduleRebuild() });
  }

  static async create(models: KV, replicas: KV, o: RoutingTableOptions): Promise<RoutingTable> {
    const t = new RoutingTable(o);
    t.mirrors.push(await KvMirror.start(models, { log: o.log, onChange: (k, v) => t.applyModel(k, v) }));
    t.mirrors.push(await KvMirror.start(replicas, { log: o.log, onChange: (k, v) => t.applyReplica(k, v), reconcileMs: 15_000 }));
    t.rebuild();
    t.synced = true;
    return t;
  }

  /** The model's routes, or undefined when the router knows no such model. */
  model(name: string): ModelRoutes | undefined {
    return this.routes.get(name);
  }

  /** Resolves a version selector: "" (default), digits (a version) or an alias name. */
  resolve(name: string, selector: string): Route | undefined {
    const m = this.routes.get(name);
    return m ? routeOf(m, selector) : undefined;
  }

  /** Names of the models the registry holds, sorted (RepositoryIndex, ModelStatistics). */
  modelNames(): string[] {
    return [...this.versions.keys()].sort();
  }

  /** All known versions of a model, newest first. */
  versionsOf(name: string): VersionRecord[] {
    return [...(this.versions.get(name)?.values() ?? [])].sort((a, b) => b.version - a.version);
  }

  replicaCount(): number {
    return this.replicas.size;
  }

  /** Replicas currently out of rotation (outlier detection, or unreachable; not those held a moment for a probe). */
  ejectedCount(): number {
    const now = performance.now();
    let n = 0;
    for (const { conn } of this.replicas.values()) if (conn.ejected(now) && !conn.heldForProbe) n++;
    return n;
  }

  /**
   * Why the router cannot serve now, '' when it can: it has not read the
   * registry yet, or it knows replicas and cannot verify any of them over TLS.
   * Names no replica (health is public).
   */
  notReadyReason(): string {
    if (!this.synced) return 'router has not read the registry yet';
    const failing = this.trust.failingCount();
    if (failing > 0 && failing >= this.replicas.size) return `TLS fails toward every replica this router knows (${failing}); see the router's log`;
    return '';
  }

  /** Every replica this router knows, with its heartbeat, its connection and why TLS fails toward it (replica-view.ts). */
  replicaEntries(): { rec: ReplicaRecord; conn: ReplicaConn; tlsFailure: string | undefined }[] {
    return [...this.replicas.values()].map(({ rec, conn }) => ({ rec, conn, tlsFailure: this.trust.failureOf(conn) }));
  }

  /** Replicas this router cannot verify over TLS now (not ready), and failure streaks so far (metrics, health). */
  tlsFailing(): { now: number; total: number } {
    return { now: this.trust.failingCount(), total: this.trust.failures };
  }

  private applyModel(key: string, value: Uint8Array | null): void {
    const k = parseModelKey(key);
    // Only versions and traffic route requests; other keys of the bucket (reference profiles, probes) are the monitor's.
    if (k?.kind !== 'version' && k?.kind !== 'traffic') return;
    try {
      if (k.kind === 'version') {
        let m = this.versions.get(k.name);
        if (!value) m?.delete(k.version);
        else {
          if (!m) this.versions.set(k.name, (m = new Map()));
          m.set(k.version, VersionRecord.decode(value));
        }
      } else if (!value) this.traffic.delete(k.name);
      else this.traffic.set(k.name, TrafficRecord.decode(value));
    } catch (err) {
      this.o.log.warn({ key, err: String(err) }, 'undecodable registry record ignored');
    }
    this.scheduleRebuild();
  }

  private applyReplica(key: string, value: Uint8Array | null): void {
    const cur = this.replicas.get(key);
    if (!value) {
      if (cur) {
        this.replicas.delete(key);
        cur.conn.close();
        this.o.log.info({ replica: key }, 'replica left');
      }
      return this.scheduleRebuild();
    }
    let rec: ReplicaRecord;
    try {
      rec = ReplicaRecord.decode(value);
    } catch {
      return;
    }
    if (cur && cur.rec.address === rec.address) {
      // A heartbeat that changes nothing routes read (accepting, versions and their states) needs no
      // rebuild: rebuilding on every beat costs O(replicas) per beat, O(replicas²) per second (issue 18).
      const same = sameRouting(cur.rec, rec);
      cur.rec = rec;
      if (same) return;
    } else {
      cur?.conn.close();
      const conn = new ReplicaConn(rec.id, rec.address, this.o.maxMessageBytes, this.o.log, this.o.credentials, this.o.serverName, this.o.rawLink ?? false);
      this.replicas.set(key, { rec, conn });
      this.trust.watch(conn);
      this.o.log.info({ replica: key, address: rec.address }, 'replica joined');
    }
    this.scheduleRebuild();
  }

  private scheduleRebuild(): void {
    if (this.rebuildScheduled) return;
    this.rebuildScheduled = true;
    queueMicrotask(() => {
      this.rebuildScheduled = false;
      this.rebuild();
    });
  }

  private rebuild(): void {
    const replicas: ReplicaState<ReplicaConn>[] = [];
    for (const { rec, conn } of this.replicas.values()) replicas.push({ rec, link: conn, usable: rec.accepting && !this.trust.isFailing(conn) });
    this.routes = buildRoutes({
      versions: this.versions,
      traffic: this.traffic,
      replicas,
      promoteReadyFraction: this.o.promoteReadyFraction,
      effective: this.effective,
      onAliasSwitch: (model, alias, version, previous) => this.o.log.info({ model, alias, version, previous }, 'alias switched'),
    });
  }

  close(): void {
    for (const m of this.mirrors) m.close();
    for (const { conn } of this.replicas.values()) conn.close();
  }
}

/** Whether two heartbeats of one replica route alike: same accepting flag, same versions in the same states. */
function sameRouting(a: ReplicaRecord, b: ReplicaRecord): boolean {
  if (a.accepting !== b.accepting || a.versions.length !== b.versions.length) return false;
  for (let i = 0; i < a.versions.length; i++) {
    const x = a.versions[i]!;
    const y = b.versions[i]!;
    if (x.name !== y.name || x.version !== y.version || x.state !== y.state) return false;
  }
  return true;
}
