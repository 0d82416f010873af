/**
 * How sure a comparison of two versions is. Each version's labelled rows are
 * the requests it served, so A and B are independent samples. Per version,
 * every metric gets an interval; per metric, the difference B − A gets an
 * interval, a two-sided p-value of "no difference", and the labelled samples
 * each version needs to detect a given difference.
 *
 * | metric | interval of a version | difference B − A |
 * | --- | --- | --- |
 * | accuracy, precision, recall | Wilson score | Newcombe (hybrid score), pooled two-proportion z-test |
 * | roc_auc | DeLong variance, Wald (clipped to [0, 1]) | DeLong variances added, z-test |
 * | log_loss, mse, mae, cost_per_1000 | Student t (they are means of per-row values) | Welch t-test |
 * | f1, r2 | seeded percentile bootstrap | percentile interval of B's minus A's replicates; p from the replicates' SD (normal) |
 *
 * The means use t rather than the bootstrap: for a mean the t interval is
 * what the bootstrap approximates, it is exact to reproduce (SciPy), and it
 * costs O(n) instead of O(n × resamples). Pure functions; no clock, no I/O.
 */
import type { CostModel, MetricDifference, MetricEstimate, VersionEstimates } from '../../libs/proto/index.js';
import {
  bootstrap,
  bootstrapP,
  delongAuc,
  finiteSorted,
  meanEstimate,
  newcombeInterval,
  normalDifference,
  percentileInterval,
  samplesForProportions,
  samplesForVariance,
  seededRandom,
  twoProportionZTest,
  welchDifference,
  wilsonInterval,
  zOf,
  type Interval,
  type MeanEstimate,
} from '../../libs/stats/index.js';
import { decisionCosts, hasCost, optimalThreshold } from './cost.js';
import { binaryScore, evaluationKind, LOG_LOSS_EPS, type Prediction } from './evaluation.js';

export interface LabelledRows {
  predictions: readonly Prediction[];
  labels: readonly number[];
}

export interface CompareOptions {
  threshold: number;
  confidence: number;
  /** Absolute for metrics in [0, 1]; relative to A's value for log_loss, mse, mae and cost_per_1000. */
  minDifference: number;
  power: number;
  resamples: number;
  seed: number;
  cost?: CostModel;
}

export const COMPARE_DEFAULTS = Object.freeze({ threshold: 0.5, confidence: 0.95, minDifference: 0.05, power: 0.8, resamples: 1000, seed: 1 });

/** Metrics whose values are not bounded to [0, 1]: the detectable difference is relative to A's value. */
const RELATIVE = new Set(['log_loss', 'mse', 'mae', 'cost_per_1000']);

type Proportion = { k: number; n: number };

/** One metric of one version, with what its difference needs. */
interface Estimate {
  metric: string;
  value: number;
  interval: Interval;
  method: 'wilson' | 'delong' | 't' | 'bootstrap';
  n: number;
  /** wilson: the counts. */
  proportion?: Proportion;
  /** delong: the variance. */
  variance?: number;
  /** t: the mean estimate. */
  mean?: MeanEstimate;
  /** bootstrap: the replicates in the order drawn. */
  replicates?: Float64Array;
  /** Labelled rows per observation of this metric (precision: labelled / predicted positives). */
  rowsPerObservation: number;
}

interface Analysis {
  version: number;
  labelled: number;
  estimates: Estimate[];
  optimal: { threshold: number; per1000: number };
}

/**
 * Compares version `va` (rows `a`) with `vb` (rows `b`). Throws a
 * KindMismatch when one is a classifier and the other a regressor.
 */
export function compareVersions(va: number, a: LabelledRows, vb: number, b: LabelledRows, o: CompareOptions): { kind: 'classification' | 'regression'; a: VersionEstimates; b: VersionEstimates; differences: MetricDifference[] } {
  const ka = evaluationKind(a.predictions, a.labels);
  const kb = evaluationKind(b.predictions, b.labels);
  if (ka !== kb) throw new KindMismatch(va, ka, vb, kb);
  const A = analyse(va, a, ka, o);
  const B = analyse(vb, b, kb, o);
  const differences = A.estimates.map((ea, i) => difference(ea, B.estimates[i]!, o));
  return { kind: ka === 'regression' ? 'regression' : 'classification', a: summary(A), b: summary(B), differences };
}

/** The two versions' outputs call for different evaluations. */
export class KindMismatch extends Error {
  constructor(va: number, ka: string, vb: number, kb: string) {
    super(`version ${va} is evaluated as ${ka} and version ${vb} as ${kb}: their metrics cannot be compared`);
  }
}

