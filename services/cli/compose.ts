/**
 * `infermesh models compose NAME --pipeline A[@v] B[@v] …` and
 * `--ensemble mean|weighted=W1,W2,…|max|vote A B …`: the registry builds one
 * ONNX graph from registered versions and stores it as the next version of
 * NAME, with lineage to its parts. One session serves it: no extra hop.
 */
import { RegistryApi } from '../../libs/client/index.js';
import type { GlobalOptions } from './addresses.js';
import { UsageError, printJson, printText, remote } from './output.js';
import { parseTags } from './optimize.js';
import { formatBytes, renderFields } from './table.js';
import { specsText } from './models.js';

export interface ComposeOptions extends GlobalOptions {
  pipeline?: boolean;
  ensemble?: string;
  map?: string[];
  threshold?: string;
  tag?: string[];
  description?: string;
}

/** `name@3` → {name, version 3}; `name` → version 0 (production alias, else newest). */
export function parsePart(raw: string): { name: string; version: number } {
  const m = /^([a-z0-9][a-z0-9_-]{0,62})(?:@(\d+))?$/.exec(raw);
  if (!m) throw new UsageError(`part must be NAME or NAME@VERSION, not ${raw}`);
  return { name: m[1]!, version: m[2] ? Number(m[2]) : 0 };
}

/** `mean`, `max`, `vote`, `weighted=0.5,0.3,0.2` → combine and weights. */
export function parseCombine(raw: string, parts: number): { combine: string; weights: number[] } {
  const m = /^(mean|max|vote|weighted)(?:=(.+))?$/.exec(raw);
  if (!m || (m[2] !== undefined) !== (m[1] === 'weighted')) throw new UsageError(`--ensemble must be mean, max, vote or weighted=W1,W2,…, not ${raw}`);
  const weights = m[2] === undefined ? [] : m[2].split(',').map(Number);
  if (m[1] === 'weighted' && (weights.length !== parts || !weights.every((w) => Number.isFinite(w) && w >= 0))) throw new UsageError(`weighted= needs ${parts} numbers ≥ 0, one per part`);
  return { combine: m[1]!, weights };
}

export async function composeCommand(name: string, partArgs: string[], o: ComposeOptions): Promise<void> {
  if (!!o.pipeline === (o.ensemble !== undefined)) throw new UsageError('give exactly one of --pipeline or --ensemble COMBINE');
  if (partArgs.length < 2) throw new UsageError('name at least two parts (NAME or NAME@VERSION)');
  if (o.map?.length && !o.pipeline) throw new UsageError('--map applies to --pipeline only');
  const parts = partArgs.map(parsePart);
  const { combine, weights } = o.ensemble !== undefined ? parseCombine(o.ensemble, parts.length) : { combine: '', weights: [] };
  const threshold = o.threshold === undefined ? 0 : Number(o.threshold);
  if (!Number.isFinite(threshold)) throw new UsageError(`--threshold must be a number, not ${o.threshold}`);
  const api = new RegistryApi(o.registry);
  try {
    const v = await remote('registry', o.registry, () =>
      api.compose({ name, mode: o.pipeline ? 'pipeline' : 'ensemble', parts, combine, weights, maps: o.map ?? [], threshold, tags: parseTags(o.tag), description: o.description ?? '' }),
    );
    const from = v.lineage?.derivedFrom.map((d) => `${d.name}@${d.version}`) ?? [];
    if (o.json) {
      printJson({ name: v.name, version: v.version, method: v.lineage?.method ?? '', derivedFrom: from, sha256: v.sha256, sizeBytes: v.sizeBytes, inputs: v.inputs.map((s) => ({ name: s.name, datatype: s.datatype, shape: [...s.shape] })), outputs: v.outputs.map((s) => ({ name: s.name, datatype: s.datatype, shape: [...s.shape] })) });
      return;
    }
    printText(
      renderFields([
        ['name', v.name],
        ['version', String(v.version)],
        ['method', v.lineage?.method ?? ''],
        ['from', from.join(o.pipeline ? ' → ' : ', ')],
        ['size', formatBytes(v.sizeBytes)],
        ['inputs', specsText(v.inputs)],
        ['outputs', specsText(v.outputs)],
      ]),
    );
  } finally {
    api.close();
  }
}
