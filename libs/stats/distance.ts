import { binFractions } from './profile.js';

/**
 * Floor for a bin's share in PSI: an empty bin (in the reference or the
 * window) counts as holding 0.01 % of the values, so PSI stays finite. A
 * whole decile moving into a bin the reference never saw adds about
 * 0.1·ln(0.1/0.0001) ≈ 0.69.
 */
export const PSI_EPSILON = 1e-4;

/**
 * Population stability index of `actual` shares against `expected` shares
 * (same bins): Σ (a − e)·ln(a / e), each share floored at PSI_EPSILON.
 * 0 for identical distributions; < 0.1 is commonly read as stable, > 0.2 as
 * a significant shift.
 */
export function psiOfFractions(expected: readonly number[], actual: readonly number[]): number {
  let sum = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.max(expected[i]!, PSI_EPSILON);
    const a = Math.max(actual[i] ?? 0, PSI_EPSILON);
    sum += (a - e) * Math.log(a / e);
  }
  return sum;
}

/** PSI of `values` binned by `edges` against the reference shares `fractions` (0 for no values). */
export function psi(edges: readonly number[], fractions: readonly number[], values: ArrayLike<number>): number {
  if (values.length === 0 || fractions.length === 0) return 0;
  return psiOfFractions(fractions, binFractions(edges, values));
}

/**
 * Two-sample Kolmogorov–Smirnov distance: the largest gap between the
 * empirical CDFs of `a` and `b`, both sorted ascending, in [0, 1]. Tied
 * values are stepped over together. 0 when either is empty. Against a
 * reference's `quantiles` (an evenly spaced subset of its sorted values)
 * this approximates the distance to the full reference within 1/quantiles.
 */
export function ksDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  const m = b.length;
  if (n === 0 || m === 0) return 0;
  let i = 0;
  let j = 0;
  let d = 0;
  while (i < n && j < m) {
    const x = Math.min(a[i]!, b[j]!);
    while (i < n && a[i]! <= x) i++;
    while (j < m && b[j]! <= x) j++;
    const gap = Math.abs(i / n - j / m);
    if (gap > d) d = gap;
  }
  return d;
}
