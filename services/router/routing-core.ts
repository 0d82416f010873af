/**
 * Routing as pure functions: which version a request goes to (version,
 * alias, default, canary share, shadow mirror) and which replica serves it
 * (power of two choices, ejected replicas avoided, replicas already tried
 * skipped). Everything here reads a `RoutingState` and its arguments only —
 * no NATS, no sockets, no clock or randomness of its own — so it is tested
 * with plain objects (test/router/routing-core.test.ts). The NATS-backed
 * RoutingTable is one implementation of `RoutingState`.
 */
import { checkName, NAME_RE } from '../../libs/bus/index.js';
import { NotFoundError, UnavailableError, type MeshError } from '../../libs/errors/index.js';
import { VersionState, type ReplicaRecord, type TrafficRecord, type VersionRecord } from '../../libs/proto/index.js';
import { checkSelector } from './request-scan.js';

/** What routing reads of a replica: its load and whether it is ejected. ReplicaConn is one. */
export interface ReplicaView {
  /** Requests sent and not yet answered (the power-of-two-choices signal). */
  readonly outstanding: number;
  /** performance.now() until which the replica is out of rotation (0 = in rotation; LINK_DOWN: unreachable). */
  readonly ejectedUntil: number;
}

/** `ejectedUntil` of a replica whose link is down (it did not answer a probe): never picked, not even when most replicas are ejected. */
export const LINK_DOWN = Number.POSITIVE_INFINITY;

/** Where requests for one model version go. */
export interface Route<R extends ReplicaView = ReplicaView> {
  readonly record: VersionRecord;
  /** Replicas on which this version is ready and that accept work. */
  readonly replicas: readonly R[];
  /**
   * Compute µs per call of this version as its replicas report it (a moving
   * average the request path keeps; 0 until the first answer): how many calls
   * may wait on one replica before another is woken (`spillAt`).
   */
  computeUs: number;
}

/** A share of production traffic sent to another version (only while it is ready somewhere). */
export interface CanaryRoute<R extends ReplicaView = ReplicaView> {
  route: Route<R>;
  /** Weight in basis points (1 % = 100). */
  basisPoints: number;
  /** Lower-case metadata key that makes the choice sticky; '' = random. */
  keyHeader: string;
}

export interface ShadowRoute<R extends ReplicaView = ReplicaView> {
  route: Route<R>;
  /** Share mirrored, basis points. */
  basisPoints: number;
}

export interface ModelRoutes<R extends ReplicaView = ReplicaView> {
  byVersion: Map<number, Route<R>>;
  aliases: Map<string, Route<R>>;
  /** Used when a request names no version: `production`, else the newest ready version. */
  fallback: Route<R> | null;
  canary: CanaryRoute<R> | null;
  shadow: ShadowRoute<R> | null;
  /**
   * The registry's `unloaded` flag (SetModelServing, Triton's
   * RepositoryModelUnload): every request for the model is answered
   * UNAVAILABLE and the model reports not ready. Absent = false.
   */
  unloaded?: boolean;
}

/** The state routing is a function of: each model's routes by name. */
export interface RoutingState<R extends ReplicaView = ReplicaView> {
  /** The model's routes, or undefined when no such model is known. */
  model(name: string): ModelRoutes<R> | undefined;
}

/** Request headers as routing reads them (grpc-js Metadata, raw HTTP/2 or REST headers). */
export interface HeaderSource {
  get(key: string): (string | Buffer)[];
}

/** A request's target as the caller named it: `model@alias` split, model_version winning over the alias. */
export interface Target {
  name: string;
  /** '' (the default), digits (a version) or an alias. */
  selector: string;
  /** The request field the selector came from, named in errors. */
  selectorField: 'model_name' | 'model_version';
}

/** Splits `model@alias` into name and selector; a model_version, when set, wins. */
export function targetOf(modelName: string, modelVersion: string): Target {
  const at = modelName.indexOf('@');
  if (at < 0) return { name: modelName, selector: modelVersion, selectorField: modelVersion ? 'model_version' : 'model_name' };
  return { name: modelName.slice(0, at), selector: modelVersion || modelName.slice(at + 1), selectorField: modelVersion ? 'model_version' : 'model_name' };
}

/** The route a selector names in a model: '' the default, digits a version, else an alias. */
export function routeOf<R extends ReplicaView>(m: ModelRoutes<R>, selector: string): Route<R> | undefined {
  if (selector === '') return m.fallback ?? undefined;
  const c = selector.charCodeAt(0);
  if (c >= 48 && c <= 57) return m.byVersion.get(Number(selector));
  return m.aliases.get(selector);
}

/** The route of `name` and `selector` (before canary and shadow), or undefined. */
export function resolve<R extends ReplicaView>(state: RoutingState<R>, name: string, selector: string): Route<R> | undefined {
  const m = NAME_RE.test(name) ? state.model(name) : undefined;
  return m ? routeOf(m, selector) : undefined;
}

