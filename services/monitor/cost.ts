/**
 * Business impact of a binary classifier: what its decisions cost under a
 * cost model (a false positive costs cost_fp, a false negative cost_fn, a
 * true positive is worth value_tp, a true negative costs nothing), the
 * expected cost per 1,000 decisions with a Student t interval (it is the
 * mean of per-decision costs), and the threshold that minimises the cost
 * over the joined rows. Pure functions; test/monitor/cost.test.ts checks
 * them against a brute-force computation.
 */
import { meanEstimate, type Interval } from '../../libs/stats/index.js';
import type { CostModel } from '../../libs/proto/index.js';

/** A cost model is set when any of its parts is non-zero. */
export function hasCost(c: CostModel | undefined): c is CostModel {
  return !!c && (c.costFp !== 0 || c.costFn !== 0 || c.valueTp !== 0);
}

/** The cost of each decision at `threshold` (score ≥ threshold decides 1). */
export function decisionCosts(scores: ArrayLike<number>, labels: ArrayLike<number>, threshold: number, c: CostModel): Float64Array {
  const out = new Float64Array(scores.length);
  for (let i = 0; i < scores.length; i++) {
    const yes = scores[i]! >= threshold;
    out[i] = labels[i] === 1 ? (yes ? -c.valueTp : c.costFn) : yes ? c.costFp : 0;
  }
  return out;
}

export interface CostEstimate {
  /** Expected cost per 1,000 decisions. */
  per1000: number;
  interval: Interval;
  /** Per-decision costs (for comparisons). */
  costs: Float64Array;
}

/** Expected cost per 1,000 decisions at `threshold`, with its t interval at `confidence`. */
export function expectedCost(scores: ArrayLike<number>, labels: ArrayLike<number>, threshold: number, c: CostModel, confidence = 0.95): CostEstimate {
  const costs = decisionCosts(scores, labels, threshold, c);
  const m = meanEstimate(costs, confidence);
  return { per1000: 1000 * m.mean, interval: { low: 1000 * m.interval.low, high: 1000 * m.interval.high }, costs };
}

/** Total cost of the decisions with `tp` true and `fp` false positives out of `positives` positive rows. */
function total(c: CostModel, tp: number, fp: number, positives: number): number {
  return c.costFp * fp + c.costFn * (positives - tp) - c.valueTp * tp;
}

/**
 * The threshold minimising the total cost over the rows: candidates are
 * every distinct score (deciding 1 at and above it) and "decide 0 for all"
 * (reported as 1 when every score is below 1, else Infinity). On equal
 * cost the higher threshold wins (fewer positive decisions). Returns the
 * threshold and its cost per 1,000 decisions; NaN for no rows.
 */
export function optimalThreshold(scores: ArrayLike<number>, labels: ArrayLike<number>, c: CostModel): { threshold: number; per1000: number } {
  const n = scores.length;
  if (n === 0) return { threshold: NaN, per1000: NaN };
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => scores[b]! - scores[a]!);
  let positives = 0;
  for (let i = 0; i < n; i++) if (labels[i] === 1) positives++;
  const top = scores[order[0]!]!;
  let best = { threshold: top < 1 ? 1 : Infinity, cost: total(c, 0, 0, positives) };
  let tp = 0;
  let fp = 0;
  for (let k = 0; k < n; ) {
    const s = scores[order[k]!]!;
    // Every row with this score is decided 1 together.
    while (k < n && scores[order[k]!] === s) {
      if (labels[order[k]!] === 1) tp++;
      else fp++;
      k++;
    }
    const cost = total(c, tp, fp, positives);
    if (cost < best.cost) best = { threshold: s, cost };
  }
  return { threshold: best.threshold, per1000: (1000 * best.cost) / n };
}