/** Every metric of one version's rows, in a fixed order per kind. */
export function analyse(version: number, rows: LabelledRows, kind: 'binary' | 'multiclass' | 'regression', o: CompareOptions): Analysis {
  const n = rows.labels.length;
  const random = seededRandom((o.seed + Math.imul(version, 0x9e3779b1)) | 0);
  const estimates: Estimate[] = [];
  let optimal = { threshold: NaN, per1000: NaN };
  if (kind === 'binary') {
    const scores = rows.predictions.map(binaryScore);
    const labels = rows.labels;
    // Confusion category per row: 0 tn, 1 fp, 2 fn, 3 tp.
    const cat = new Uint8Array(n);
    let tp = 0;
    let fp = 0;
    let fn = 0;
    for (let i = 0; i < n; i++) {
      const yes = scores[i]! >= o.threshold;
      const pos = labels[i] === 1;
      cat[i] = pos ? (yes ? 3 : 2) : yes ? 1 : 0;
      if (pos && yes) tp++;
      else if (pos) fn++;
      else if (yes) fp++;
    }
    estimates.push(proportion('accuracy', n - fp - fn, n, o.confidence, 1));
    estimates.push(proportion('precision', tp, tp + fp, o.confidence, tp + fp > 0 ? n / (tp + fp) : NaN));
    estimates.push(proportion('recall', tp, tp + fn, o.confidence, tp + fn > 0 ? n / (tp + fn) : NaN));
    const f1Of = (t: number, p: number, f: number) => (2 * t + p + f > 0 ? (2 * t) / (2 * t + p + f) : 0);
    const replicates = bootstrap(n, o.resamples, random, (idx) => {
      let t = 0;
      let p = 0;
      let f = 0;
      for (let i = 0; i < idx.length; i++) {
        const c = cat[idx[i]!]!;
        if (c === 3) t++;
        else if (c === 1) p++;
        else if (c === 2) f++;
      }
      return f1Of(t, p, f);
    });
    estimates.push(bootstrapped('f1', f1Of(tp, fp, fn), replicates, n, o.confidence));
    const auc = delongAuc(scores, labels);
    const z = zOf(o.confidence);
    const se = Math.sqrt(auc.variance);
    estimates.push({
      metric: 'roc_auc', value: auc.auc, method: 'delong', n, variance: auc.variance, rowsPerObservation: 1,
      interval: Number.isFinite(se) ? { low: Math.max(0, auc.auc - z * se), high: Math.min(1, auc.auc + z * se) } : { low: NaN, high: NaN },
    });
    const losses = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const p = Math.min(Math.max(scores[i]!, LOG_LOSS_EPS), 1 - LOG_LOSS_EPS);
      losses[i] = labels[i] === 1 ? -Math.log(p) : -Math.log(1 - p);
    }
    estimates.push(mean('log_loss', losses, o.confidence));
    if (hasCost(o.cost)) {
      const costs = decisionCosts(scores, labels, o.threshold, o.cost);
      for (let i = 0; i < n; i++) costs[i]! *= 1000;
      estimates.push(mean('cost_per_1000', costs, o.confidence));
      optimal = optimalThreshold(scores, labels, o.cost);
    }
  } else if (kind === 'multiclass') {
    let correct = 0;
    for (let i = 0; i < n; i++) if (rows.predictions[i]!.argmax === rows.labels[i]) correct++;
    estimates.push(proportion('accuracy', correct, n, o.confidence, 1));
  } else {
    const y = rows.labels;
    const yhat = rows.predictions.map((p) => p.first);
    const se = new Float64Array(n);
    const ae = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const e = y[i]! - yhat[i]!;
      se[i] = e * e;
      ae[i] = Math.abs(e);
    }
    estimates.push(mean('mse', se, o.confidence));
    estimates.push(mean('mae', ae, o.confidence));
    const r2Of = (idx: Uint32Array | null) => {
      const m = idx ? idx.length : n;
      let sum = 0;
      for (let i = 0; i < m; i++) sum += y[idx ? idx[i]! : i]!;
      const ybar = sum / m;
      let res = 0;
      let tot = 0;
      for (let i = 0; i < m; i++) {
        const j = idx ? idx[i]! : i;
        res += se[j]!;
        tot += (y[j]! - ybar) ** 2;
      }
      return tot > 0 ? 1 - res / tot : NaN;
    };
    estimates.push(bootstrapped('r2', r2Of(null), bootstrap(n, o.resamples, random, r2Of), n, o.confidence));
  }
  return { version, labelled: n, estimates, optimal };
}