/**
 * Why `name` and `selector` route nowhere: INVALID_ARGUMENT naming the field
 * when either is malformed (`nameField`, `selectorField`), else NOT_FOUND.
 * Only checked values are echoed, so messages stay short.
 */
export function noRoute(state: RoutingState, name: string, selector: string, nameField: string, selectorField: string): MeshError {
  try {
    checkName(name, nameField);
    checkSelector(selector, selectorField);
  } catch (err) {
    return err as MeshError;
  }
  if (!state.model(name)) return new NotFoundError(`model ${name} not found`);
  return new NotFoundError(/^\d+$/.test(selector) ? `model ${name} has no version ${selector}` : selector ? `model ${name} has no alias ${selector}` : `model ${name} has no version to serve`);
}

/** The answer for a model that is unloaded (ModelRoutes.unloaded): built only on that path. */
export function unloadedError(name: string): MeshError {
  return new UnavailableError(`model ${name} is unloaded (RepositoryModelUnload); load it to serve`);
}

/** 32-bit FNV-1a of a routing key, in basis points: the same key always lands in the same canary bucket. */
export function bucketOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % 10_000;
}

/** Where one request goes: its route (after canary), whether the canary took it, and a shadow to mirror it to. */
export interface Resolution<R extends ReplicaView = ReplicaView> {
  route: Route<R>;
  canaried: boolean;
  mirror: Route<R> | null;
}

/**
 * Resolves a request's target. Canary and shadow apply to production
 * traffic only (no version named, or the `production` alias): the canary
 * takes its share by the sticky key's bucket (`headers`, the canary's
 * keyHeader) or by `random()` (uniform in [0, 1)), the shadow mirrors its
 * share unless it is the version already chosen. Throws INVALID_ARGUMENT
 * (malformed name or selector, naming the field), NOT_FOUND, or UNAVAILABLE
 * for an unloaded model (unloadedError).
 */
export function resolveTarget<R extends ReplicaView>(state: RoutingState<R>, t: Target, headers: HeaderSource, random: () => number): Resolution<R> {
  const m = NAME_RE.test(t.name) ? state.model(t.name) : undefined;
  let route = m ? routeOf(m, t.selector) : undefined;
  if (!m || !route) throw noRoute(state, t.name, t.selector, 'model_name', t.selectorField);
  // Unloaded (the registry's flag): one boolean read per request.
  if (m.unloaded === true) throw unloadedError(t.name);
  let canaried = false;
  let mirror: Route<R> | null = null;
  if (t.selector === '' || t.selector === 'production') {
    const c = m.canary;
    if (c) {
      const k = c.keyHeader ? headers.get(c.keyHeader) : NO_VALUES;
      const bucket = k.length ? bucketOf(String(k[0])) : (random() * 10_000) | 0;
      if (bucket < c.basisPoints) {
        route = c.route;
        canaried = true;
      }
    }
    const s = m.shadow;
    if (s && s.route !== route && random() * 10_000 < s.basisPoints) mirror = s.route;
  }
  return { route, canaried, mirror };
}

const NO_VALUES: never[] = [];

/** How many usable replicas, in route order, are looked at for an idle one before the two random choices. */
const WARM_FIRST = 4;

/**
 * CPU a call costs on a replica that was asleep, over what it costs on one
 * already awake: two wake-ups of the link (≈ 40 µs each at one message in
 * flight, the process hop floor in BENCHMARKS.md) and a run with cold caches.
 * While the calls waiting on an awake replica compute for less than this, one
 * more waits there rather than waking another.
 */
const WAKE_COST_US = 200;
const MAX_SPILL = 8;

/**
 * How many calls may be outstanding on a replica that is still preferred
 * (see pickReplica): 1 (only an idle one) until the version's compute time is
 * known or when it is 200 µs or more, up to 8 for a model that runs in 25 µs.
 */
export function spillAt(computeUs: number): number {
  return computeUs > 0 ? Math.max(1, Math.min(MAX_SPILL, Math.floor(WAKE_COST_US / computeUs))) : 1;
}

/**
 * The first replica with fewer than `spill` calls outstanding among the first
 * WARM_FIRST usable ones in route order (with the default 1: the first idle
 * one), else power of two choices on outstanding requests among `replicas`;
 * skipping
 * those in `tried` (a retry goes elsewhere), those whose link is down
 * (LINK_DOWN) and ejected ones — unless ejection would take out more than
 * half of them (then ejection is ignored: serving on a slow replica beats
 * serving on none; an unreachable one serves nothing). `now` is
 * performance.now(); `random()` uniform in [0, 1). Null when no replica is left.
 */
