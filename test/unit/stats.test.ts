import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../libs/onnx-builder/index.js';
import {
  MomentsAccumulator,
  PSI_EPSILON,
  binEdges,
  binFractions,
  binOf,
  evenQuantiles,
  ksDistance,
  profileFeature,
  psi,
  psiOfFractions,
} from '../../libs/stats/index.js';

const sorted = (a: number[]) => Float64Array.from(a).sort();
const normals = (n: number, seed: number, shift = 0) => {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => Math.fround(rng.normal() + shift));
};
const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

describe('bins', () => {
  it('continuous values: edges at the deciles, a tenth of the values per bin', () => {
    const values = Array.from({ length: 1000 }, (_, i) => i);
    const edges = binEdges(sorted(values));
    expect(edges).toEqual([100, 200, 300, 400, 500, 600, 700, 800, 900]);
    expect(binFractions(edges, values)).toEqual(new Array(10).fill(0.1));
  });

  it('values below the first edge go to bin 0, at or above the last to the last bin', () => {
    const edges = [1, 2, 3];
    expect([-5, 0.999, 1, 1.5, 2, 3, 1e9].map((x) => binOf(edges, x))).toEqual([0, 0, 1, 1, 2, 3, 3]);
    expect(binOf([], 42)).toBe(0);
  });

  it('a constant feature gets bins below, at and above its value', () => {
    for (const c of [5, 0, -2.5]) {
      const edges = binEdges(sorted(new Array(50).fill(c)));
      expect(edges).toHaveLength(2);
      expect(binOf(edges, c)).toBe(1);
      expect(binOf(edges, c - 0.01)).toBe(0);
      expect(binOf(edges, c + 0.01)).toBe(2);
      expect(binFractions(edges, new Array(50).fill(c))).toEqual([0, 1, 0]);
    }
  });

  it('few distinct values (flags, counts): one bin per value, edges at the midpoints', () => {
    const flags = [...new Array(70).fill(0), ...new Array(30).fill(1)];
    expect(binEdges(sorted(flags))).toEqual([0.5]);
    expect(binFractions([0.5], flags)).toEqual([0.7, 0.3]);
    const counts = [1, 1, 2, 3, 3, 3, 7];
    expect(binEdges(sorted(counts))).toEqual([1.5, 2.5, 5]);
  });

  it('heavy ties: duplicate deciles merge and no bin is empty by construction', () => {
    // 60 % zeros, then 40 distinct positive values.
    const values = [...new Array(600).fill(0), ...Array.from({ length: 400 }, (_, i) => i + 1)];
    const edges = binEdges(sorted(values));
    expect(edges.every((e, i) => i === 0 || e > edges[i - 1]!)).toBe(true);
    expect(edges).not.toContain(0);
    expect(edges).toEqual([1, 101, 201, 301]);
    const f = binFractions(edges, values);
    expect(f).toEqual([0.6, 0.1, 0.1, 0.1, 0.1]);
    expect(f.every((x) => x > 0)).toBe(true);
    expect(sum(f)).toBeCloseTo(1, 12);
  });
});

