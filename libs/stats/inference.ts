/**
 * Confidence intervals and tests for comparing two independent samples (two
 * model versions answer different requests): Wilson and Newcombe intervals
 * and the two-proportion z-test for proportions, Fisher's exact test for
 * small counts, Mann–Whitney U on ordered categories (histogram buckets or
 * raw values), DeLong's variance of ROC-AUC, Student/Welch t for means, a
 * seeded percentile bootstrap, and the sample size that detects a given
 * difference. Each function names the SciPy / scikit-learn / statsmodels
 * call it matches; test/unit/stats-inference.test.ts holds numbers computed
 * there on fixed rows.
 */
import { lgamma, normPpf, normSf, tPpf, tSf } from './special.js';

export interface Interval {
  low: number;
  high: number;
}

/** Which difference a one-sided test looks for: `greater` = B above A. */
export type Alternative = 'two-sided' | 'greater' | 'less';

const NAN_INTERVAL: Interval = Object.freeze({ low: NaN, high: NaN });

/** z such that a two-sided interval at `confidence` is ±z (1.96 at 0.95). */
export function zOf(confidence: number): number {
  return normPpf(1 - (1 - confidence) / 2);
}

/**
 * Wilson score interval of k successes in n trials, no continuity
 * correction: SciPy `binomtest(k, n).proportion_ci(confidence, 'wilson')`.
 * NaN bounds when n is 0.
 */
export function wilsonInterval(k: number, n: number, confidence = 0.95): Interval {
  if (n <= 0) return NAN_INTERVAL;
  const z = zOf(confidence);
  const p = k / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const center = (p + z2 / (2 * n)) / denom;
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return { low: Math.max(0, center - half), high: Math.min(1, center + half) };
}

/**
 * Newcombe's hybrid score interval (method 10) of pB − pA from the two
 * Wilson intervals: statsmodels `confint_proportions_2indep(kB, nB, kA, nA,
 * method='newcomb', compare='diff')`.
 */
export function newcombeInterval(kA: number, nA: number, kB: number, nB: number, confidence = 0.95): Interval {
  if (nA <= 0 || nB <= 0) return NAN_INTERVAL;
  const pA = kA / nA;
  const pB = kB / nB;
  const a = wilsonInterval(kA, nA, confidence);
  const b = wilsonInterval(kB, nB, confidence);
  const d = pB - pA;
  return { low: d - Math.sqrt((pB - b.low) ** 2 + (a.high - pA) ** 2), high: d + Math.sqrt((b.high - pB) ** 2 + (pA - a.low) ** 2) };
}

/**
 * Two-proportion z-test with the pooled variance (kB/nB against kA/nA):
 * statsmodels `proportions_ztest([kB, kA], [nB, nA], alternative=…)`; its
 * two-sided p equals SciPy `chi2_contingency(…, correction=False)`. p = 1
 * when both proportions are 0 or both 1 (no evidence either way).
 */
export function twoProportionZTest(kA: number, nA: number, kB: number, nB: number, alternative: Alternative = 'two-sided'): { z: number; p: number } {
  if (nA <= 0 || nB <= 0) return { z: NaN, p: NaN };
  const pooled = (kA + kB) / (nA + nB);
  const se = Math.sqrt(pooled * (1 - pooled) * (1 / nA + 1 / nB));
  if (se === 0) return { z: 0, p: 1 };
  const z = (kB / nB - kA / nA) / se;
  return { z, p: pFromZ(z, alternative) };
}

/** The p-value of a standard-normal statistic. */
export function pFromZ(z: number, alternative: Alternative): number {
  if (Number.isNaN(z)) return NaN;
  if (alternative === 'greater') return normSf(z);
  if (alternative === 'less') return normSf(-z);
  return Math.min(1, 2 * normSf(Math.abs(z)));
}

function logChoose(n: number, k: number): number {
  return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1);
}

/**
 * Fisher's exact test on the 2×2 table [[a, b], [c, d]] (rows: B, A;
 * columns: event, no event), one-sided: `greater` = row 1 has the higher
 * odds of the event. SciPy `fisher_exact([[a, b], [c, d]], alternative)`.
 */