export function pickReplica<R extends ReplicaView>(replicas: readonly R[], tried: readonly R[], now: number, random: () => number, spill = 1): R | null {
  const n = replicas.length;
  if (n === 0) return null;
  if (n === 1) return tried.includes(replicas[0]!) || replicas[0]!.ejectedUntil === LINK_DOWN ? null : replicas[0]!;
  let ejected = 0;
  for (let i = 0; i < n; i++) if (replicas[i]!.ejectedUntil > now) ejected++;
  const skipEjected = ejected > 0 && ejected * 2 <= n;
  const usable = (r: R) => !tried.includes(r) && r.ejectedUntil !== LINK_DOWN && !(skipEjected && r.ejectedUntil > now);
  // At low load the calls stay on the first replicas in the route's order, awake and with their caches
  // warm, instead of waking each replica in turn: a wake-up costs more CPU than a tiny model's run.
  // With spill 1 this only breaks ties between idle replicas; a larger spill (a tiny model, spillAt)
  // lets a few calls wait on an awake one. Under load none qualifies and the two random choices spread it.
  for (let i = 0, seen = 0; i < n && seen < WARM_FIRST; i++) {
    const r = replicas[i]!;
    if (!usable(r)) continue;
    if (r.outstanding < spill) return r;
    seen++;
  }
  let a = replicas[(random() * n) | 0]!;
  let b = replicas[(random() * n) | 0]!;
  if (!usable(a)) a = b;
  if (!usable(b)) b = a;
  if (!usable(a)) {
    for (const r of replicas) if (usable(r)) return r;
    return null;
  }
  return a.outstanding <= b.outstanding ? a : b;
}

/** A replica as route building sees it: its heartbeat record, its link, and whether it may take work. */
export interface ReplicaState<R extends ReplicaView> {
  rec: ReplicaRecord;
  link: R;
  /** Accepting work and verified (TLS): only then does it serve routes. */
  usable: boolean;
}

export interface RouteInputs<R extends ReplicaView> {
  /** The registry's version records by model and version. */
  versions: ReadonlyMap<string, ReadonlyMap<number, VersionRecord>>;
  /** The registry's traffic records (aliases, canary, shadow) by model. */
  traffic: ReadonlyMap<string, TrafficRecord>;
  replicas: readonly ReplicaState<R>[];
  /** Share of the replicas serving a model on which an alias's new target must be ready before it moves. */
  promoteReadyFraction: number;
  /**
   * The version each `model@alias` serves now, carried from one build to the
   * next (read and updated here): an alias moves only once its new target is
   * ready on enough replicas.
   */
  effective: Map<string, number>;
  onAliasSwitch?: (model: string, alias: string, version: number, previous: number | undefined) => void;
}

/**
 * Every model's routes from the registry's records and the replicas'
 * heartbeats: a version routes to the usable replicas it is READY on; the
 * default is the `production` alias, else the newest ready version; an
 * alias moves to a new target once it is ready on
 * ⌈promoteReadyFraction × replicas serving the model⌉ (at least one)
 * replicas, or at once when its previous target is ready nowhere; canary
 * and shadow apply only while their version is ready somewhere.
 */
export function buildRoutes<R extends ReplicaView>(i: RouteInputs<R>): Map<string, ModelRoutes<R>> {
  const ready = new Map<string, R[]>();
  // Replicas that serve (or are loading) some version of each model.
  const serving = new Map<string, Set<string>>();
  for (const { rec, link, usable } of i.replicas) {
    if (!usable) continue;
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
      list.push(link);
    }
  }
  const routes = new Map<string, ModelRoutes<R>>();
  for (const [name, versions] of i.versions) {
    const byVersion = new Map<number, Route<R>>();
    let newestReady: Route<R> | null = null;
    for (const [v, record] of versions) {
      const route: Route<R> = { record, replicas: ready.get(`${name}:${v}`) ?? [], computeUs: 0 };
      byVersion.set(v, route);
      if (route.replicas.length > 0 && (!newestReady || v > newestReady.record.version)) newestReady = route;
    }
    const needed = Math.max(1, Math.ceil(i.promoteReadyFraction * (serving.get(name)?.size ?? 0)));
    const enough = (v: number | undefined) => v !== undefined && (byVersion.get(v)?.replicas.length ?? 0) >= needed;
    const any = (v: number | undefined) => v !== undefined && (byVersion.get(v)?.replicas.length ?? 0) > 0;
    const traffic = i.traffic.get(name);
    const aliases = new Map<string, Route<R>>();
    for (const [alias, target] of Object.entries(traffic?.aliases ?? {})) {
      const key = `${name}@${alias}`;
      const prev = i.effective.get(key);
      // Gate: the alias moves once its target is ready on enough replicas;
      // until then the previous target keeps serving.
      const chosen = enough(target) || prev === undefined || prev === target || !any(prev) ? target : prev;
      if (chosen !== prev) i.onAliasSwitch?.(name, alias, chosen, prev);
      i.effective.set(key, chosen);
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
      unloaded: traffic?.unloaded === true,
    });
  }
  return routes;
}
