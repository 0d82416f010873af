/**
 * `infermesh models rollback|canary|shadow|history`: moving traffic between a
 * model's versions and reading what happened to it. Flag combinations are
 * checked before any call, so a usage error (exit 2) never reaches the registry.
 */
import { RegistryApi } from '../../libs/client/index.js';
import { ModelEvent_Kind, type ModelEvent, type ModelInfo } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { printJson, printText, remote, UsageError } from './output.js';
import { settleAliasMove } from './models.js';
import { renderTable } from './table.js';
import { aliases, canaryText, shadowText, trafficSummary } from './traffic.js';

export interface CanaryOptions extends GlobalOptions {
  weight?: string;
  keyHeader?: string;
  clear?: boolean;
  /** Why, kept in the lifecycle history (the registry records what changed when absent). */
  reason?: string;
}

export interface ShadowOptions extends GlobalOptions {
  percent?: string;
  clear?: boolean;
  reason?: string;
}

/** What a `models canary` invocation asks for. */
export type CanaryChange = { clear: true } | { clear: false; version: number; weightPercent: number; keyHeader: string };

/** What a `models shadow` invocation asks for. */
export type ShadowChange = { clear: true } | { clear: false; version: number; percent: number };

/**
 * Checks `models canary NAME [VERSION] --weight P [--key-header H] | --clear`.
 * Throws UsageError (exit 2) for a missing VERSION or --weight, a weight outside
 * (0, 100], or --clear combined with anything else.
 */
export function canaryChange(version: number | undefined, o: Pick<CanaryOptions, 'weight' | 'keyHeader' | 'clear'>): CanaryChange {
  if (o.clear) {
    if (version !== undefined || o.weight !== undefined || o.keyHeader !== undefined) throw new UsageError('--clear takes no VERSION, --weight or --key-header');
    return { clear: true };
  }
  if (version === undefined) throw new UsageError('missing VERSION (or --clear to remove the canary)');
  if (o.weight === undefined) throw new UsageError('missing --weight P (percent of production traffic, 0 < P <= 100), or --clear');
  // Metadata keys are case-insensitive on the wire; the registry stores them lower-case.
  const keyHeader = (o.keyHeader ?? '').trim().toLowerCase();
  if (o.keyHeader !== undefined && keyHeader === '') throw new UsageError('--key-header must name a request metadata key');
  return { clear: false, version, weightPercent: percent('--weight', o.weight), keyHeader };
}

/**
 * Checks `models shadow NAME [VERSION] [--percent P] | --clear` (P defaults to 100).
 * Throws UsageError (exit 2) for a missing VERSION, a percent outside (0, 100],
 * or --clear combined with anything else.
 */
export function shadowChange(version: number | undefined, o: Pick<ShadowOptions, 'percent' | 'clear'>): ShadowChange {
  if (o.clear) {
    if (version !== undefined || o.percent !== undefined) throw new UsageError('--clear takes no VERSION or --percent');
    return { clear: true };
  }
  if (version === undefined) throw new UsageError('missing VERSION (or --clear to remove the shadow)');
  return { clear: false, version, percent: o.percent === undefined ? 100 : percent('--percent', o.percent) };
}

/** `models rollback NAME`: points the alias (default production) back at its previous target. */
export async function rollbackCommand(name: string, o: GlobalOptions & { alias: string; reason?: string }): Promise<void> {
  const api = new RegistryApi(o.registry);
  try {
    // Read first only to say what the alias pointed at; the rollback itself is one atomic call.
    const before = await remote('registry', o.registry, () => api.get(name));
    // A rollback moves the alias to the last version of its history; a lost answer is settled by reading it again.
    const back = (b: ModelInfo | null) => b?.traffic?.history[o.alias]?.versions.at(-1);
    const { info: after, lost } = await settleAliasMove(api, o.registry, name, o.alias, back, () => api.rollback(name, o.alias, o.reason ?? ''), 'rolled back', before);
    const was = aliases(before)[o.alias];
    const now = aliases(after)[o.alias];
    if (o.json) {
      printJson({ ...trafficSummary(after), alias: o.alias, version: now ?? null, previous: was ?? null, ...(lost ? { confirmedAfterLostAnswer: lost } : {}) });
      return;
    }
    printText(`${name}: ${o.alias} → ${now ?? '-'}${was ? ` (was ${was})` : ''}${lost ? ` — rolled back (confirmed after a lost answer: ${lost})` : ''}`);
  } finally {
    api.close();
  }
}

