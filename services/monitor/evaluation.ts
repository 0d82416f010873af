/**
 * Online evaluation math: binary-classification metrics at a threshold,
 * ROC-AUC, log-loss, argmax accuracy, and regression errors, over
 * (prediction, label) pairs. Pure functions; no I/O, no clock.
 *
 * Conventions (stated once, used by the monitor, the README and the tests):
 * - A score `>= threshold` predicts class 1.
 * - Precision, recall and F1 are 0 when their denominator is 0 (scikit-learn's
 *   `zero_division=0`).
 * - ROC-AUC is the Mann-Whitney rank statistic, tied scores sharing their
 *   average rank (the area under the ROC curve with ties as diagonal
 *   segments); NaN when either class is missing.
 * - Log-loss is the mean of −[y·ln p + (1−y)·ln(1−p)] with p clipped to
 *   [1e-15, 1 − 1e-15].
 * - R² is 1 − SS_res / SS_tot; NaN when every label is the same (SS_tot = 0).
 */
import { rocAuc } from '../../libs/stats/index.js';

/** Re-exported: the monitor's evaluation and the demo's training report share one ROC-AUC. */
export { rocAuc };

/** Score at or above which a binary classifier predicts class 1, unless the caller gives another. */
export const DEFAULT_THRESHOLD = 0.5;
/** Scores are clipped to [LOG_LOSS_EPS, 1 − LOG_LOSS_EPS] before log-loss. */
export const LOG_LOSS_EPS = 1e-15;

/**
 * What the monitor keeps of a prediction: enough of the flattened first-row
 * output values (PredictionSample.output_summary) to apply the score rule.
 */
export interface Prediction {
  /** How many output values the sample had. */
  readonly width: number;
  /** output_summary[0]. */
  readonly first: number;
  /** output_summary[1] (NaN when width < 2). */
  readonly second: number;
  /** Index of the largest output value (the first of equal ones). */
  readonly argmax: number;
}

/** Reduces an output summary to a Prediction; null when it is empty or holds a non-finite value. */
export function toPrediction(summary: ArrayLike<number>): Prediction | null {
  const width = summary.length;
  if (width === 0) return null;
  let argmax = 0;
  for (let i = 0; i < width; i++) {
    const v = summary[i]!;
    if (!Number.isFinite(v)) return null;
    if (v > summary[argmax]!) argmax = i;
  }
  return { width, first: summary[0]!, second: width > 1 ? summary[1]! : NaN, argmax };
}

/**
 * The binary classifier's score (probability of class 1): the only value of
 * a single-column output, the second column of a two-column (class 0,
 * class 1) output. NaN for wider outputs (those are scored by argmax).
 */
export function binaryScore(p: Prediction): number {
  if (p.width === 1) return p.first;
  if (p.width === 2) return p.second;
  return NaN;
}

export interface BinaryMetrics {
  accuracy: number;
  precision: number;
  recall: number;
  f1: number;
  rocAuc: number;
  logLoss: number;
}

export interface RegressionMetrics {
  mse: number;
  mae: number;
  r2: number;
}

/** Accuracy, precision, recall and F1 at `threshold`, ROC-AUC and log-loss. `labels` are 0 or 1. */
export function binaryMetrics(scores: ArrayLike<number>, labels: ArrayLike<number>, threshold = DEFAULT_THRESHOLD): BinaryMetrics {
  let tp = 0;
  let fp = 0;
  let tn = 0;
  let fn = 0;
  for (let i = 0; i < scores.length; i++) {
    const predicted = scores[i]! >= threshold;
    if (labels[i] === 1) {
      if (predicted) tp++;
      else fn++;
    } else if (predicted) fp++;
    else tn++;
  }
  const n = tp + fp + tn + fn;
  const precision = tp + fp > 0 ? tp / (tp + fp) : 0;
  const recall = tp + fn > 0 ? tp / (tp + fn) : 0;
  return {
    accuracy: n > 0 ? (tp + tn) / n : NaN,
    precision,
    recall,
    f1: precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0,
    rocAuc: rocAuc(scores, labels),
    logLoss: logLoss(scores, labels),
  };
}

