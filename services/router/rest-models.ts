/**
 * What the REST gateway reads from the routing table: a model version chosen
 * by URL (as the gRPC path would choose it) and its serving state.
 */
import { checkName } from '../../libs/bus/index.js';
import { InvalidArgumentError, NotFoundError, UnavailableError } from '../../libs/errors/index.js';
import type { VersionRecord } from '../../libs/proto/index.js';
import { checkSelector, VERSION_RE } from './request-scan.js';
import type { Route, RoutingTable } from './routing-table.js';

/** A model and version selector taken from a URL: '' (the default), digits (a version) or an alias. */
export interface ModelRef {
  name: string;
  selector: string;
}

/**
 * Checks the parts of a model URL: the name (and an alias) must be valid
 * names, a version must be digits. Throws INVALID_ARGUMENT naming the part.
 */
export function modelRef(name: string, kind: 'version' | 'label' | '', selector: string): ModelRef {
  checkName(name, 'model_name');
  if (kind === 'version' && !VERSION_RE.test(selector)) throw new InvalidArgumentError('version', 'must be a positive integer of at most 16 digits');
  if (kind === 'label') checkName(selector, 'label');
  return { name, selector };
}

/** Like modelRef for OIP URLs, whose version may be a number or an alias. */
export function oipModelRef(name: string, version: string): ModelRef {
  checkName(name, 'model_name');
  checkSelector(version, 'version');
  return { name, selector: version };
}

/**
 * The route the router would take for `ref` (before canary), with the
 * router's NOT_FOUND messages when there is none.
 */
export function resolveRoute(table: RoutingTable, ref: ModelRef): Route {
  const r = table.resolve(ref.name, ref.selector);
  if (r) return r;
  if (!table.model(ref.name)) throw new NotFoundError(`model ${ref.name} not found`);
  const s = ref.selector;
  throw new NotFoundError(/^\d+$/.test(s) ? `model ${ref.name} has no version ${s}` : s ? `model ${ref.name} has no alias ${s}` : `model ${ref.name} has no version to serve`);
}

/** The version record of `route` when it carries the model's signature; UNAVAILABLE otherwise. */
export function signatureOf(route: Route): VersionRecord {
  if (!route.record.inputs.length) throw new UnavailableError('model metadata not available');
  return route.record;
}

/** Whether `version` of `name` is ready on at least one replica and the model is not unloaded (RepositoryModelUnload). */
export function isReady(table: RoutingTable, name: string, version: number): boolean {
  const m = table.model(name);
  return !!m && m.unloaded !== true && (m.byVersion.get(version)?.replicas.length ?? 0) > 0;
}