function proportion(metric: string, k: number, n: number, confidence: number, rowsPerObservation: number): Estimate {
  return { metric, value: n > 0 ? k / n : metric === 'accuracy' ? NaN : 0, interval: wilsonInterval(k, n, confidence), method: 'wilson', n, proportion: { k, n }, rowsPerObservation };
}

function mean(metric: string, values: Float64Array, confidence: number): Estimate {
  const m = meanEstimate(values, confidence);
  return { metric, value: m.mean, interval: m.interval, method: 't', n: values.length, mean: m, rowsPerObservation: 1 };
}

function bootstrapped(metric: string, value: number, replicates: Float64Array, n: number, confidence: number): Estimate {
  return { metric, value, interval: percentileInterval(finiteSorted(replicates), confidence), method: 'bootstrap', n, replicates, rowsPerObservation: 1 };
}

/** Variance of one observation behind an estimate (n·SE²): for sample sizes. */
function perObservationVariance(e: Estimate): number {
  if (e.mean) return e.mean.n * e.mean.se * e.mean.se;
  if (e.variance !== undefined) return e.n * e.variance;
  if (e.replicates) {
    const sorted = finiteSorted(e.replicates);
    let m = 0;
    for (const v of sorted) m += v;
    m /= sorted.length;
    let ss = 0;
    for (const v of sorted) ss += (v - m) ** 2;
    return sorted.length > 1 ? (e.n * ss) / (sorted.length - 1) : NaN;
  }
  return NaN;
}

function difference(ea: Estimate, eb: Estimate, o: CompareOptions): MetricDifference {
  const detectable = RELATIVE.has(ea.metric) ? o.minDifference * Math.abs(ea.value) : o.minDifference;
  let d: { difference: number; interval: Interval; p: number };
  let method: string;
  let needed: number;
  if (ea.proportion && eb.proportion) {
    const { k: kA, n: nA } = ea.proportion;
    const { k: kB, n: nB } = eb.proportion;
    d = { difference: eb.value - ea.value, interval: newcombeInterval(kA, nA, kB, nB, o.confidence), p: twoProportionZTest(kA, nA, kB, nB).p };
    method = 'newcombe+z-test';
    // Observations of the proportion (e.g. predicted positives) turned into labelled rows.
    needed = samplesForProportions(ea.value, detectable, o.confidence, o.power) * ea.rowsPerObservation;
  } else if (ea.variance !== undefined && eb.variance !== undefined) {
    d = normalDifference(ea.value, ea.variance, eb.value, eb.variance, o.confidence);
    method = 'delong+z-test';
    needed = samplesForVariance(perObservationVariance(ea), perObservationVariance(eb), detectable, o.confidence, o.power);
  } else if (ea.mean && eb.mean) {
    d = welchDifference(ea.mean, eb.mean, o.confidence);
    method = 'welch-t';
    needed = samplesForVariance(perObservationVariance(ea), perObservationVariance(eb), detectable, o.confidence, o.power);
  } else {
    const ra = ea.replicates!;
    const rb = eb.replicates!;
    const diffs: number[] = [];
    for (let i = 0; i < Math.min(ra.length, rb.length); i++) if (Number.isFinite(ra[i]!) && Number.isFinite(rb[i]!)) diffs.push(rb[i]! - ra[i]!);
    d = { difference: eb.value - ea.value, interval: percentileInterval(finiteSorted(diffs), o.confidence), p: bootstrapP(eb.value - ea.value, diffs) };
    method = 'bootstrap';
    needed = samplesForVariance(perObservationVariance(ea), perObservationVariance(eb), detectable, o.confidence, o.power);
  }
  return {
    metric: ea.metric,
    a: ea.value,
    b: eb.value,
    difference: d.difference,
    low: d.interval.low,
    high: d.interval.high,
    pValue: d.p,
    method,
    significant: d.p < 1 - o.confidence,
    detectable,
    samplesNeeded: Number.isFinite(needed) ? Math.ceil(needed) : NaN,
  };
}

function summary(x: Analysis): VersionEstimates {
  return {
    version: x.version,
    labelled: x.labelled,
    metrics: x.estimates.map(
      (e): MetricEstimate => ({ metric: e.metric, value: e.value, low: e.interval.low, high: e.interval.high, method: e.method, n: e.n }),
    ),
    optimalThreshold: x.optimal.threshold,
    optimalCostPer1000: x.optimal.per1000,
  };
}