/**
 * `models unload NAME` / `models load NAME`: stops the model serving, or
 * lets it serve again (Registry.SetModelServing, what Triton's
 * RepositoryModelUnload and Load do through a router; `promote` role).
 * Replicas keep the versions warm: unload stops serving, it frees no memory.
 */
export async function servingCommand(name: string, serving: boolean, o: GlobalOptions & { reason?: string }): Promise<void> {
  const api = new RegistryApi(o.registry);
  try {
    const m = await remote('registry', o.registry, () => api.setServing(name, serving, o.reason ?? ''));
    const unloaded = m.traffic?.unloaded === true;
    if (o.json) {
      printJson({ ...trafficSummary(m), serving: !unloaded });
      return;
    }
    printText(unloaded ? `${name}: unloaded (every router answers UNAVAILABLE until \`models load ${name}\`; replicas keep it warm)` : `${name}: serving`);
  } finally {
    api.close();
  }
}

/** `models canary NAME VERSION --weight P [--key-header H]`, or `models canary NAME --clear`. */
export async function canaryCommand(name: string, version: number | undefined, o: CanaryOptions): Promise<void> {
  const change = canaryChange(version, o);
  const api = new RegistryApi(o.registry);
  try {
    const m = await remote('registry', o.registry, () =>
      change.clear ? api.clearCanary(name, o.reason ?? '') : api.setCanary(name, change.version, change.weightPercent, change.keyHeader, o.reason ?? ''),
    );
    if (o.json) {
      printJson(trafficSummary(m));
      return;
    }
    printText(change.clear ? `${name}: canary cleared` : `${name}: canary → ${canaryText(m) || `v${change.version}`}`);
  } finally {
    api.close();
  }
}

/** `models shadow NAME VERSION [--percent P]`, or `models shadow NAME --clear`. */
export async function shadowCommand(name: string, version: number | undefined, o: ShadowOptions): Promise<void> {
  const change = shadowChange(version, o);
  const api = new RegistryApi(o.registry);
  try {
    const m = await remote('registry', o.registry, () => (change.clear ? api.clearShadow(name, o.reason ?? '') : api.setShadow(name, change.version, change.percent, o.reason ?? '')));
    if (o.json) {
      printJson(trafficSummary(m));
      return;
    }
    printText(change.clear ? `${name}: shadow cleared` : `${name}: shadow → ${shadowText(m) || `v${change.version}`}`);
  } finally {
    api.close();
  }
}

/** `models history NAME`: the model's lifecycle events in the event stream's order (oldest first), one row each. */
export async function historyCommand(name: string, o: GlobalOptions): Promise<void> {
  const api = new RegistryApi(o.registry);
  try {
    const events = await remote('registry', o.registry, () => api.history(name));
    if (o.json) {
      printJson({ events: events.map(eventJson) });
      return;
    }
    if (events.length === 0) {
      printText(`no events recorded for ${name}`);
      return;
    }
    printText(
      renderTable(
        ['TIME', 'VERSION', 'EVENT', 'ALIAS', 'REPLICA', 'REASON', 'ACTOR'],
        events.map((e) => [time(e), e.version ? String(e.version) : '-', kindName(e.kind), e.alias || '-', e.replicaId || '-', e.reason || '-', e.actor || '-']),
        ['left', 'right', 'left', 'left', 'left', 'left', 'left'],
      ),
    );
  } finally {
    api.close();
  }
}

/** `rolled_back` for ROLLED_BACK; `unknown` for a kind this build does not know. */
export function kindName(kind: ModelEvent_Kind): string {
  const n = ModelEvent_Kind[kind] as string | undefined;
  return n && kind !== ModelEvent_Kind.UNRECOGNIZED ? n.toLowerCase() : 'unknown';
}

function eventJson(e: ModelEvent) {
  return {
    name: e.name,
    version: e.version,
    kind: kindName(e.kind),
    alias: e.alias,
    replicaId: e.replicaId,
    reason: e.reason,
    at: e.atMs ? new Date(e.atMs).toISOString() : null,
    atMs: e.atMs,
    actor: e.actor,
  };
}

function time(e: ModelEvent): string {
  return e.atMs ? new Date(e.atMs).toISOString() : '-';
}

/** A percentage in (0, 100] from a flag's text. */
function percent(flag: string, raw: string): number {
  const n = Number(raw);
  if (!/^\s*\d+(\.\d+)?\s*$/.test(raw) || !(n > 0 && n <= 100)) throw new UsageError(`${flag} must be a number in (0, 100], got ${JSON.stringify(raw)}`);
  return n;
}