export function fisherExact(a: number, b: number, c: number, d: number, alternative: 'greater' | 'less'): number {
  const rowOne = a + b;
  const colOne = a + c;
  const total = a + b + c + d;
  if (total === 0) return 1;
  const lo = Math.max(0, rowOne + colOne - total);
  const hi = Math.min(rowOne, colOne);
  const base = logChoose(total, rowOne);
  const pmf = (x: number) => Math.exp(logChoose(colOne, x) + logChoose(total - colOne, rowOne - x) - base);
  let p = 0;
  if (alternative === 'greater') for (let x = hi; x >= a; x--) p += pmf(x);
  else for (let x = lo; x <= a; x++) p += pmf(x);
  return Math.min(1, p);
}

export interface MannWhitney {
  /** U of the first sample (X): pairs (x, y) with x > y, ties counting one half. */
  u: number;
  /** U / (nX·nY): the probability that an X exceeds a Y (ties one half). */
  superiority: number;
  z: number;
  p: number;
  nX: number;
  nY: number;
}

/**
 * Mann–Whitney U test from counts over the same ordered categories (e.g. the
 * buckets of two latency histograms; values in one category are ties),
 * normal approximation with tie and continuity correction: SciPy
 * `mannwhitneyu(x, y, alternative, method='asymptotic')` on the raw values.
 * `greater` = X tends to be larger.
 */
export function mannWhitneyCounts(countsX: ArrayLike<number>, countsY: ArrayLike<number>, alternative: Alternative = 'two-sided'): MannWhitney {
  let nX = 0;
  let nY = 0;
  for (let i = 0; i < countsX.length; i++) nX += countsX[i]!;
  for (let i = 0; i < countsY.length; i++) nY += countsY[i]!;
  const n = nX + nY;
  if (nX === 0 || nY === 0) return { u: NaN, superiority: NaN, z: NaN, p: NaN, nX, nY };
  let below = 0;
  let rankSumX = 0;
  let ties = 0;
  const k = Math.max(countsX.length, countsY.length);
  for (let i = 0; i < k; i++) {
    const x = countsX[i] ?? 0;
    const t = x + (countsY[i] ?? 0);
    if (t === 0) continue;
    // The category's values share the mean of ranks below+1 … below+t.
    rankSumX += x * (below + (t + 1) / 2);
    ties += t * t * t - t;
    below += t;
  }
  const u = rankSumX - (nX * (nX + 1)) / 2;
  const mu = (nX * nY) / 2;
  const s = Math.sqrt(((nX * nY) / 12) * (n + 1 - ties / (n * (n - 1))));
  let z: number;
  if (s === 0) z = 0;
  else if (alternative === 'two-sided') z = (Math.max(u, nX * nY - u) - mu - 0.5) / s;
  else if (alternative === 'greater') z = (u - mu - 0.5) / s;
  else z = (nX * nY - u - mu - 0.5) / s;
  const p = s === 0 ? 1 : alternative === 'two-sided' ? Math.min(1, 2 * normSf(z)) : normSf(z);
  return { u, superiority: u / (nX * nY), z, p, nX, nY };
}

/** Mann–Whitney U of raw values (SciPy `mannwhitneyu(x, y, alternative, method='asymptotic')`). */
export function mannWhitneyU(x: ArrayLike<number>, y: ArrayLike<number>, alternative: Alternative = 'two-sided'): MannWhitney {
  const values = [...new Set([...Array.from(x), ...Array.from(y)])].sort((a, b) => a - b);
  const at = new Map(values.map((v, i) => [v, i]));
  const cx = new Float64Array(values.length);
  const cy = new Float64Array(values.length);
  for (let i = 0; i < x.length; i++) cx[at.get(x[i]!)!]!++;
  for (let i = 0; i < y.length; i++) cy[at.get(y[i]!)!]!++;
  return mannWhitneyCounts(cx, cy, alternative);
}

/** Midranks (1-based, ties averaged) of `values`. */
function midranks(values: ArrayLike<number>): Float64Array {
  const n = values.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => values[a]! - values[b]!);
  const ranks = new Float64Array(n);
  for (let start = 0; start < n; ) {
    let end = start;
    while (end + 1 < n && values[order[end + 1]!] === values[order[start]!]) end++;
    const r = (start + end) / 2 + 1;
    for (let k = start; k <= end; k++) ranks[order[k]!] = r;
    start = end + 1;
  }
  return ranks;
}

