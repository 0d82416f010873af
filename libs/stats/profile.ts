import type { FeatureProfile } from '../proto/index.js';

/** Bins of a continuous feature: its deciles. */
export const PROFILE_BINS = 10;
/** Most values kept in a profile's `quantiles` (for the KS distance). */
export const PROFILE_QUANTILES = 500;

/** Mean, standard deviation (population), min and max of a set of values. */
export interface Moments {
  count: number;
  mean: number;
  stddev: number;
  min: number;
  max: number;
}

/**
 * Running moments (Welford), for when the values are streamed and not all
 * kept. Empty: count 0, every field 0.
 */
export class MomentsAccumulator {
  private n = 0;
  private mu = 0;
  private m2 = 0;
  private lo = Infinity;
  private hi = -Infinity;

  add(x: number): void {
    this.n++;
    const d = x - this.mu;
    this.mu += d / this.n;
    this.m2 += d * (x - this.mu);
    if (x < this.lo) this.lo = x;
    if (x > this.hi) this.hi = x;
  }

  result(): Moments {
    if (this.n === 0) return { count: 0, mean: 0, stddev: 0, min: 0, max: 0 };
    return { count: this.n, mean: this.mu, stddev: Math.sqrt(this.m2 / this.n), min: this.lo, max: this.hi };
  }
}

/**
 * Bin edges for `sorted` (ascending, finite, non-empty):
 * - more than 10 distinct values: the deciles `sorted[floor(k·n/10)]`,
 *   k = 1..9, deduplicated, without any edge equal to the minimum (which
 *   would leave bin 0 empty by construction); heavy ties give fewer bins;
 * - 2 to 10 distinct values (flags, counts, categories): one bin per value,
 *   edges at the midpoints between consecutive values;
 * - one value c: three bins, below / at / above c (edges c ± h, h = 1e-6·|c|
 *   or 1e-9 at 0), so a constant feature that moves shows up in PSI too.
 */
export function binEdges(sorted: ArrayLike<number>): number[] {
  const n = sorted.length;
  if (n === 0) return [];
  const distinct: number[] = [];
  for (let i = 0; i < n && distinct.length <= PROFILE_BINS; i++) {
    if (i === 0 || sorted[i] !== sorted[i - 1]) distinct.push(sorted[i]!);
  }
  if (distinct.length === 1) {
    const c = distinct[0]!;
    const h = c === 0 ? 1e-9 : Math.abs(c) * 1e-6;
    return [c - h, c + h];
  }
  if (distinct.length <= PROFILE_BINS) {
    const edges: number[] = [];
    for (let i = 1; i < distinct.length; i++) edges.push(distinct[i - 1]! + (distinct[i]! - distinct[i - 1]!) / 2);
    return edges;
  }
  const min = sorted[0]!;
  const edges: number[] = [];
  for (let k = 1; k < PROFILE_BINS; k++) {
    const e = sorted[Math.floor((k * n) / PROFILE_BINS)]!;
    if (e > min && e !== edges[edges.length - 1]) edges.push(e);
  }
  return edges;
}

/** The bin of `x`: how many edges are ≤ x (0 below the first edge, edges.length at or above the last). */
export function binOf(edges: readonly number[], x: number): number {
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (edges[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Share of `values` in each of the edges.length + 1 bins (all zero for no values). */
export function binFractions(edges: readonly number[], values: ArrayLike<number>): number[] {
  const counts = new Array<number>(edges.length + 1).fill(0);
  for (let i = 0; i < values.length; i++) counts[binOf(edges, values[i]!)]!++;
  return values.length === 0 ? counts : counts.map((c) => c / values.length);
}

/**
 * At most `max` values of `sorted` at evenly spaced ranks, first and last
 * included (all of them when there are no more than `max`).
 */
export function evenQuantiles(sorted: ArrayLike<number>, max = PROFILE_QUANTILES): number[] {
  const n = sorted.length;
  if (n <= max) return Array.from(sorted);
  const out = new Array<number>(max);
  for (let i = 0; i < max; i++) out[i] = sorted[Math.round((i * (n - 1)) / (max - 1))]!;
  return out;
}

/**
 * The profile of one feature from its values (finite numbers): decile bins
 * (see binEdges), the share of values per bin, up to 500 evenly spaced
 * quantiles, and the moments — of `values`, or `moments` when given (the
 * exact moments of a larger set of which `values` is a sample).
 * Does not modify `values`.
 */
export function profileFeature(name: string, values: ArrayLike<number>, moments?: Moments): FeatureProfile {
  const sorted = Float64Array.from(values).sort();
  const edges = binEdges(sorted);
  const m = moments ?? momentsOf(sorted);
  return {
    name,
    edges,
    fractions: sorted.length ? binFractions(edges, sorted) : [],
    quantiles: evenQuantiles(sorted),
    mean: m.mean,
    stddev: m.stddev,
    min: m.min,
    max: m.max,
  };
}

function momentsOf(values: ArrayLike<number>): Moments {
  const acc = new MomentsAccumulator();
  for (let i = 0; i < values.length; i++) acc.add(values[i]!);
  return acc.result();
}
