/**
 * The one table of who may do what on the management plane: a row for every
 * RPC of the services that take tokens (registry, monitor), and a row for
 * every request field whose being set changes serving state on its own terms
 * (an alias set by a push, a canary or shadow cleared, a probe removed).
 * A field's role is needed in addition to its RPC's. `admin` qualifies for
 * every role. Handlers ask AccessPolicy.rpcGuard / AccessPolicy.checkField,
 * which read only this table; the README's table is rendered from it and a
 * test compares the two.
 */
import type { Role } from './access.js';

/** The role a row needs; `none` = no token (reads). */
export type RoleNeeded = Role | 'none';

/** A management service that checks tokens, as its proto names it. */
export type ManagedService = 'Registry' | 'Monitor';

export interface RoleRule {
  readonly service: ManagedService;
  /** The RPC, as the proto names it (`PushModel`). */
  readonly rpc: string;
  /** A request field (proto path, `header.alias`) that needs `role` when set; absent for the RPC's own row. */
  readonly field?: string;
  readonly role: RoleNeeded;
  /** What the call, or setting the field, changes (README). */
  readonly changes: string;
}

const READ = 'nothing (a read)';

export const MANAGEMENT_ROLES: readonly RoleRule[] = Object.freeze([
  { service: 'Registry', rpc: 'PushModel', role: 'push', changes: 'stores a new version (serves nothing yet)' },
  { service: 'Registry', rpc: 'PushModel', field: 'header.alias', role: 'promote', changes: 'points an alias at the new version' },
  { service: 'Registry', rpc: 'SetAlias', role: 'promote', changes: 'moves an alias' },
  { service: 'Registry', rpc: 'Rollback', role: 'promote', changes: 'moves an alias back' },
  { service: 'Registry', rpc: 'SetCanary', role: 'promote', changes: 'sends a share of production traffic to a version' },
  { service: 'Registry', rpc: 'SetCanary', field: 'clear', role: 'promote', changes: 'removes the canary' },
  { service: 'Registry', rpc: 'SetShadow', role: 'promote', changes: 'mirrors a share of live requests to a version' },
  { service: 'Registry', rpc: 'SetShadow', field: 'clear', role: 'promote', changes: 'removes the shadow' },
  { service: 'Registry', rpc: 'SetProbe', role: 'push', changes: "stores a model's golden probe" },
  { service: 'Registry', rpc: 'SetProbe', field: 'clear', role: 'push', changes: "removes the model's golden probe" },
  { service: 'Registry', rpc: 'OptimizeModel', role: 'push', changes: 'stores a cheaper version that passed the accuracy gate (serves nothing yet)' },
  { service: 'Registry', rpc: 'OptimizeModel', field: 'force', role: 'promote', changes: 'stores it although beyond the accuracy gate' },
  { service: 'Registry', rpc: 'ComposeModel', role: 'push', changes: 'stores a pipeline or ensemble of versions as a new version' },
  { service: 'Registry', rpc: 'SetTags', role: 'push', changes: "sets or removes a version's tags" },
  { service: 'Registry', rpc: 'ArchiveVersion', role: 'push', changes: 'archives a version (no longer loaded or routable) or restores it' },
  { service: 'Registry', rpc: 'DeleteVersion', role: 'admin', changes: "deletes a version's record (refused while anything depends on it)" },
  { service: 'Registry', rpc: 'ApplyRetention', role: 'push', changes: 'archives unaliased versions beyond the newest N' },
  { service: 'Registry', rpc: 'ApplyRetention', field: 'delete', role: 'admin', changes: 'deletes them instead' },
  { service: 'Registry', rpc: 'SetModelServing', role: 'promote', changes: 'stops a model serving (Triton unload) or lets it serve again' },
  { service: 'Registry', rpc: 'CollectGarbage', role: 'admin', changes: 'removes model files no version refers to from the object store' },
  { service: 'Registry', rpc: 'ListModels', role: 'none', changes: READ },
  { service: 'Registry', rpc: 'GetModel', role: 'none', changes: READ },
  { service: 'Registry', rpc: 'GetHistory', role: 'none', changes: READ },
  { service: 'Registry', rpc: 'GetReference', role: 'none', changes: READ },
  { service: 'Monitor', rpc: 'RecordOutcomes', role: 'outcomes', changes: 'stores ground-truth labels (evaluation, canary analysis)' },
  { service: 'Monitor', rpc: 'GetModelStats', role: 'none', changes: READ },
  { service: 'Monitor', rpc: 'GetSlowRequests', role: 'none', changes: READ },
  { service: 'Monitor', rpc: 'GetDrift', role: 'none', changes: READ },
  { service: 'Monitor', rpc: 'GetEvaluation', role: 'none', changes: READ },
  { service: 'Monitor', rpc: 'ListAlerts', role: 'none', changes: READ },
  { service: 'Monitor', rpc: 'WatchAlerts', role: 'none', changes: READ },
  { service: 'Monitor', rpc: 'CompareVersions', role: 'none', changes: READ },
  { service: 'Monitor', rpc: 'ExportOutcomes', role: 'outcomes', changes: 'nothing (a read of labels and features: training data)' },
] satisfies RoleRule[]);

function rowOf(service: ManagedService, rpc: string, field: string | undefined): RoleRule {
  const row = MANAGEMENT_ROLES.find((r) => r.service === service && r.rpc === rpc && r.field === field);
  // A handler asking about an RPC or field the table lacks is a programming error: fail at start-up, never open.
  if (!row) throw new Error(`management-roles: no row for ${service}.${rpc}${field ? ` ${field}` : ''}`);
  return row;
}

/** The role an RPC needs. Throws (a programming error) when the table has no row for it. */
export function rpcRole(service: ManagedService, rpc: string): RoleNeeded {
  return rowOf(service, rpc, undefined).role;
}

/** The role setting `field` of `rpc`'s request needs besides the RPC's. Throws when the table has no row for it. */
export function fieldRole(service: ManagedService, rpc: string, field: string): Role {
  const role = rowOf(service, rpc, field).role;
  if (role === 'none') throw new Error(`management-roles: ${service}.${rpc} ${field} changes state and needs a role`);
  return role;
}

/** The table as Markdown (the README's copy between `<!-- roles:start -->` and `<!-- roles:end -->`). */
export function rolesTableMarkdown(): string {
  const lines = ['| RPC | when | role | what it changes |', '| --- | --- | --- | --- |'];
  for (const r of MANAGEMENT_ROLES) {
    const when = r.field ? `\`${r.field}\` set` : 'any call';
    const role = r.role === 'none' ? 'none' : r.field ? `\`${r.role}\` as well` : `\`${r.role}\``;
    lines.push(`| ${r.service} \`${r.rpc}\` | ${when} | ${role} | ${r.changes} |`);
  }
  return lines.join('\n');
}