export interface AucEstimate {
  auc: number;
  /** DeLong's variance of the AUC estimate. */
  variance: number;
  positives: number;
  negatives: number;
}

/**
 * ROC-AUC with DeLong's variance (the structural components computed from
 * midranks, as in Sun & Xu's fast DeLong). The AUC equals scikit-learn's
 * `roc_auc_score`. NaN when either class is missing.
 */
export function delongAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): AucEstimate {
  const pos: number[] = [];
  const neg: number[] = [];
  for (let i = 0; i < scores.length; i++) (labels[i] === 1 ? pos : neg).push(scores[i]!);
  const m = pos.length;
  const n = neg.length;
  if (m === 0 || n === 0) return { auc: NaN, variance: NaN, positives: m, negatives: n };
  const all = midranks([...pos, ...neg]);
  const rp = midranks(pos);
  const rn = midranks(neg);
  // V10: share of negatives each positive beats; V01: share of positives each negative loses to.
  const v10 = new Float64Array(m);
  const v01 = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < m; i++) {
    v10[i] = (all[i]! - rp[i]!) / n;
    sum += v10[i]!;
  }
  const auc = sum / m;
  for (let j = 0; j < n; j++) v01[j] = 1 - (all[m + j]! - rn[j]!) / m;
  return { auc, variance: sampleVariance(v10) / m + sampleVariance(v01) / n, positives: m, negatives: n };
}

/** Unbiased sample variance (ddof 1); 0 for fewer than two values. */
export function sampleVariance(values: ArrayLike<number>): number {
  const n = values.length;
  if (n < 2) return 0;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += values[i]!;
  mean /= n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (values[i]! - mean) ** 2;
  return ss / (n - 1);
}

export interface MeanEstimate {
  mean: number;
  /** Standard error of the mean (sample SD / √n). */
  se: number;
  n: number;
  /** Student t interval: SciPy `t.interval(confidence, n-1, loc=mean, scale=sem)`. */
  interval: Interval;
}

/** The mean of `values` with its standard error and t interval (NaN interval for n < 2). */
export function meanEstimate(values: ArrayLike<number>, confidence = 0.95): MeanEstimate {
  const n = values.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += values[i]!;
  mean = n > 0 ? mean / n : NaN;
  const se = n > 1 ? Math.sqrt(sampleVariance(values) / n) : NaN;
  if (!(n > 1)) return { mean, se, n, interval: NAN_INTERVAL };
  if (se === 0) return { mean, se, n, interval: { low: mean, high: mean } };
  const t = tPpf(1 - (1 - confidence) / 2, n - 1);
  return { mean, se, n, interval: { low: mean - t * se, high: mean + t * se } };
}

export interface Difference {
  /** B − A. */
  difference: number;
  interval: Interval;
  p: number;
}

/**
 * Welch's t for the difference of two means, B − A: SciPy
 * `ttest_ind(b, a, equal_var=False, alternative)` gives the p-value; the
 * interval uses the same Welch–Satterthwaite degrees of freedom.
 */
export function welchDifference(a: MeanEstimate, b: MeanEstimate, confidence = 0.95, alternative: Alternative = 'two-sided'): Difference {
  const d = b.mean - a.mean;
  const va = a.se * a.se;
  const vb = b.se * b.se;
  const se = Math.sqrt(va + vb);
  if (!(a.n > 1 && b.n > 1)) return { difference: d, interval: NAN_INTERVAL, p: NaN };
  if (se === 0) return { difference: d, interval: { low: d, high: d }, p: d === 0 ? 1 : 0 };
  const df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1));
  const t = d / se;
  const q = tPpf(1 - (1 - confidence) / 2, df);
  const p = alternative === 'greater' ? tSf(t, df) : alternative === 'less' ? tSf(-t, df) : Math.min(1, 2 * tSf(Math.abs(t), df));
  return { difference: d, interval: { low: d - q * se, high: d + q * se }, p };
}

/** The difference of two independent normal estimates, B − A, with a Wald interval and z-test. */
export function normalDifference(a: number, varA: number, b: number, varB: number, confidence = 0.95, alternative: Alternative = 'two-sided'): Difference {
  const d = b - a;
  const se = Math.sqrt(varA + varB);
  if (!Number.isFinite(se)) return { difference: d, interval: NAN_INTERVAL, p: NaN };
  if (se === 0) return { difference: d, interval: { low: d, high: d }, p: d === 0 ? 1 : 0 };
  const z = zOf(confidence);
  return { difference: d, interval: { low: d - z * se, high: d + z * se }, p: pFromZ(d / se, alternative) };
}

