/**
 * Turns parsed reference rows into the FeatureProfiles of a ReferenceProfile.
 * Moments (mean, stddev, min, max) are exact over every row; bins and
 * quantiles come from a uniform sample of at most 100,000 rows, so memory
 * stays bounded whatever the file holds.
 */
import { MomentsAccumulator, profileFeature } from '../../libs/stats/index.js';
import type { FeatureProfile } from '../../libs/proto/index.js';

/** Rows kept for bins and quantiles (fewer when rows are wide: at most 16 M values in all). */
export const SAMPLE_ROWS = 100_000;
const MAX_SAMPLE_VALUES = 16_000_000;

/**
 * A uniform sample of the reference rows (reservoir sampling, seeded so the
 * same file gives the same profile) plus exact moments of the first
 * `features` values of every row. Values are profiled as float32, as the
 * routers' sample summaries carry them.
 */
export class ReferenceSample {
  rows = 0;
  private readonly kept: Float64Array[] = [];
  private readonly moments: MomentsAccumulator[];
  private readonly capacity: number;
  private readonly random = seeded(0x5eed);

  constructor(private readonly features: number, width: number, capacity = SAMPLE_ROWS) {
    this.moments = Array.from({ length: features }, () => new MomentsAccumulator());
    this.capacity = Math.max(1, Math.min(capacity, Math.floor(MAX_SAMPLE_VALUES / Math.max(1, width))));
  }

  /** Takes one row (copied when kept). */
  add(row: Float64Array): void {
    this.rows++;
    for (let j = 0; j < this.features; j++) this.moments[j]!.add(Math.fround(row[j]!));
    if (this.kept.length < this.capacity) this.kept.push(row.slice());
    else {
      const k = Math.floor(this.random() * this.rows);
      if (k < this.capacity) this.kept[k]!.set(row);
    }
  }

  /** Profiles of the first `features` values, named by `names`. */
  featureProfiles(names: readonly string[]): FeatureProfile[] {
    const column = new Float64Array(this.kept.length);
    return this.moments.map((m, j) => {
      for (let r = 0; r < this.kept.length; r++) column[r] = Math.fround(this.kept[r]![j]!);
      return profileFeature(names[j]!, column, m.result());
    });
  }

  /** At most `max` of the kept rows, chosen uniformly at random (partial Fisher–Yates on a copy of the list). */
  pick(max: number): Float64Array[] {
    const rows = [...this.kept];
    const n = Math.min(max, rows.length);
    for (let i = 0; i < n; i++) {
      const j = i + Math.floor(this.random() * (rows.length - i));
      [rows[i], rows[j]] = [rows[j]!, rows[i]!];
    }
    return rows.slice(0, n);
  }
}

/**
 * Profiles of output columns: `columns[j]` holds column j's value for each
 * run row (NaN where the model gave none). Non-finite values are left out;
 * a column with none left gets an empty profile (no bins), which the
 * monitor skips.
 */
export function outputProfiles(names: readonly string[], columns: readonly Float64Array[]): FeatureProfile[] {
  return columns.map((col, j) => {
    const finite = col.filter((v) => Number.isFinite(v)).map(Math.fround);
    return profileFeature(names[j]!, finite);
  });
}

/** mulberry32: small, seedable (Math.random cannot be seeded). */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
