/** `infermesh models push|list|show|promote`: the registry's management API for people and scripts (rollback, canary, shadow, history: lifecycle.ts). */
import { readFile } from 'node:fs/promises';
import { RegistryApi } from '../../libs/client/index.js';
import { isServiceError, Status } from '../../libs/errors/index.js';
import type { ModelInfo, TensorSpec, VersionRecord } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { CliError, UsageError, printJson, printText, remote } from './output.js';
import { formatBytes, renderFields, renderTable } from './table.js';
import { aliases, aliasesText, canaryJson, canaryText, shadowJson, shadowText } from './traffic.js';
import { parseTags } from './optimize.js';

/** Options of `models list` / `models show`: versions carrying every KEY=VALUE of --tag. */
export interface TagFilter {
  tag?: string[];
}

/** Whether `v` carries every tag of `want`. */
function tagged(v: VersionRecord, want: Record<string, string>): boolean {
  return Object.entries(want).every(([k, x]) => v.tags[k] === x);
}

/** `int8 of 1 (agreement 99.60%)`, `pipeline of a@1 → b@2`, or '-' for a pushed file. */
export function lineageText(v: VersionRecord): string {
  const l = v.lineage;
  if (!l) return '-';
  const from = l.derivedFrom.map((d) => (d.name === v.name ? String(d.version) : `${d.name}@${d.version}`)).join(l.method === 'pipeline' ? ' → ' : ', ');
  const gate = l.gate ? ` (agreement ${(l.gate.agreement * 100).toFixed(2)}%, max abs diff ${l.gate.maxAbsDiff.toPrecision(3)}${l.gate.forced ? ', forced' : ''})` : '';
  return `${l.method} of ${from}${gate}`;
}

function tagsText(v: VersionRecord): string {
  return Object.entries(v.tags).map(([k, x]) => `${k}=${x}`).sort().join(' ') || '-';
}

export interface PushOptions extends GlobalOptions {
  name: string;
  alias?: string;
  description?: string;
  maxBatch?: number;
  maxQueueDelayUs?: number;
  replicas?: number;
  cache?: number;
  /** CSV or JSON-lines reference rows profiled for drift. */
  reference?: string;
  /** Wait up to this many seconds until the router serves the new version. */
  wait?: number;
  /** `csv` or `jsonl`; default from the reference file's extension. */
  referenceFormat?: string;
  /** Request parameter that segments evaluation and drift. */
  segmentBy?: string;
  /** Cost model: cost of a false positive, of a false negative, value of a true positive. */
  costFp?: number;
  costFn?: number;
  valueTp?: number;
  /** KEY=VALUE tags of the new version. */
  tag?: string[];
}

/** The push header's fields as the flags that set them: the registry names `header.name`, the user typed `--name`. */
const HEADER_FLAGS: Record<string, string> = { name: '--name', alias: '--alias', description: '--description', segment_by: '--segment-by', replicas: '--replicas', cache_entries: '--cache' };

/** An INVALID_ARGUMENT about `header.<field>` reworded to name the flag. */
function asFlagError(err: unknown): unknown {
  if (!isServiceError(err) || err.code !== Status.INVALID_ARGUMENT) return err;
  const m = /^header\.([a-z_]+)(:.*)$/s.exec(err.details);
  const flag = m ? HEADER_FLAGS[m[1]!] : undefined;
  return flag ? new UsageError(`${flag}${m![2]}`) : err;
}

