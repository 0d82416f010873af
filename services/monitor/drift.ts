/**
 * Input and output drift per model version. Every sampled prediction (a
 * PredictionSample's input and output summaries: the flattened first-row
 * values, at most 32 each) joins a sliding window of its version. Each
 * feature and output column of the window is compared with a baseline:
 * the version's reference profile (computed by the registry at push, read
 * from the models bucket), or — when it has none — the live window of the
 * highest lower version that has at least `minSamples` samples, binned at
 * that window's deciles. Distances: PSI over the baseline's bins and the
 * Kolmogorov–Smirnov distance to the baseline's quantiles (libs/stats).
 * Feature values never leave this module except as these distances.
 */
import { checkName, parseModelKey } from '../../libs/bus/index.js';
import { ConfigError } from '../../libs/config/index.js';
import { NotFoundError } from '../../libs/errors/index.js';
import { unary } from '../../libs/grpc/index.js';
import {
  ReferenceProfile,
  VersionRecord,
  type FeatureDrift,
  type FeatureProfile,
  type GetDriftRequest,
  type GetDriftResponse,
  type MonitorServer,
  type SampleBatch,
  type TensorSpec,
} from '../../libs/proto/index.js';
import { ksDistance, profileFeature, psi } from '../../libs/stats/index.js';

export interface DriftSettings {
  /** Samples kept per model version (the newest). */
  readonly window: number;
  /** Samples in a window before its features can be `drifting`, and before it can serve as a later version's baseline. */
  readonly minSamples: number;
  /** PSI above this is drift. */
  readonly psiThreshold: number;
  /** KS distance above this is drift. */
  readonly ksThreshold: number;
}

/** Windows kept per model: the versions fed most recently. */
const MAX_VERSIONS_PER_MODEL = 16;

type Kind = 'inputs' | 'outputs';

interface Entry {
  inputs: number[];
  outputs: number[];
  /** The sample's segment value ('' = none). */
  segment: string;
}

/** Segments reported per version window (the most frequent). */
const MAX_SEGMENTS = 20;

/** A version's newest samples (a ring of at most `capacity`). */
class VersionWindow {
  private readonly ring: Entry[] = [];
  private next = 0;
  /** Bumped on every change, so derived results can be cached. */
  revision = 0;
  lastFed = 0;
  /** Rows computed against a baseline, by window revision, baseline and segment (cleared when either changes). */
  rows: { key: string; bySegment: Map<string, FeatureDrift[]> } | null = null;
  /** This window's own profile when it serves as a later version's baseline. */
  asBaseline: { key: string; features: FeatureProfile[]; outputs: FeatureProfile[] } | null = null;

  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.ring.length;
  }

  add(e: Entry, at: number): void {
    if (this.ring.length < this.capacity) this.ring.push(e);
    else {
      this.ring[this.next] = e;
      this.next = (this.next + 1) % this.capacity;
    }
    this.revision++;
    this.lastFed = at;
  }

  /** Columns present in the window: the longest summary seen. */
  width(kind: Kind): number {
    let w = 0;
    for (const e of this.ring) if (e[kind].length > w) w = e[kind].length;
    return w;
  }

  /** The finite values of column `j` (of one segment's samples when `segment` is given), sorted ascending. */
  column(kind: Kind, j: number, segment?: string): Float64Array {
    const out = new Float64Array(this.ring.length);
    let n = 0;
    for (const e of this.ring) {
      if (segment !== undefined && e.segment !== segment) continue;
      const v = e[kind][j];
      if (v !== undefined && Number.isFinite(v)) out[n++] = v;
    }
    return out.subarray(0, n).sort();
  }

  /** Samples per segment value (non-empty values only), the most frequent first, at most MAX_SEGMENTS. */
  segments(): [string, number][] {
    const counts = new Map<string, number>();
    for (const e of this.ring) if (e.segment !== '') counts.set(e.segment, (counts.get(e.segment) ?? 0) + 1);
    return [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, MAX_SEGMENTS);
  }
}

interface Baseline {
  /** `reference` or `version:<n>`. */
  label: string;
  /** Identifies the baseline's content, for the row cache. */
  key: string;
  features: FeatureProfile[];
  outputs: FeatureProfile[];
}

/**
 * Sliding windows of sampled predictions per model version, the reference
 * profiles and version signatures from the models bucket, and the drift of
 * each window against its baseline.
 */
export class DriftTracker {
  private readonly windows = new Map<string, Map<number, VersionWindow>>();
  private readonly references = new Map<string, Map<number, { profile: ReferenceProfile; seq: number }>>();
  private readonly specs = new Map<string, Map<number, { inputs: TensorSpec[]; outputs: TensorSpec[] }>>();
  /** Bumped on every reference or signature change (names and baselines derived from them are cached). */
  private seq = 0;

  /** Throws ConfigError when minSamples exceeds the window. */
  constructor(readonly settings: DriftSettings, private readonly now: () => number = Date.now) {
    if (settings.minSamples > settings.window) {
      throw new ConfigError(`--drift-min-samples (INFERMESH_DRIFT_MIN_SAMPLES)=${settings.minSamples}: must be at most --drift-window (${settings.window})`);
    }
  }

