/**
 * The cost model (services/monitor/cost.ts) against brute force over the
 * joined rows: the expected cost per 1,000 decisions is the sum of each
 * decision's cost, and the optimal threshold is found by trying every
 * candidate threshold (each distinct score, and "decide 0 for all") and
 * recomputing the confusion counts from scratch each time.
 */
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../../libs/stats/index.js';
import { expectedCost, optimalThreshold } from '../../services/monitor/cost.js';
import { tPpf } from '../../libs/stats/index.js';

type Cost = { costFp: number; costFn: number; valueTp: number };

function bruteCost(scores: number[], labels: number[], t: number, c: Cost): number {
  let total = 0;
  for (let i = 0; i < scores.length; i++) {
    const yes = scores[i]! >= t;
    if (labels[i] === 1) total += yes ? -c.valueTp : c.costFn;
    else if (yes) total += c.costFp;
  }
  return total;
}

/** Every candidate threshold, cost recomputed from scratch; ties go to the higher threshold. */
function bruteOptimal(scores: number[], labels: number[], c: Cost): { threshold: number; per1000: number } {
  const candidates = [...new Set(scores)].sort((a, b) => b - a);
  const none = Math.max(...scores) < 1 ? 1 : Infinity;
  let best = { threshold: none, cost: bruteCost(scores, labels, Infinity, c) };
  for (const t of candidates) {
    const cost = bruteCost(scores, labels, t, c);
    if (cost < best.cost) best = { threshold: t, cost };
  }
  return { threshold: best.threshold, per1000: (1000 * best.cost) / scores.length };
}

function rows(n: number, seed: number): { scores: number[]; labels: number[] } {
  const r = seededRandom(seed);
  const scores: number[] = [];
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const y = r() < 0.3 ? 1 : 0;
    // Scores rounded to 2 decimals: many ties, as real models produce.
    scores.push(Math.round(Math.min(1, Math.max(0, (y ? 0.65 : 0.35) + (r() - 0.5) * 0.8)) * 100) / 100);
    labels.push(y);
  }
  return { scores, labels };
}

describe('cost model', () => {
  const models: Cost[] = [
    { costFp: 5, costFn: 100, valueTp: 0 },
    { costFp: 1, costFn: 1, valueTp: 0 },
    { costFp: 20, costFn: 3, valueTp: 10 },
    { costFp: 0, costFn: 0, valueTp: 7 },
    { costFp: 50, costFn: 1, valueTp: 0 },
  ];

  it('expected cost per 1,000 decisions equals the brute-force sum; its interval is the t interval of the per-decision mean', () => {
    for (const [k, c] of models.entries()) {
      const { scores, labels } = rows(500 + k * 37, 100 + k);
      for (const t of [0.2, 0.5, 0.73]) {
        const e = expectedCost(scores, labels, t, c);
        expect(e.per1000).toBeCloseTo((1000 * bruteCost(scores, labels, t, c)) / scores.length, 9);
        const costs = Array.from(e.costs);
        const mean = costs.reduce((a, b) => a + b, 0) / costs.length;
        const sd = Math.sqrt(costs.reduce((a, b) => a + (b - mean) ** 2, 0) / (costs.length - 1));
        const half = (1000 * tPpf(0.975, costs.length - 1) * sd) / Math.sqrt(costs.length);
        expect(e.interval.low).toBeCloseTo(1000 * mean - half, 9);
        expect(e.interval.high).toBeCloseTo(1000 * mean + half, 9);
      }
    }
  });

  it('the optimal threshold and its cost equal a brute-force search over every candidate threshold', () => {
    for (const [k, c] of models.entries()) {
      for (const seed of [1, 2, 3]) {
        const { scores, labels } = rows(300 + seed * 50, seed * 10 + k);
        const got = optimalThreshold(scores, labels, c);
        const want = bruteOptimal(scores, labels, c);
        expect(got.threshold, JSON.stringify(c)).toBe(want.threshold);
        expect(got.per1000).toBeCloseTo(want.per1000, 9);
        // And nothing beats it.
        for (const t of [...new Set(scores)]) expect((1000 * bruteCost(scores, labels, t, c)) / scores.length).toBeGreaterThanOrEqual(got.per1000 - 1e-9);
      }
    }
  });

  it('costly false negatives push the threshold down, costly false positives push it up', () => {
    const { scores, labels } = rows(2000, 9);
    const fnHeavy = optimalThreshold(scores, labels, { costFp: 1, costFn: 50, valueTp: 0 }).threshold;
    const fpHeavy = optimalThreshold(scores, labels, { costFp: 50, costFn: 1, valueTp: 0 }).threshold;
    expect(fnHeavy).toBeLessThan(0.5);
    expect(fpHeavy).toBeGreaterThan(0.5);
  });
});