/** `models push FILE`: uploads an ONNX file as the next version of `--name`. */
export async function pushCommand(file: string, o: PushOptions): Promise<void> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new CliError('NOT_FOUND', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const ref = o.reference !== undefined ? await readReference(o.reference, o.referenceFormat) : undefined;
  const batching = o.maxBatch !== undefined || o.maxQueueDelayUs !== undefined ? { maxBatchSize: o.maxBatch ?? 0, maxQueueDelayMicros: o.maxQueueDelayUs ?? 0 } : undefined;
  const cost = o.costFp !== undefined || o.costFn !== undefined || o.valueTp !== undefined ? { costFp: o.costFp ?? 0, costFn: o.costFn ?? 0, valueTp: o.valueTp ?? 0 } : undefined;
  const api = new RegistryApi(o.registry);
  try {
    const v = await remote('registry', o.registry, () =>
      api.push(bytes, { name: o.name, alias: o.alias ?? '', description: o.description ?? '', batching, replicas: o.replicas ?? 0, cacheEntries: o.cache ?? 0, segmentBy: o.segmentBy ?? '', cost, tags: parseTags(o.tag), ...ref }),
    ).catch((err: unknown) => {
      throw asFlagError(err);
    });
    if (o.wait !== undefined) await (await import('./wait-ready.js')).waitServed(o.router, v.name, v.version, o.wait);
    if (o.json) {
      printJson({ name: v.name, version: v.version, sha256: v.sha256, sizeBytes: v.sizeBytes, inputs: specsJson(v.inputs), outputs: specsJson(v.outputs), batchable: v.batchable, ...(o.alias ? { alias: o.alias } : {}), ...(ref ? { reference: o.reference } : {}) });
      return;
    }
    printText(
      renderFields([
        ['name', v.name],
        ['version', String(v.version)],
        ['sha256', v.sha256],
        ['size', formatBytes(v.sizeBytes)],
        ['inputs', specsText(v.inputs)],
        ['outputs', specsText(v.outputs)],
        ['batchable', v.batchable ? 'yes' : 'no'],
        ...(ref ? ([['reference', `${o.reference} (profiled for drift)`]] as [string, string][]) : []),
        ...(o.alias ? ([['alias', `${o.alias} → ${v.version}`]] as [string, string][]) : []),
      ]),
    );
  } finally {
    api.close();
  }
}

/**
 * Reads a reference file; its format is `format` (csv or jsonl), else the
 * file's extension (.csv; .jsonl, .ndjson). A usage error when neither says.
 */