  /**
   * Takes the successful, summarized samples of one batch (a sample-feed
   * listener; never throws). Replayed batches rebuild the windows a restart
   * lost: a window keeps its version's newest samples however old they are.
   */
  add(batch: SampleBatch): void {
    // The router's time, so that replayed batches rank versions by recency as they did live.
    const at = batch.endMs > 0 ? batch.endMs : this.now();
    for (const s of batch.samples) {
      if (s.code !== 0 || s.version === 0 || (s.inputSummary.length === 0 && s.outputSummary.length === 0)) continue;
      let byVersion = this.windows.get(batch.name);
      if (!byVersion) this.windows.set(batch.name, (byVersion = new Map()));
      let w = byVersion.get(s.version);
      if (!w) {
        if (byVersion.size >= MAX_VERSIONS_PER_MODEL) evictStalest(byVersion);
        byVersion.set(s.version, (w = new VersionWindow(this.settings.window)));
      }
      w.add({ inputs: s.inputSummary, outputs: s.outputSummary, segment: s.segment ?? '' }, at);
    }
  }

  /**
   * Follows the models bucket: `<model>.ref.<version>` (reference profiles)
   * and `<model>.v.<version>` (signatures, for naming features of versions
   * without a profile). Other keys and undecodable values are ignored.
   */
  applyModelKey(key: string, value: Uint8Array | null): void {
    const k = parseModelKey(key);
    if (k?.kind !== 'reference' && k?.kind !== 'version') return;
    try {
      if (k.kind === 'reference') {
        const profile = value && value.length ? ReferenceProfile.decode(value) : null;
        setIn(this.references, k.name, k.version, profile ? { profile, seq: this.seq + 1 } : null);
      } else {
        const rec = value && value.length ? VersionRecord.decode(value) : null;
        setIn(this.specs, k.name, k.version, rec ? { inputs: rec.inputs, outputs: rec.outputs } : null);
        if (!rec) this.windows.get(k.name)?.delete(k.version);
      }
      this.seq++;
    } catch {
      // A value this monitor cannot decode: no profile or names for that version.
    }
  }

  /** Whether any sample of `name` was taken. */
  has(name: string): boolean {
    return (this.windows.get(name)?.size ?? 0) > 0;
  }

  /**
   * Drift of every feature and output column of `name`'s windows (all
   * models when `name` is omitted; one version when `version` is not 0):
   * drifting rows first, then by how far past its threshold the worse of
   * PSI and KS is. A version without a baseline has no rows.
   */
  report(name?: string, version = 0, bySegment = false): FeatureDrift[] {
    const out: FeatureDrift[] = [];
    const names = name === undefined ? [...this.windows.keys()] : [name];
    for (const n of names) {
      const byVersion = this.windows.get(n);
      if (!byVersion) continue;
      for (const [v, w] of byVersion) {
        if (version !== 0 && v !== version) continue;
        out.push(...this.rowsOf(n, v, w, byVersion));
        if (bySegment) for (const [segment, count] of w.segments()) out.push(...this.rowsOf(n, v, w, byVersion, segment, count));
      }
    }
    const { psiThreshold: pt, ksThreshold: kt } = this.settings;
    const severity = (f: FeatureDrift) => Math.max(ratio(f.psi, pt), ratio(f.ks, kt));
    return out.sort(
      (a, b) =>
        Number(b.drifting) - Number(a.drifting) ||
        severity(b) - severity(a) ||
        a.name.localeCompare(b.name) ||
        a.version - b.version ||
        a.segment.localeCompare(b.segment) ||
        a.feature.localeCompare(b.feature),
    );
  }

  /**
   * Drift rows of a version's window, or of one segment's samples in it
   * (`segment`, `count` samples) against the same baseline.
   */
  private rowsOf(name: string, version: number, w: VersionWindow, byVersion: Map<number, VersionWindow>, segment?: string, count = w.size): FeatureDrift[] {
    const base = this.baselineOf(name, version, byVersion);
    if (!base || w.size === 0) return [];
    const key = `${w.revision}|${base.key}`;
    if (w.rows?.key !== key) w.rows = { key, bySegment: new Map() };
    const cached = w.rows.bySegment.get(segment ?? '\u0000all');
    if (cached) return cached;
    const { minSamples, psiThreshold, ksThreshold } = this.settings;
    const rows: FeatureDrift[] = [];
    const compare = (kind: Kind, profiles: FeatureProfile[]) =>
      profiles.forEach((p, j) => {
        if (p.fractions.length === 0) return;
        const values = w.column(kind, j, segment);
        if (values.length === 0) return;
        const d = psi(p.edges, p.fractions, values);
        const ks = ksDistance(values, p.quantiles);
        rows.push({
          name,
          version,
          feature: kind === 'outputs' ? `output:${p.name}` : p.name,
          psi: d,
          ks,
          window: count,
          baseline: base.label,
          drifting: count >= minSamples && (d > psiThreshold || ks > ksThreshold),
          segment: segment ?? '',
        });
      });
    compare('inputs', base.features);
    compare('outputs', base.outputs);
    w.rows.bySegment.set(segment ?? '\u0000all', rows);
    return rows;
  }