describe('quantiles and profiles', () => {
  it('evenQuantiles keeps every value up to the cap, else evenly spaced ranks with both ends', () => {
    expect(evenQuantiles(sorted([3, 1, 2]))).toEqual([1, 2, 3]);
    const q = evenQuantiles(sorted(Array.from({ length: 10_000 }, (_, i) => i)), 500);
    expect(q).toHaveLength(500);
    expect(q[0]).toBe(0);
    expect(q[499]).toBe(9999);
    expect(q.every((v, i) => i === 0 || v > q[i - 1]!)).toBe(true);
  });

  it('profileFeature: bins, shares summing to 1, moments; given moments win', () => {
    const values = normals(5000, 7);
    const p = profileFeature('amount', values);
    expect(p.name).toBe('amount');
    expect(p.edges).toHaveLength(9);
    expect(p.fractions).toHaveLength(10);
    expect(sum(p.fractions)).toBeCloseTo(1, 12);
    for (const f of p.fractions) expect(f).toBeCloseTo(0.1, 2);
    expect(p.quantiles).toHaveLength(500);
    expect(p.mean).toBeCloseTo(0, 1);
    expect(p.stddev).toBeCloseTo(1, 1);
    expect(p.min).toBe(Math.min(...values));
    expect(p.max).toBe(Math.max(...values));
    const given = { count: 1, mean: 9, stddev: 8, min: 7, max: 10 };
    expect(profileFeature('x', values, given)).toMatchObject({ mean: 9, stddev: 8, min: 7, max: 10 });
    // An empty column: no bins, no quantiles.
    expect(profileFeature('none', [])).toMatchObject({ edges: [], fractions: [], quantiles: [], mean: 0 });
  });

  it('MomentsAccumulator matches the two-pass formulas', () => {
    const values = normals(1000, 3, 4);
    const acc = new MomentsAccumulator();
    values.forEach((v) => acc.add(v));
    const mean = sum(values) / values.length;
    const sd = Math.sqrt(sum(values.map((v) => (v - mean) ** 2)) / values.length);
    const m = acc.result();
    expect(m.count).toBe(1000);
    expect(m.mean).toBeCloseTo(mean, 10);
    expect(m.stddev).toBeCloseTo(sd, 10);
    expect(new MomentsAccumulator().result()).toEqual({ count: 0, mean: 0, stddev: 0, min: 0, max: 0 });
  });
});

describe('PSI', () => {
  it('is 0 for identical shares and Σ (a − e)·ln(a/e) otherwise', () => {
    expect(psiOfFractions([0.25, 0.25, 0.5], [0.25, 0.25, 0.5])).toBe(0);
    expect(psiOfFractions([0.5, 0.5], [0.9, 0.1])).toBeCloseTo(0.4 * Math.log(1.8) + 0.4 * Math.log(5), 12);
  });

  it('floors empty bins at PSI_EPSILON, so it stays finite', () => {
    const v = psiOfFractions([1, 0], [0, 1]);
    const e = PSI_EPSILON;
    expect(v).toBeCloseTo(2 * (1 - e) * Math.log(1 / e), 9);
    expect(Number.isFinite(v)).toBe(true);
  });

  it('small for a sample of the same distribution, large for a 1.5σ shift', () => {
    const ref = profileFeature('f', normals(20_000, 1));
    expect(psi(ref.edges, ref.fractions, normals(1000, 2))).toBeLessThan(0.05);
    expect(psi(ref.edges, ref.fractions, normals(1000, 3, 1.5))).toBeGreaterThan(1);
    expect(psi(ref.edges, ref.fractions, [])).toBe(0);
  });

  it('catches a constant feature that moves', () => {
    const ref = profileFeature('flag', new Array(100).fill(1));
    expect(psi(ref.edges, ref.fractions, new Array(100).fill(1))).toBe(0);
    expect(psi(ref.edges, ref.fractions, new Array(100).fill(2))).toBeGreaterThan(10);
  });
});

describe('KS distance', () => {
  it('is the largest gap between the empirical CDFs', () => {
    expect(ksDistance([1, 2, 3, 4], [1, 2, 3, 4])).toBe(0);
    expect(ksDistance([1, 2], [3, 4])).toBe(1);
    expect(ksDistance([1, 2, 3, 4], [3, 4, 5, 6])).toBe(0.5);
    // Ties step together: at 0, 2/4 of a against 1/4 of b.
    expect(ksDistance([0, 0, 1, 1], [0, 1, 1, 1])).toBe(0.25);
    expect(ksDistance([], [1])).toBe(0);
  });

  it('against reference quantiles: small for the same distribution, large for a shift', () => {
    const ref = profileFeature('f', normals(20_000, 1));
    const same = Float64Array.from(normals(1000, 2)).sort();
    const shifted = Float64Array.from(normals(1000, 3, 1.5)).sort();
    expect(ksDistance(same, ref.quantiles)).toBeLessThan(0.06);
    // N(0,1) vs N(1.5,1): the true distance is 2Φ(0.75) − 1 ≈ 0.547.
    expect(ksDistance(shifted, ref.quantiles)).toBeGreaterThan(0.5);
    expect(ksDistance(shifted, ref.quantiles)).toBeLessThan(0.6);
  });
});