async function readReference(file: string, format: string | undefined): Promise<{ reference: Uint8Array; referenceFormat: string }> {
  const ext = /\.(csv|jsonl|ndjson)$/i.exec(file)?.[1]?.toLowerCase();
  const referenceFormat = format ?? (ext === 'ndjson' ? 'jsonl' : ext);
  if (referenceFormat !== 'csv' && referenceFormat !== 'jsonl') {
    throw new UsageError(format !== undefined ? `--reference-format must be csv or jsonl, not ${format}` : `cannot tell the format of ${file} from its extension; add --reference-format csv|jsonl`);
  }
  try {
    return { reference: await readFile(file), referenceFormat };
  } catch (err) {
    throw new CliError('NOT_FOUND', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** `models list`: every model with its versions and aliases. */
export async function listCommand(o: GlobalOptions & TagFilter): Promise<void> {
  const want = parseTags(o.tag);
  const api = new RegistryApi(o.registry);
  try {
    const all = await remote('registry', o.registry, () => api.list());
    // With --tag: the models that have a version carrying the tags, counting those versions only.
    const models = (o.tag?.length ? all.map((m) => ({ ...m, versions: m.versions.filter((v) => tagged(v, want)) })).filter((m) => m.versions.length > 0) : all);
    models.sort((a, b) => a.name.localeCompare(b.name));
    if (o.json) {
      printJson({
        models: models.map((m) => ({ name: m.name, versions: m.versions.map((v) => v.version), archived: m.versions.filter((v) => v.archived).map((v) => v.version), latest: latest(m), aliases: aliases(m) })),
      });
      return;
    }
    if (models.length === 0) {
      printText('no models yet (push one with: infermesh models push FILE --name NAME)');
      return;
    }
    printText(
      renderTable(
        ['MODEL', 'VERSIONS', 'LATEST', 'ALIASES'],
        models.map((m) => {
          const archived = m.versions.filter((v) => v.archived).length;
          return [m.name, `${m.versions.length - archived}${archived ? ` (+${archived} archived)` : ''}`, String(latest(m) || '-'), aliasesText(m) || '-'];
        }),
      ),
    );
  } finally {
    api.close();
  }
}

/** `models show NAME`: versions (sha256 prefix, created, inputs/outputs), aliases, canary and shadow. */
export async function showCommand(name: string, o: GlobalOptions & TagFilter): Promise<void> {
  const want = parseTags(o.tag);
  const api = new RegistryApi(o.registry);
  try {
    const m = await remote('registry', o.registry, () => api.get(name));
    const versions = [...m.versions].filter((v) => tagged(v, want)).sort((a, b) => a.version - b.version);
    if (o.json) {
      printJson({ name: m.name, aliases: aliases(m), canary: canaryJson(m), shadow: shadowJson(m), versions: versions.map(versionJson) });
      return;
    }
    const byVersion = new Map<number, string[]>();
    for (const [alias, v] of Object.entries(aliases(m))) byVersion.set(v, [...(byVersion.get(v) ?? []), alias]);
    printText(`model ${m.name}  aliases: ${aliasesText(m) || '-'}`);
    const canary = canaryText(m);
    if (canary) printText(`canary: ${canary}`);
    const shadow = shadowText(m);
    if (shadow) printText(`shadow: ${shadow}`);
    printText(
      renderTable(
        ['VERSION', 'SHA256', 'SIZE', 'CREATED', 'INPUTS', 'OUTPUTS', 'ALIASES', 'TAGS', 'LINEAGE'],
        versions.map((v) => [
          String(v.version),
          v.sha256.slice(0, 12),
          formatBytes(v.sizeBytes),
          created(v),
          specsText(v.inputs),
          specsText(v.outputs),
          [...(byVersion.get(v.version) ?? []).sort(), ...(v.archived ? ['(archived)'] : [])].join(',') || '-',
          tagsText(v),
          lineageText(v),
        ]),
        ['right', 'left', 'right', 'left', 'left', 'left', 'left', 'left', 'left'],
      ),
    );
  } finally {
    api.close();
  }
}

/** `models promote NAME VERSION [--reason TEXT]`: points an alias (default production) at VERSION. */
export async function promoteCommand(name: string, version: number, o: GlobalOptions & { alias: string; reason?: string }): Promise<void> {
  const api = new RegistryApi(o.registry);
  try {
    const before = await remote('registry', o.registry, () => api.get(name));
    const previous = aliases(before)[o.alias] ?? 0;
    // Compare-and-set against what was just read, so a concurrent promote is not silently overwritten.
    const { info: after, lost } = await settleAliasMove(api, o.registry, name, o.alias, () => version, () => api.setAlias(name, version, o.alias, previous, o.reason ?? ''), 'promoted');
    const now = aliases(after)[o.alias] ?? version;
    if (o.json) {
      printJson({ name, alias: o.alias, version: now, previous: previous || null, ...(lost ? { confirmedAfterLostAnswer: lost } : {}) });
      return;
    }
    printText(`${name}: ${o.alias} → ${now}${previous ? ` (was ${previous})` : ''}${lost ? ` — promoted (confirmed after a lost answer: ${lost})` : ''}`);
  } finally {
    api.close();
  }
}

function latest(m: ModelInfo): number {
  return m.versions.reduce((a, v) => Math.max(a, v.version), 0);
}

function created(v: VersionRecord): string {
  return v.createdAtMs ? new Date(v.createdAtMs).toISOString().replace(/\.\d{3}Z$/, 'Z') : '-';
}

function specsJson(specs: readonly TensorSpec[]): { name: string; datatype: string; shape: number[] }[] {
  return specs.map((s) => ({ name: s.name, datatype: s.datatype, shape: [...s.shape] }));
}

/** `features FP32[-1,8]`, comma-separated. */
export function specsText(specs: readonly TensorSpec[]): string {
  return specs.map((s) => `${s.name} ${s.datatype}[${s.shape.join(',')}]`).join(', ');
}

function versionJson(v: VersionRecord) {
  return {
    version: v.version,
    sha256: v.sha256,
    sizeBytes: v.sizeBytes,
    createdAt: v.createdAtMs ? new Date(v.createdAtMs).toISOString() : null,
    createdBy: v.createdBy,
    description: v.description,
    inputs: specsJson(v.inputs),
    outputs: specsJson(v.outputs),
    batchable: v.batchable,
    batching: v.batching ? { maxBatchSize: v.batching.maxBatchSize, maxQueueDelayMicros: v.batching.maxQueueDelayMicros } : null,
    replicas: v.replicas || null,
    cacheEntries: v.cacheEntries || null,
    segmentBy: v.segmentBy || null,
    cost: v.cost ? { costFp: v.cost.costFp, costFn: v.cost.costFn, valueTp: v.cost.valueTp } : null,
    tags: { ...v.tags },
    archived: v.archived,
    lineage: v.lineage
      ? {
          operation: v.lineage.operation,
          method: v.lineage.method,
          derivedFrom: v.lineage.derivedFrom.map((d) => ({ name: d.name, version: d.version })),
          gate: v.lineage.gate
            ? { rows: v.lineage.gate.rows, source: v.lineage.gate.source, maxAbsDiff: v.lineage.gate.maxAbsDiff, meanAbsDiff: v.lineage.gate.meanAbsDiff, agreement: v.lineage.gate.agreement, decision: v.lineage.gate.decision, forced: v.lineage.gate.forced }
            : null,
        }
      : null,
  };
}

/** How long the outcome of a move whose answer was lost is re-read before it is reported unknown. */
const SETTLE_MS = 20_000;

/**
 * Runs `move`, an alias move. When its answer is lost — DEADLINE_EXCEEDED or
 * UNAVAILABLE (the registry or its NATS went away mid-call, or the registry
 * said the change may or may not have been stored) — the change may have
 * happened all the same: the model is read again (retried until the registry
 * answers, for up to {@link SETTLE_MS}) and the true outcome reported. `lost`
 * names the lost answer when the alias was found at `target` (moved after all);
 * else a CliError says it was not moved, and where the alias points.
 */
export async function settleAliasMove(
  api: RegistryApi,
  address: string,
  name: string,
  alias: string,
  target: (before: ModelInfo | null) => number | undefined,
  move: () => Promise<ModelInfo>,
  verb: string,
  before: ModelInfo | null = null,
): Promise<{ info: ModelInfo; lost: string | null }> {
  try {
    // Not through remote(): a lost answer is no connection trouble to diagnose (the model was just read).
    return { info: await move(), lost: null };
  } catch (err) {
    if (!isServiceError(err) || (err.code !== Status.DEADLINE_EXCEEDED && err.code !== Status.UNAVAILABLE)) throw err;
    const code = Status[err.code]!;
    const lost = `${code}: ${err.details.slice(0, 160)}`;
    const want = target(before);
    const until = Date.now() + SETTLE_MS;
    for (;;) {
      try {
        const info = await api.get(name);
        const now = aliases(info)[alias];
        if (want !== undefined && now === want) return { info, lost };
        throw new CliError(code, `${name}: ${alias} not ${verb}: the registry's answer was lost (${lost}), and ${alias} ${now ? `still points at version ${now}` : 'is not set'}`);
      } catch (readErr) {
        if (readErr instanceof CliError) throw readErr;
        if (Date.now() > until) {
          throw new CliError(code, `${name}: whether ${alias} was ${verb} is unknown: the registry's answer was lost (${lost}) and it could not be read again for ${SETTLE_MS / 1000} s; read it with: infermesh models show ${name}`);
        }
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
  }
}
