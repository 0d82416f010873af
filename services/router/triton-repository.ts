/**
 * Triton's model-repository extension mapped onto the mesh. The repository
 * is the registry, and the mesh follows it on its own (as Triton does in
 * its default model-control mode):
 *
 * - RepositoryIndex: every registered version with its state across the
 *   mesh: READY (ready on a replica), LOADING (loading on one), else
 *   UNAVAILABLE with the reason (a replica's load failure, or not held by any
 *   replica: they hold aliased, canary, shadow and the newest versions).
 * - RepositoryModelLoad: "make this model serve": the registry moves the
 *   model's `production` alias (SetAlias, with the caller's `authorization`
 *   forwarded, so the registry's `promote` role applies when tokens are on)
 *   to parameter `version`, else keeps its current target, else takes the
 *   newest version; the call returns once the router serves that version
 *   through `production` on a ready replica. Moving `production` also ends
 *   an unload (the registry clears the model's `unloaded` flag).
 * - RepositoryModelUnload: "stop serving this model": the registry sets the
 *   model's `unloaded` flag (SetModelServing{serving: false}, the caller's
 *   `authorization` forwarded: `promote` role; a SERVING_STOPPED lifecycle
 *   event with actor and reason), and every router then answers the model's
 *   requests UNAVAILABLE ("model M is unloaded (RepositoryModelUnload); load
 *   it to serve"), ModelReady false, and the index UNAVAILABLE with reason
 *   "unloaded". The call returns once this router sees the flag. Replicas
 *   keep the versions loaded (warm), so a load serves again at once.
 *   Parameter `unload_dependents` is accepted and has no effect (a composed
 *   model is one graph; its parts are models of their own).
 */
import * as grpc from '@grpc/grpc-js';
import { checkName } from '../../libs/bus/index.js';
import { DeadlineExceededError, fromStatus, InvalidArgumentError, isServiceError, NotFoundError, UnavailableError } from '../../libs/errors/index.js';
import type { RegistryClient } from '../../libs/proto/index.js';
import { oip, VersionState } from '../../libs/proto/index.js';
import type { RoutingTable } from './routing-table.js';

/** Longest a load waits for the version to be ready when the caller gives no deadline. */
const LOAD_WAIT_MS = 60_000;
const POLL_MS = 25;
const ALIAS = 'production';

/** RepositoryIndex: every registered version (oldest first per model), or only READY ones. */
export function repositoryIndex(table: RoutingTable, req: oip.RepositoryIndexRequest): oip.RepositoryIndexResponse {
  if (req.repositoryName !== '') throw new InvalidArgumentError('repository_name', "the mesh has one repository, its registry: send ''");
  // What the replicas say about each version they hold, ready or not.
  const held = new Map<string, { loading: boolean; failure: string }>();
  for (const { rec } of table.replicaEntries()) {
    for (const v of rec.versions) {
      const key = `${v.name}:${v.version}`;
      const h = held.get(key) ?? { loading: false, failure: '' };
      if (v.state === VersionState.VERSION_STATE_LOADING) h.loading = true;
      if (v.state === VersionState.VERSION_STATE_FAILED && !h.failure) h.failure = v.reason.slice(0, 200);
      held.set(key, h);
    }
  }
  const models: oip.RepositoryIndexResponse_ModelIndex[] = [];
  for (const name of table.modelNames()) {
    const routes = table.model(name);
    for (const rec of [...table.versionsOf(name)].reverse()) {
      const ready = (routes?.byVersion.get(rec.version)?.replicas.length ?? 0) > 0;
      const h = held.get(`${name}:${rec.version}`);
      const unloaded = routes?.unloaded === true;
      const state = unloaded ? 'UNAVAILABLE' : ready ? 'READY' : h?.loading ? 'LOADING' : 'UNAVAILABLE';
      if (req.ready && state !== 'READY') continue;
      const reason =
        state !== 'UNAVAILABLE' ? '' : unloaded ? 'unloaded' : h?.failure ? `load failed: ${h.failure}` : 'not loaded on any replica (they hold aliased, canary, shadow and the newest versions)';
      models.push({ name, version: String(rec.version), state, reason });
    }
  }
  return { models };
}

/** The version a load names in its parameters, or null; INVALID_ARGUMENT for parameters the mesh does not take. */
function versionParameter(params: { [key: string]: oip.ModelRepositoryParameter }): number | null {
  let version: number | null = null;
  for (const [key, p] of Object.entries(params)) {
    const field = `parameters.${key.slice(0, 64)}`;
    if (key === 'version') {
      const v = p.parameterChoice;
      const n = v?.$case === 'int64Param' ? v.value : v?.$case === 'stringParam' && /^\d{1,16}$/.test(v.value) ? Number(v.value) : NaN;
      if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(field, 'must be a version number ≥ 1');
      version = n;
    } else if (key === 'config' || key.startsWith('file:')) {
      throw new InvalidArgumentError(field, 'models come from the registry with their settings (infermesh models push), not from a load');
    } else throw new InvalidArgumentError(field, 'unknown parameter (the mesh takes "version")');
  }
  return version;
}