  /** The version's reference profile, else the highest lower version's window with at least minSamples samples. */
  private baselineOf(name: string, version: number, byVersion: Map<number, VersionWindow>): Baseline | null {
    const ref = this.references.get(name)?.get(version);
    if (ref) return { label: 'reference', key: `ref:${ref.seq}`, features: ref.profile.features, outputs: ref.profile.outputs };
    let prev = 0;
    for (const [v, w] of byVersion) if (v < version && v > prev && w.size >= this.settings.minSamples) prev = v;
    if (prev === 0) return null;
    const pw = byVersion.get(prev)!;
    const key = `v${prev}:${pw.revision}:${version}:${this.seq}`;
    if (pw.asBaseline?.key !== key) {
      const profiles = (kind: Kind, names: string[]) => Array.from({ length: pw.width(kind) }, (_, j) => profileFeature(names[j]!, pw.column(kind, j)));
      pw.asBaseline = {
        key,
        features: profiles('inputs', this.namesOf(name, version, prev, 'inputs', pw.width('inputs'))),
        outputs: profiles('outputs', this.namesOf(name, version, prev, 'outputs', pw.width('outputs'))),
      };
    }
    return { label: `version:${prev}`, key, features: pw.asBaseline.features, outputs: pw.asBaseline.outputs };
  }

  /** Names of the first `count` input (or output) columns of `name`'s newest known version (for exports). */
  columnNames(name: string, kind: Kind, count: number): string[] {
    let newest = 0;
    for (const v of [...(this.specs.get(name)?.keys() ?? []), ...(this.references.get(name)?.keys() ?? [])]) newest = Math.max(newest, v);
    return this.namesOf(name, newest, newest, kind, count);
  }

  /**
   * Names of the first `count` columns for a version compared with a
   * previous version's window: that version's reference names when it has a
   * profile, else `<tensor>[<i>]` from the version's signature, else
   * `input[<j>]` / `output[<j>]`.
   */
  private namesOf(name: string, version: number, baselineVersion: number, kind: Kind, count: number): string[] {
    const ref = this.references.get(name)?.get(baselineVersion)?.profile;
    const fromRef = ref ? (kind === 'inputs' ? ref.features : ref.outputs).map((p) => p.name) : [];
    const spec = this.specs.get(name)?.get(version) ?? this.specs.get(name)?.get(baselineVersion);
    const fromSpec = spec ? flatNames(kind === 'inputs' ? spec.inputs : spec.outputs, count) : [];
    const generic = kind === 'inputs' ? 'input' : 'output';
    return Array.from({ length: count }, (_, j) => fromRef[j] ?? fromSpec[j] ?? `${generic}[${j}]`);
  }
}

/**
 * The monitor's GetDrift. INVALID_ARGUMENT for a malformed (or empty) name,
 * NOT_FOUND for a model with no sampled predictions yet.
 */
export function driftHandlers(tracker: DriftTracker): Pick<MonitorServer, 'getDrift'> {
  return {
    getDrift: unary<GetDriftRequest, GetDriftResponse>(async (req) => {
      const name = checkName(req.name, 'name');
      if (!tracker.has(name)) throw new NotFoundError(`model ${name} has no sampled predictions yet`);
      return { features: tracker.report(name, req.version, req.bySegment) };
    }),
  };
}

/** `<tensor>[<i>]` for the first `count` flattened per-row values of `specs`, as far as their shapes are fixed. */
function flatNames(specs: readonly TensorSpec[], count: number): string[] {
  const names: string[] = [];
  for (const s of specs) {
    const rowDims = s.shape.length > 1 ? s.shape.slice(1) : [];
    if (rowDims.some((d) => d <= 0)) break;
    const perRow = rowDims.reduce((a, b) => a * b, 1);
    for (let i = 0; i < perRow && names.length < count; i++) names.push(`${s.name}[${i}]`);
  }
  return names;
}

function ratio(value: number, threshold: number): number {
  return threshold > 0 ? value / threshold : value > 0 ? Infinity : 0;
}

function evictStalest(byVersion: Map<number, VersionWindow>): void {
  let stalest: number | undefined;
  let at = Infinity;
  for (const [v, w] of byVersion) if (w.lastFed < at) [stalest, at] = [v, w.lastFed];
  if (stalest !== undefined) byVersion.delete(stalest);
}

function setIn<T>(m: Map<string, Map<number, T>>, name: string, version: number, value: T | null): void {
  let inner = m.get(name);
  if (value === null) {
    inner?.delete(version);
    if (inner?.size === 0) m.delete(name);
    return;
  }
  if (!inner) m.set(name, (inner = new Map()));
  inner.set(version, value);
}
