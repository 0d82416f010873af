/** The online-evaluation math (services/monitor/evaluation.ts) against hand-computed values and brute force. */
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../libs/onnx-builder/index.js';
import {
  binaryMetrics,
  binaryScore,
  evaluate,
  logLoss,
  regressionMetrics,
  rocAuc,
  toPrediction,
  type Prediction,
} from '../../services/monitor/evaluation.js';

/** AUC by definition: the share of (positive, negative) pairs ranked right, ties counting one half. */
function bruteAuc(scores: number[], labels: number[]): number {
  let good = 0;
  let pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      if (scores[i]! > scores[j]!) good += 1;
      else if (scores[i] === scores[j]) good += 0.5;
    }
  }
  return good / pairs;
}

const single = (v: number): Prediction => toPrediction([v])!;

describe('binary metrics', () => {
  // scikit-learn's roc_auc_score example: 0.75.
  const scores = [0.1, 0.4, 0.35, 0.8];
  const labels = [0, 0, 1, 1];

  it('match hand-computed values', () => {
    const m = binaryMetrics(scores, labels, 0.5);
    // Predictions at 0.5: 0 0 0 1 → tp 1, fp 0, fn 1, tn 2.
    expect(m.accuracy).toBeCloseTo(0.75, 12);
    expect(m.precision).toBeCloseTo(1, 12);
    expect(m.recall).toBeCloseTo(0.5, 12);
    expect(m.f1).toBeCloseTo(2 / 3, 12);
    expect(m.rocAuc).toBeCloseTo(0.75, 12);
    expect(m.logLoss).toBeCloseTo(-(Math.log(0.9) + Math.log(0.6) + Math.log(0.35) + Math.log(0.8)) / 4, 12);
    expect(m.logLoss).toBeCloseTo(0.4722879, 6);
  });

  it('predict class 1 at a score equal to the threshold', () => {
    const m = binaryMetrics(scores, labels, 0.35);
    // Predictions: 0 1 1 1 → tp 2, fp 1, fn 0, tn 1.
    expect(m.precision).toBeCloseTo(2 / 3, 12);
    expect(m.recall).toBe(1);
    expect(m.accuracy).toBeCloseTo(0.75, 12);
    expect(m.f1).toBeCloseTo(0.8, 12);
    // The threshold does not move AUC or log-loss.
    expect(m.rocAuc).toBeCloseTo(0.75, 12);
  });

  it('count precision, recall and F1 as 0 when their denominator is 0', () => {
    const m = binaryMetrics([0.1, 0.2, 0.3], [1, 0, 1], 0.9);
    expect(m).toMatchObject({ precision: 0, recall: 0, f1: 0 });
    expect(m.accuracy).toBeCloseTo(1 / 3, 12);
    const none = binaryMetrics([0.6, 0.7], [0, 0], 0.5);
    expect(none).toMatchObject({ precision: 0, recall: 0, f1: 0, accuracy: 0 });
  });

  it('ROC-AUC equals pair counting, ties included, on random data', () => {
    const rng = mulberry32(11);
    for (let trial = 0; trial < 50; trial++) {
      const n = 5 + Math.floor(rng.next() * 200);
      // Coarse scores force many ties; the label leans on the score so AUC is not always 0.5.
      const s = Array.from({ length: n }, () => Math.round(rng.next() * 10) / 10);
      const y = s.map((v) => (rng.next() < 0.2 + 0.6 * v ? 1 : 0));
      if (!y.includes(0) || !y.includes(1)) continue;
      expect(rocAuc(s, y)).toBeCloseTo(bruteAuc(s, y), 12);
    }
  });

  it('ROC-AUC is 1 for a perfect ranking, 0 for a reversed one, 0.5 for all ties, NaN with one class', () => {
    expect(rocAuc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])).toBe(1);
    expect(rocAuc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])).toBe(0);
    expect(rocAuc([0.5, 0.5, 0.5], [0, 1, 0])).toBe(0.5);
    expect(rocAuc([0.1, 0.2], [1, 1])).toBeNaN();
  });

  it('log-loss clips scores to [1e-15, 1 − 1e-15]', () => {
    expect(logLoss([0], [1])).toBeCloseTo(-Math.log(1e-15), 9);
    expect(logLoss([1], [0])).toBeCloseTo(-Math.log(1 - (1 - 1e-15)), 6);
    expect(Number.isFinite(logLoss([1, 0], [0, 1]))).toBe(true);
    expect(logLoss([], [])).toBeNaN();
  });
});

describe('regression metrics', () => {
  it('match hand-computed values', () => {
    // scikit-learn's docs example.
    const m = regressionMetrics([2.5, 0.0, 2, 8], [3, -0.5, 2, 7]);
    expect(m.mse).toBeCloseTo(0.375, 12);
    expect(m.mae).toBeCloseTo(0.5, 12);
    expect(m.r2).toBeCloseTo(0.948608137, 8);
  });

  it('R² is NaN when every label is the same', () => {
    expect(regressionMetrics([1, 2], [3, 3]).r2).toBeNaN();
  });
});

describe('the score rule and the kind of evaluation', () => {
  it('reduces an output summary to width, first, second and argmax; refuses empty or non-finite ones', () => {
    expect(toPrediction([0.2, 0.7, 0.1])).toEqual({ width: 3, first: 0.2, second: 0.7, argmax: 1 });
    expect(toPrediction([])).toBeNull();
    expect(toPrediction([0.1, NaN])).toBeNull();
    expect(toPrediction([Infinity])).toBeNull();
  });

  it('scores one column by itself and two columns by the second (class 1)', () => {
    expect(binaryScore(single(0.3))).toBe(0.3);
    expect(binaryScore(toPrediction([0.7, 0.3])!)).toBe(0.3);
    expect(binaryScore(toPrediction([0.2, 0.3, 0.5])!)).toBeNaN();
  });

  it('evaluates 0/1 labels on one- and two-column outputs as a binary classifier', () => {
    const scores = [0.1, 0.4, 0.35, 0.8];
    const labels = [0, 0, 1, 1];
    const one = evaluate(scores.map(single), labels, 0.5);
    const two = evaluate(scores.map((s) => toPrediction([1 - s, s])!), labels, 0.5);
    for (const e of [one, two]) {
      expect(e).toMatchObject({ kind: 'classification', labelled: 4, threshold: 0.5, mse: 0, mae: 0, r2: 0 });
      expect(e.rocAuc).toBeCloseTo(0.75, 12);
      expect(e.f1).toBeCloseTo(2 / 3, 12);
    }
  });

  it('evaluates class-index labels on three or more columns by argmax accuracy only', () => {
    const preds = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]].map((r) => toPrediction(r)!);
    const e = evaluate(preds, [0, 1, 2, 1]);
    expect(e.kind).toBe('classification');
    expect(e.accuracy).toBeCloseTo(0.75, 12);
    expect(e.precision).toBeNaN();
    expect(e.rocAuc).toBeNaN();
    expect(e.logLoss).toBeNaN();
  });

  it('evaluates anything else as a regressor on the first value', () => {
    const e = evaluate([2.5, 0.0, 2, 8].map(single), [3, -0.5, 2, 7]);
    expect(e).toMatchObject({ kind: 'regression', labelled: 4, accuracy: 0, f1: 0, rocAuc: 0 });
    expect(e.mse).toBeCloseTo(0.375, 12);
    // Labels 0/1 with a three-column output but a label out of range: regression, not argmax.
    expect(evaluate([toPrediction([1, 2, 3])!], [5]).kind).toBe('regression');
  });
});