/** Mean binary cross-entropy, scores clipped to [eps, 1 − eps]; NaN for no pairs. */
export function logLoss(scores: ArrayLike<number>, labels: ArrayLike<number>, eps = LOG_LOSS_EPS): number {
  if (scores.length === 0) return NaN;
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    const p = Math.min(Math.max(scores[i]!, eps), 1 - eps);
    sum -= labels[i] === 1 ? Math.log(p) : Math.log(1 - p);
  }
  return sum / scores.length;
}

/** Mean squared error, mean absolute error and R² of `predictions` against `labels`. */
export function regressionMetrics(predictions: ArrayLike<number>, labels: ArrayLike<number>): RegressionMetrics {
  const n = labels.length;
  if (n === 0) return { mse: NaN, mae: NaN, r2: NaN };
  let mean = 0;
  for (let i = 0; i < n; i++) mean += labels[i]!;
  mean /= n;
  let se = 0;
  let ae = 0;
  let tot = 0;
  for (let i = 0; i < n; i++) {
    const e = labels[i]! - predictions[i]!;
    se += e * e;
    ae += Math.abs(e);
    tot += (labels[i]! - mean) ** 2;
  }
  return { mse: se / n, mae: ae / n, r2: tot > 0 ? 1 - se / tot : NaN };
}

/** The metrics of one version's labelled predictions (VersionEvaluation without name and version). */
export interface Evaluation extends BinaryMetrics, RegressionMetrics {
  kind: 'classification' | 'regression';
  labelled: number;
  threshold: number;
}

/**
 * Evaluates one version's (prediction, label) pairs. The kind follows the labels and outputs:
 * - every label 0 or 1, and outputs of one or two values: a binary classifier
 *   scored by {@link binaryScore}: accuracy, precision, recall, F1 at `threshold`,
 *   ROC-AUC and log-loss;
 * - outputs of three or more values and every label an integer class index
 *   below that width: a multi-class classifier, accuracy by argmax only (the
 *   other classification metrics are NaN);
 * - otherwise a regressor whose prediction is output_summary[0]: MSE, MAE, R².
 * Metrics of the other kind are 0.
 */
export function evaluate(predictions: readonly Prediction[], labels: readonly number[], threshold = DEFAULT_THRESHOLD): Evaluation {
  const n = labels.length;
  const none = { accuracy: 0, precision: 0, recall: 0, f1: 0, rocAuc: 0, logLoss: 0, mse: 0, mae: 0, r2: 0 };
  const kind = evaluationKind(predictions, labels);
  if (kind === 'binary') {
    const scores = predictions.map(binaryScore);
    return { ...none, ...binaryMetrics(scores, labels, threshold), kind: 'classification', labelled: n, threshold };
  }
  if (kind === 'multiclass') {
    let correct = 0;
    for (let i = 0; i < n; i++) if (predictions[i]!.argmax === labels[i]) correct++;
    return { ...none, accuracy: correct / n, precision: NaN, recall: NaN, f1: NaN, rocAuc: NaN, logLoss: NaN, kind: 'classification', labelled: n, threshold };
  }
  const values = predictions.map((p) => p.first);
  return { ...none, ...regressionMetrics(values, labels), kind: 'regression', labelled: n, threshold };
}

/**
 * How pairs are evaluated (see {@link evaluate}): `binary` when every label
 * is 0 or 1 and outputs have one or two values, `multiclass` when outputs
 * have three or more values and every label is a class index below that,
 * else `regression` (also for no pairs).
 */
export function evaluationKind(predictions: readonly Prediction[], labels: ArrayLike<number>): 'binary' | 'multiclass' | 'regression' {
  const n = labels.length;
  if (n === 0) return 'regression';
  let binary = true;
  let multiclass = true;
  for (let i = 0; i < n; i++) {
    const y = labels[i]!;
    const w = predictions[i]!.width;
    if ((y !== 0 && y !== 1) || w > 2) binary = false;
    if (w < 3 || !Number.isInteger(y) || y < 0 || y >= w) multiclass = false;
  }
  return binary ? 'binary' : multiclass ? 'multiclass' : 'regression';
}