/**
 * A seeded 32-bit generator (mulberry32): uniform in [0, 1). Bootstrap
 * resamples drawn with it are the same on every run and reproducible in
 * any language (the test's Python reference draws the same indices).
 */
export function seededRandom(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `resamples` bootstrap replicates of a statistic of n rows, in the order
 * drawn: each draws n row indices with replacement (index = ⌊u·n⌋, u from
 * `random`) into one reused buffer and calls `statistic` with it. A
 * replicate may be NaN (undefined on that resample); {@link finiteSorted}
 * drops those for a percentile interval.
 */
export function bootstrap(n: number, resamples: number, random: () => number, statistic: (rows: Uint32Array) => number): Float64Array {
  const rows = new Uint32Array(n);
  const out = new Float64Array(resamples);
  for (let b = 0; b < resamples; b++) {
    for (let i = 0; i < n; i++) rows[i] = Math.floor(random() * n);
    out[b] = statistic(rows);
  }
  return out;
}

/** The finite values of `values`, sorted ascending (a new array). */
export function finiteSorted(values: ArrayLike<number>): Float64Array {
  const out = new Float64Array(values.length);
  let k = 0;
  for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i]!)) out[k++] = values[i]!;
  return out.subarray(0, k).sort();
}

/** The q-quantile of sorted values with linear interpolation (NumPy's default `percentile`). */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const pos = q * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo]! + (pos - lo) * (sorted[hi]! - sorted[lo]!);
}

/** Percentile interval of sorted bootstrap replicates. */
export function percentileInterval(sorted: ArrayLike<number>, confidence = 0.95): Interval {
  const tail = (1 - confidence) / 2;
  return { low: quantileSorted(sorted, tail), high: quantileSorted(sorted, 1 - tail) };
}

/**
 * The p-value of "no difference" for an observed difference `d` whose
 * bootstrap replicates are `replicates`: a normal approximation with the
 * replicates' standard deviation as the standard error, 2·(1 − Φ(|d|/sd)).
 * (Counting replicates beyond 0 cannot give a p-value below 2/(R + 1), too
 * coarse for a decision that spends a small α per look.) NaN with fewer
 * than two finite replicates.
 */
export function bootstrapP(d: number, replicates: ArrayLike<number>, alternative: Alternative = 'two-sided'): number {
  const finite = finiteSorted(replicates);
  if (finite.length < 2) return NaN;
  const sd = Math.sqrt(sampleVariance(finite));
  if (sd === 0) return d === 0 ? 1 : 0;
  return pFromZ(d / sd, alternative);
}

/**
 * Observations per version for a two-sided test at `confidence` to detect a
 * difference `delta` between two proportions around `p` with `power`
 * (Fleiss's formula without continuity correction). NaN when undefined.
 */
export function samplesForProportions(p: number, delta: number, confidence = 0.95, power = 0.8): number {
  if (!(delta > 0) || !(p >= 0 && p <= 1)) return NaN;
  const p2 = p + delta <= 1 ? p + delta : p - delta;
  if (p2 < 0) return NaN;
  const bar = (p + p2) / 2;
  const za = zOf(confidence);
  const zb = normPpf(power);
  const n = (za * Math.sqrt(2 * bar * (1 - bar)) + zb * Math.sqrt(p * (1 - p) + p2 * (1 - p2))) ** 2 / (delta * delta);
  return Math.ceil(n);
}

/**
 * Observations per version to detect a difference `delta` with `power`
 * when one observation of A has variance `varA` and one of B `varB`
 * (normal approximation): ⌈(z_{α/2} + z_β)²·(varA + varB)/δ²⌉.
 */
export function samplesForVariance(varA: number, varB: number, delta: number, confidence = 0.95, power = 0.8): number {
  if (!(delta > 0) || !Number.isFinite(varA + varB)) return NaN;
  return Math.ceil(((zOf(confidence) + normPpf(power)) ** 2 * (varA + varB)) / (delta * delta));
}