/**
 * RepositoryModelLoad (see the module comment). `metadata`: the caller's,
 * whose `authorization` goes on to the registry. Throws INVALID_ARGUMENT,
 * NOT_FOUND, the registry's UNAUTHENTICATED/PERMISSION_DENIED,
 * UNAVAILABLE (no registry configured or reachable), DEADLINE_EXCEEDED.
 */
export async function repositoryLoad(table: RoutingTable, registry: RegistryClient | null, req: oip.RepositoryModelLoadRequest, metadata: grpc.Metadata, deadlineMs: number): Promise<void> {
  if (req.repositoryName !== '') throw new InvalidArgumentError('repository_name', "the mesh has one repository, its registry: send ''");
  const name = checkName(req.modelName, 'model_name');
  const wanted = versionParameter(req.parameters);
  const versions = table.versionsOf(name);
  if (!versions.length) throw new NotFoundError(`model ${name} not found`);
  if (wanted !== null && !versions.some((v) => v.version === wanted)) throw new NotFoundError(`model ${name} has no version ${wanted}`);
  const target = wanted ?? table.model(name)?.aliases.get(ALIAS)?.record.version ?? versions[0]!.version;
  if (!registry) throw new UnavailableError('load: this router has no registry address (--registry-address)');
  const deadline = Number.isFinite(deadlineMs) ? deadlineMs : Date.now() + LOAD_WAIT_MS;
  await new Promise<void>((resolve, reject) => {
    registry.setAlias({ name, alias: ALIAS, version: target, expectedVersion: 0, reason: 'RepositoryModelLoad' }, forwarded(metadata), { deadline }, (err) =>
      err ? reject(isServiceError(err) ? fromStatus(err.code, `registry: ${err.details}`) : err) : resolve(),
    );
  });
  for (;;) {
    const r = table.resolve(name, ALIAS);
    if (r && r.record.version === target && r.replicas.length > 0 && table.model(name)?.unloaded !== true) return;
    if (Date.now() + POLL_MS > deadline) throw new DeadlineExceededError(`model ${name} version ${target} is not ready yet (production points at it; replicas are loading it)`);
    await new Promise((res) => setTimeout(res, POLL_MS));
  }
}

/** The caller's `authorization`, alone, for the registry. */
function forwarded(metadata: grpc.Metadata): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const v of metadata.get('authorization')) md.add('authorization', v);
  return md;
}

/**
 * RepositoryModelUnload (see the module comment): the registry's `unloaded`
 * flag set with the caller's `authorization`; returns once this router sees
 * it. Throws INVALID_ARGUMENT, NOT_FOUND, the registry's
 * UNAUTHENTICATED/PERMISSION_DENIED, UNAVAILABLE (no registry), DEADLINE_EXCEEDED.
 */
export async function repositoryUnload(table: RoutingTable, registry: RegistryClient | null, req: oip.RepositoryModelUnloadRequest, metadata: grpc.Metadata, deadlineMs: number): Promise<void> {
  if (req.repositoryName !== '') throw new InvalidArgumentError('repository_name', "the mesh has one repository, its registry: send ''");
  const name = checkName(req.modelName, 'model_name');
  for (const [key, p] of Object.entries(req.parameters)) {
    const field = `parameters.${key.slice(0, 64)}`;
    if (key !== 'unload_dependents') throw new InvalidArgumentError(field, 'unknown parameter (the mesh takes "unload_dependents")');
    if (p.parameterChoice?.$case !== 'boolParam') throw new InvalidArgumentError(field, 'must be a boolean');
  }
  if (!table.versionsOf(name).length) throw new NotFoundError(`model ${name} not found`);
  if (!registry) throw new UnavailableError('unload: this router has no registry address (--registry-address)');
  const deadline = Number.isFinite(deadlineMs) ? deadlineMs : Date.now() + LOAD_WAIT_MS;
  await new Promise<void>((resolve, reject) => {
    registry.setModelServing({ name, serving: false, reason: 'RepositoryModelUnload' }, forwarded(metadata), { deadline }, (err) =>
      err ? reject(isServiceError(err) ? fromStatus(err.code, `registry: ${err.details}`) : err) : resolve(),
    );
  });
  while (table.model(name)?.unloaded !== true) {
    if (Date.now() + POLL_MS > deadline) throw new DeadlineExceededError(`model ${name} is unloaded in the registry; this router has not seen it yet`);
    await new Promise((res) => setTimeout(res, POLL_MS));
  }
}
