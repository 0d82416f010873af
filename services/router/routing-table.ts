import type { ChannelCredentials } from '@grpc/grpc-js';
import type { KV } from 'nats';
import { KvMirror, parseModelKey } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { ReplicaRecord, TrafficRecord, VersionRecord, VersionState } from '../../libs/proto/index.js';
import { ReplicaConn } from './replica-conn.js';
import { ReplicaTrust } from './replica-trust.js';
import type { TlsMaterial } from '../../libs/grpc/index.js';

/** Where requests for one model version go. */
export interface Route {
  readonly record: VersionRecord;
  /** Replicas on which this version is ready and that accept work. */
  readonly replicas: ReplicaConn[];
}

/** A share of production traffic sent to another version (only while it is ready somewhere). */
export interface CanaryRoute {
  route: Route;
  /** Weight in basis points (1 % = 100). */
  basisPoints: number;
  /** Lower-case metadata key that makes the choice sticky; '' = random. */
  keyHeader: string;
}

export interface ShadowRoute {
  route: Route;
  /** Share mirrored, basis points. */
  basisPoints: number;
}

export interface ModelRoutes {
  byVersion: Map<number, Route>;
  aliases: Map<string, Route>;
  /** Used when a request names no version: `production`, else the newest ready version. */
  fallback: Route | null;
  canary: CanaryRoute | null;
  shadow: ShadowRoute | null;
}

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
}

/**
 * The router's picture of the mesh, built from the registry's KV (versions,
 * aliases) and the replicas' heartbeats, held in memory so that serving
 * never waits on NATS. Rebuilt whenever either bucket changes.
 *
 * An alias moves to its new version only once that version is ready on at
 * least one replica; until then it keeps serving its previous target.
 */
export class RoutingTable {
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
    if (!m) return undefined;
    if (selector === '') return m.fallback ?? undefined;
    const c = selector.charCodeAt(0);
    if (c >= 48 && c <= 57) return m.byVersion.get(Number(selector));
    return m.aliases.get(selector);
  }

  /** All known versions of a model, newest first. */
  versionsOf(name: string): VersionRecord[] {
    return [...(this.versions.get(name)?.values() ?? [])].sort((a, b) => b.version - a.version);
  }

  replicaCount(): number {
    return this.replicas.size;
  }

  /** Replicas currently out of rotation (outlier detection). */
  ejectedCount(): number {
    const now = performance.now();
    let n = 0;
    for (const { conn } of this.replicas.values()) if (conn.ejected(now)) n++;
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
    if (cur && cur.rec.address === rec.address) cur.rec = rec;
    else {
      cur?.conn.close();
      const conn = new ReplicaConn(rec.id, rec.address, this.o.maxMessageBytes, this.o.log, this.o.credentials, this.o.serverName);
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
    const ready = new Map<string, ReplicaConn[]>();
    // Replicas that serve (or are loading) some version of each model.
    const serving = new Map<string, Set<string>>();
    for (const { rec, conn } of this.replicas.values()) {
      if (!rec.accepting || this.trust.isFailing(conn)) continue;
      for (const v of rec.versions) {
        if (v.state === VersionState.VERSION_STATE_READY || v.state === VersionState.VERSION_STATE_LOADING) {
          let set = serving.get(v.name);
          if (!set) serving.set(v.name, (set = new Set()));
          set.add(rec.id);
        }
        if (v.state !== VersionState.VERSION_STATE_READY) continue;
        const key = `${v.name}:${v.version}`;
        let list = ready.get(key);
        if (!list) ready.set(key, (list = []));
        list.push(conn);
      }
    }
    const routes = new Map<string, ModelRoutes>();
    for (const [name, versions] of this.versions) {
      const byVersion = new Map<number, Route>();
      let newestReady: Route | null = null;
      for (const [v, record] of versions) {
        const route: Route = { record, replicas: ready.get(`${name}:${v}`) ?? [] };
        byVersion.set(v, route);
        if (route.replicas.length > 0 && (!newestReady || v > newestReady.record.version)) newestReady = route;
      }
      const needed = Math.max(1, Math.ceil(this.o.promoteReadyFraction * (serving.get(name)?.size ?? 0)));
      const enough = (v: number | undefined) => v !== undefined && (byVersion.get(v)?.replicas.length ?? 0) >= needed;
      const any = (v: number | undefined) => v !== undefined && (byVersion.get(v)?.replicas.length ?? 0) > 0;
      const traffic = this.traffic.get(name);
      const aliases = new Map<string, Route>();
      for (const [alias, target] of Object.entries(traffic?.aliases ?? {})) {
        const key = `${name}@${alias}`;
        const prev = this.effective.get(key);
        // Gate: the alias moves once its target is ready on enough replicas;
        // until then the previous target keeps serving.
        const chosen = enough(target) || prev === undefined || prev === target || !any(prev) ? target : prev;
        if (chosen !== prev) this.o.log.info({ model: name, alias, version: chosen, previous: prev }, 'alias switched');
        this.effective.set(key, chosen);
        const r = byVersion.get(chosen);
        if (r) aliases.set(alias, r);
      }
      const c = traffic?.canary;
      const canaryRoute = c && c.weightPercent > 0 ? byVersion.get(c.version) : undefined;
      const sh = traffic?.shadow;
      const shadowRoute = sh && sh.percent > 0 ? byVersion.get(sh.version) : undefined;
      routes.set(name, {
        byVersion,
        aliases,
        fallback: aliases.get('production') ?? newestReady,
        canary: canaryRoute && canaryRoute.replicas.length > 0 ? { route: canaryRoute, basisPoints: Math.round(c!.weightPercent * 100), keyHeader: c!.keyHeader.toLowerCase() } : null,
        shadow: shadowRoute && shadowRoute.replicas.length > 0 ? { route: shadowRoute, basisPoints: Math.round(sh!.percent * 100) } : null,
      });
    }
    this.routes = routes;
  }

  close(): void {
    for (const m of this.mirrors) m.close();
    for (const { conn } of this.replicas.values()) conn.close();
  }
}
