/**
 * libs/stats inference (intervals, tests, bootstrap, sample sizes) against
 * SciPy 1.10.1, scikit-learn 1.2.1 and statsmodels 0.13.5 (Debian bookworm's
 * python3-scipy, python3-sklearn, python3-statsmodels) on fixed rows. Each
 * expected number below was printed by the Python script at the end of this
 * file, whose comment names the call that produced it; the rows are the
 * script's too (copied here as literals).
 */
import { describe, expect, it } from 'vitest';
import {
  bootstrap,
  bootstrapP,
  delongAuc,
  finiteSorted,
  fisherExact,
  mannWhitneyU,
  meanEstimate,
  newcombeInterval,
  normalDifference,
  normPpf,
  normSf,
  percentileInterval,
  samplesForProportions,
  samplesForVariance,
  seededRandom,
  tPpf,
  tSf,
  twoProportionZTest,
  welchDifference,
  wilsonInterval,
} from '../../libs/stats/index.js';
import { analyse } from '../../services/monitor/comparison.js';
import { toPrediction } from '../../services/monitor/evaluation.js';

const A_SCORES = [0.0, 0.366337, 0.732673, 0.09901, 0.465347, 0.831683, 0.19802, 0.564356, 0.930693, 0.29703, 0.663366, 0.029703, 0.39604, 0.762376, 0.128713, 0.49505, 0.861386, 0.227723, 0.594059, 0.960396, 0.326733, 0.693069, 0.059406, 0.425743, 0.792079, 0.158416, 0.524752, 0.891089, 0.257426, 0.623762, 0.990099, 0.356436, 0.722772, 0.089109, 0.455446, 0.821782, 0.188119, 0.554455, 0.920792, 0.287129, 0.653465, 0.019802, 0.386139, 0.752475, 0.118812, 0.485149, 0.851485, 0.217822, 0.584158, 0.950495, 0.316832, 0.683168, 0.049505, 0.415842, 0.782178, 0.148515, 0.514851, 0.881188, 0.247525, 0.613861, 0.980198, 0.346535, 0.712871, 0.079208, 0.445545, 0.811881, 0.178218, 0.544554, 0.910891, 0.277228, 0.643564, 0.009901, 0.376238, 0.742574, 0.108911, 0.475248, 0.841584, 0.207921, 0.574257, 0.940594];
const A_LABELS = [0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1];
const B_SCORES = [0.0, 0.546392, 0.092784, 0.639175, 0.185567, 0.731959, 0.278351, 0.824742, 0.371134, 0.917526, 0.463918, 0.010309, 0.556701, 0.103093, 0.649485, 0.195876, 0.742268, 0.28866, 0.835052, 0.381443, 0.927835, 0.474227, 0.020619, 0.56701, 0.113402, 0.659794, 0.206186, 0.752577, 0.298969, 0.845361, 0.391753, 0.938144, 0.484536, 0.030928, 0.57732, 0.123711, 0.670103, 0.216495, 0.762887, 0.309278, 0.85567, 0.402062, 0.948454, 0.494845, 0.041237, 0.587629, 0.134021, 0.680412, 0.226804, 0.773196, 0.319588, 0.865979, 0.412371, 0.958763, 0.505155, 0.051546, 0.597938, 0.14433, 0.690722, 0.237113, 0.783505, 0.329897, 0.876289, 0.42268, 0.969072, 0.515464, 0.061856, 0.608247, 0.154639, 0.701031, 0.247423, 0.793814, 0.340206, 0.886598, 0.43299, 0.979381, 0.525773, 0.072165, 0.618557, 0.164948, 0.71134, 0.257732, 0.804124, 0.350515, 0.896907, 0.443299, 0.989691, 0.536082, 0.082474, 0.628866];
const B_LABELS = [0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1];

/** Relative closeness: |a − b| ≤ tol·max(1, |b|). */
function close(a: number, b: number, tol = 1e-12): void {
  expect(Math.abs(a - b), `${a} vs ${b}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(b)));
}

describe('distribution functions', () => {
  it('normal and t quantiles and tails equal scipy.stats.norm / scipy.stats.t', () => {
    // norm.ppf(0.975), norm.ppf(1e-10), norm.ppf(0.3), t.ppf(0.975, 7), t.ppf(0.01, 2.5), t.ppf(0.975, 5000)
    const ppf = [1.959963984540054, -6.361340902404056, -0.5244005127080409, 2.3646242510102993, -5.353111174482593, 1.9604385517065075];
    close(normPpf(0.975), ppf[0]!, 1e-14);
    close(normPpf(1e-10), ppf[1]!, 1e-13);
    close(normPpf(0.3), ppf[2]!, 1e-14);
    // SciPy's t.ppf (cephes stdtrit) is accurate to about 1e-9 only: t.sf(t.ppf(0.975, 7), 7) = 0.025000000021420315,
    // while t.sf(tPpf(0.975, 7), 7) = 0.025000000000000012 (also SciPy). Hence 1e-9 here.
    close(tPpf(0.975, 7), ppf[3]!, 1e-9);
    close(tPpf(0.01, 2.5), ppf[4]!, 1e-9);
    close(tPpf(0.975, 5000), ppf[5]!, 1e-9);
    // norm.sf(8.5), t.sf(2.1, 3), t.sf(-1.3, 40.7), t.sf(30, 12)
    const sf = [9.47953482220325e-18, 0.06328260127484227, 0.8995423169794243, 5.886590953509473e-13];
    expect(Math.abs(normSf(8.5) / sf[0]! - 1)).toBeLessThan(1e-12);
    close(tSf(2.1, 3), sf[1]!);
    close(tSf(-1.3, 40.7), sf[2]!);
    expect(Math.abs(tSf(30, 12) / sf[3]! - 1)).toBeLessThan(1e-10);
  });
});

describe('proportions', () => {
  it('Wilson intervals equal binomtest(k, n).proportion_ci(confidence, "wilson")', () => {
    const want = [[0.23272736988916295, 0.3958299772380067], [0.0, 0.20388330103584862], [0.7961166989641515, 1.0], [0.1582198552514697, 0.7495416354723428]];
    [[37, 120], [0, 15], [15, 15], [3, 7]].forEach(([k, n], i) => {
      const w = wilsonInterval(k!, n!);
      close(w.low, want[i]![0]!);
      close(w.high, want[i]![1]!);
    });
    const w90 = wilsonInterval(37, 120, 0.9);
    close(w90.low, 0.24385619835333922);
    close(w90.high, 0.3812626128663938);
  });

  it('the difference 52/130 − 37/120: Newcombe = statsmodels confint_proportions_2indep(method="newcomb"); z-test = proportions_ztest = chi2_contingency(correction=False)', () => {
    const ci = newcombeInterval(37, 120, 52, 130);
    close(ci.low, -0.027008536679544573);
    close(ci.high, 0.20611237900035295);
    const t = twoProportionZTest(37, 120, 52, 130);
    close(t.z, 1.512292510252082);
    close(t.p, 0.13045946557055144);
    close(t.p, 0.13045946557055152);
    close(twoProportionZTest(37, 120, 52, 130, 'greater').p, 0.06522973278527572);
    expect(twoProportionZTest(0, 50, 0, 60).p).toBe(1);
  });

  it("Fisher's exact test equals scipy.stats.fisher_exact(table, alternative)", () => {
    close(fisherExact(7, 43, 1, 59, 'greater'), 0.015938132973800808);
    close(fisherExact(7, 43, 1, 59, 'less'), 0.9986895990098023);
    expect(Math.abs(fisherExact(12, 26, 0, 40, 'greater') / 6.233974023894725e-05 - 1)).toBeLessThan(1e-10);
  });
});

describe('Mann-Whitney U', () => {
  const x = [12, 15, 15, 18, 20, 20, 20, 22, 25, 31, 40, 18, 19, 21];
  const y = [10, 11, 12, 12, 15, 16, 18, 18, 19, 20, 14, 13];
  it("equals scipy.stats.mannwhitneyu(x, y, alternative, method='asymptotic') with ties", () => {
    for (const [alt, want] of [['greater', [139.0, 0.002422384798778521]], ['two-sided', [139.0, 0.004844769597557042]], ['less', [139.0, 0.9979402890692808]]] as const) {
      const r = mannWhitneyU(x, y, alt);
      expect(r.u).toBe(want[0]);
      close(r.p, want[1]);
    }
  });
});

describe('ROC-AUC with DeLong', () => {
  it('AUC equals sklearn roc_auc_score; variance equals DeLong by definition (pairwise placements, numpy)', () => {
    const a = delongAuc(A_SCORES, A_LABELS);
    const b = delongAuc(B_SCORES, B_LABELS);
    close(a.auc, 0.9147727272727273);
    close(b.auc, 0.895748987854251);
    close(a.variance, 0.000859327040836907);
    close(b.variance, 0.00103054927746897);
    // Difference of independent AUCs: z-test with the variances added (scipy.stats.norm).
    const diff = normalDifference(a.auc, a.variance, b.auc, b.variance);
    const want = [-0.019023739418476238, -0.10422868090062884, 0.06618120206367636, 0.6616748950933213];
    close(diff.difference, want[0]!);
    close(diff.interval.low, want[1]!);
    close(diff.interval.high, want[2]!);
    close(diff.p, want[3]!);
  });
});

describe('means (log-loss, MSE, cost): Student t and Welch', () => {
  const losses = (scores: number[], labels: number[]) => scores.map((s, i) => {
    const p = Math.min(Math.max(s, 1e-15), 1 - 1e-15);
    return labels[i] === 1 ? -Math.log(p) : -Math.log(1 - p);
  });
  it('mean = sklearn log_loss; interval = scipy.stats.t.interval(0.95, n−1, mean, sem); Welch p = ttest_ind(b, a, equal_var=False)', () => {
    const a = meanEstimate(losses(A_SCORES, A_LABELS));
    const b = meanEstimate(losses(B_SCORES, B_LABELS));
    close(a.mean, 0.3994587097437671);
    close(b.mean, 0.4272374390117567);
    // SciPy's t.ppf (cephes stdtrit) is itself accurate to about 1e-10: t.sf(t.ppf(0.975, 79), 79) = 0.0250000000135.
    close(a.interval.low, 0.32144357173629745, 1e-9);
    close(a.interval.high, 0.4774738477512368, 1e-9);
    const w = welchDifference(a, b);
    close(w.p, 0.6260195235429774);
    close(w.interval.low, -0.08454483892610706, 1e-9);
    close(w.interval.high, 0.14010229746208622, 1e-9);
  });
});

describe('seeded bootstrap (F1)', () => {
  // Python draws the same indices with the same mulberry32 generator and scores each resample with sklearn f1_score.
  const f1Of = (scores: number[], labels: number[]) => (idx: Uint32Array) => {
    let tp = 0, fp = 0, fn = 0;
    for (const i of idx) {
      const yes = scores[i]! >= 0.5;
      if (labels[i] === 1) yes ? tp++ : fn++;
      else if (yes) fp++;
    }
    return 2 * tp + fp + fn > 0 ? (2 * tp) / (2 * tp + fp + fn) : 0;
  };
  const seedOf = (version: number) => (1 + Math.imul(version, 0x9e3779b1)) | 0;

  it('percentile intervals and the p-value equal numpy.percentile over sklearn f1_score on the same resamples', () => {
    const ra = bootstrap(A_SCORES.length, 500, seededRandom(seedOf(1)), f1Of(A_SCORES, A_LABELS));
    const rb = bootstrap(B_SCORES.length, 500, seededRandom(seedOf(2)), f1Of(B_SCORES, B_LABELS));
    const ia = percentileInterval(finiteSorted(ra));
    close(ia.low, 0.692060606060606);
    close(ia.high, 0.8735632183908046);
    const diffs = Array.from(rb, (v, i) => v - ra[i]!);
    const id = percentileInterval(finiteSorted(diffs));
    close(id.low, -0.17056372549019608);
    close(id.high, 0.1309583333333332);
    // f1_score(B) − f1_score(A) over the replicates' standard deviation (numpy std, ddof 1), scipy.stats.norm.sf.
    close(bootstrapP(0.7710843373493975 - 0.7951807228915662, diffs), 0.7472189525272173, 1e-11);
  });

  it("the monitor's comparison gives the same F1 interval, and the same answer every time", () => {
    const rows = (scores: number[], labels: number[]) => ({ predictions: scores.map((s) => toPrediction([s])!), labels });
    const o = { threshold: 0.5, confidence: 0.95, minDifference: 0.05, power: 0.8, resamples: 500, seed: 1 };
    const a = analyse(1, rows(A_SCORES, A_LABELS), 'binary', o);
    const f1 = a.estimates.find((e) => e.metric === 'f1')!;
    close(f1.value, 0.7951807228915662);
    close(f1.interval.low, 0.692060606060606);
    close(f1.interval.high, 0.8735632183908046);
    const again = analyse(1, rows(A_SCORES, A_LABELS), 'binary', o).estimates.find((e) => e.metric === 'f1')!;
    expect(again.interval).toEqual(f1.interval);
  });
});

describe('samples needed', () => {
  it('equal the normal-approximation formulas computed with scipy.stats.norm', () => {
    // Fleiss without continuity correction, p 0.30 → 0.35, two-sided 0.05, power 0.8.
    expect(samplesForProportions(0.3, 0.05)).toBe(1377);
    // (z_0.975 + z_0.8)²·(0.2 + 0.3)/0.05².
    expect(samplesForVariance(0.2, 0.3, 0.05)).toBe(1570);
  });
});

/*
The reference script (run with Debian's /usr/bin/python3; it prints JSON):

import json, math
import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, f1_score, log_loss
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

def mulberry32(seed):
    a = seed & 0xffffffff
    def imul(x, y): return ((x & 0xffffffff) * (y & 0xffffffff)) & 0xffffffff
    def nxt():
        nonlocal a
        a = (a + 0x6d2b79f5) & 0xffffffff
        t = imul(a ^ (a >> 15), 1 | a)
        t = ((t + imul(t ^ (t >> 7), 61 | t)) & 0xffffffff) ^ t
        return ((t ^ (t >> 14)) & 0xffffffff) / 4294967296
    return nxt

# Fixed rows: scores and labels of two "versions".
A_scores = [round(((i * 37) % 101) / 101, 6) for i in range(80)]
A_labels = [1 if (A_scores[i] + ((i * 13) % 7) / 10) > 0.75 else 0 for i in range(80)]
B_scores = [round(((i * 53) % 97) / 97, 6) for i in range(90)]
B_labels = [1 if (B_scores[i] + ((i * 11) % 5) / 6) > 0.9 else 0 for i in range(90)]
out = {'A_scores': A_scores, 'A_labels': A_labels, 'B_scores': B_scores, 'B_labels': B_labels}

out['wilson'] = [list(stats.binomtest(k, n).proportion_ci(0.95, 'wilson')) for k, n in [(37, 120), (0, 15), (15, 15), (3, 7)]]
out['wilson90'] = list(stats.binomtest(37, 120).proportion_ci(0.90, 'wilson'))
lo, hi = confint_proportions_2indep(52, 130, 37, 120, method='newcomb', compare='diff', alpha=0.05)
out['newcombe'] = [lo, hi]
z, p = proportions_ztest([52, 37], [130, 120])
out['ztest'] = [z, p]
out['ztest_chi2_p'] = stats.chi2_contingency([[52, 78], [37, 83]], correction=False)[1]
out['ztest_greater'] = proportions_ztest([52, 37], [130, 120], alternative='larger')[1]
out['fisher_greater'] = stats.fisher_exact([[7, 43], [1, 59]], alternative='greater')[1]
out['fisher_less'] = stats.fisher_exact([[7, 43], [1, 59]], alternative='less')[1]
out['fisher_big'] = stats.fisher_exact([[12, 26], [0, 40]], alternative='greater')[1]
x = [12, 15, 15, 18, 20, 20, 20, 22, 25, 31, 40, 18, 19, 21]
y = [10, 11, 12, 12, 15, 16, 18, 18, 19, 20, 14, 13]
out['mwu_x'] = x; out['mwu_y'] = y
r = stats.mannwhitneyu(x, y, alternative='greater', method='asymptotic')
out['mwu_greater'] = [float(r.statistic), float(r.pvalue)]
r = stats.mannwhitneyu(x, y, alternative='two-sided', method='asymptotic')
out['mwu_two'] = [float(r.statistic), float(r.pvalue)]
r = stats.mannwhitneyu(x, y, alternative='less', method='asymptotic')
out['mwu_less'] = [float(r.statistic), float(r.pvalue)]

def delong_bydef(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l == 1]
    neg = [s for s, l in zip(scores, labels) if l == 0]
    psi = lambda a, b: 1.0 if a > b else (0.5 if a == b else 0.0)
    v10 = [np.mean([psi(p, q) for q in neg]) for p in pos]
    v01 = [np.mean([psi(p, q) for p in pos]) for q in neg]
    auc = np.mean(v10)
    var = np.var(v10, ddof=1) / len(pos) + np.var(v01, ddof=1) / len(neg)
    return auc, var
aA, vA = delong_bydef(A_scores, A_labels); aB, vB = delong_bydef(B_scores, B_labels)
out['auc'] = [roc_auc_score(A_labels, A_scores), roc_auc_score(B_labels, B_scores)]
out['delong'] = [[aA, vA], [aB, vB]]
zc = stats.norm.ppf(0.975)
out['delong_ci_A'] = [max(0, aA - zc * math.sqrt(vA)), min(1, aA + zc * math.sqrt(vA))]
d = aB - aA; se = math.sqrt(vA + vB)
out['delong_diff'] = [d, d - zc * se, d + zc * se, 2 * stats.norm.sf(abs(d / se))]

clip = lambda p: min(max(p, 1e-15), 1 - 1e-15)
lossA = [-math.log(clip(s)) if l == 1 else -math.log(1 - clip(s)) for s, l in zip(A_scores, A_labels)]
lossB = [-math.log(clip(s)) if l == 1 else -math.log(1 - clip(s)) for s, l in zip(B_scores, B_labels)]
out['logloss'] = [log_loss(A_labels, A_scores), log_loss(B_labels, B_scores)]
m = np.mean(lossA); sem = stats.sem(lossA)
out['t_interval_A'] = list(stats.t.interval(0.95, len(lossA) - 1, loc=m, scale=sem))
tt = stats.ttest_ind(lossB, lossA, equal_var=False)
va = np.var(lossA, ddof=1) / len(lossA); vb = np.var(lossB, ddof=1) / len(lossB)
df = (va + vb) ** 2 / (va ** 2 / (len(lossA) - 1) + vb ** 2 / (len(lossB) - 1))
dd = np.mean(lossB) - np.mean(lossA); q = stats.t.ppf(0.975, df)
out['welch'] = [float(tt.pvalue), dd - q * math.sqrt(va + vb), dd + q * math.sqrt(va + vb)]
out['ppf'] = [stats.norm.ppf(0.975), stats.norm.ppf(1e-10), stats.norm.ppf(0.3), stats.t.ppf(0.975, 7), stats.t.ppf(0.01, 2.5), stats.t.ppf(0.975, 5000)]
out['sf'] = [stats.norm.sf(8.5), stats.t.sf(2.1, 3), stats.t.sf(-1.3, 40.7), stats.t.sf(30, 12)]

# Bootstrap F1: the same mulberry32 indices as libs/stats (seed = (1 + version * 0x9e3779b1) | 0), sklearn f1_score per replicate.
def boot_f1(scores, labels, version, R=500, seed=1):
    s = (seed + ((version * 0x9e3779b1) & 0xffffffff)) & 0xffffffff
    rnd = mulberry32(s)
    n = len(scores)
    pred = np.array([1 if v >= 0.5 else 0 for v in scores]); lab = np.array(labels)
    reps = []
    for _ in range(R):
        idx = [math.floor(rnd() * n) for _ in range(n)]
        reps.append(f1_score(lab[idx], pred[idx], zero_division=0))
    return np.array(reps)
rA = boot_f1(A_scores, A_labels, 1); rB = boot_f1(B_scores, B_labels, 2)
out['f1'] = [f1_score(A_labels, [1 if v >= 0.5 else 0 for v in A_scores]), f1_score(B_labels, [1 if v >= 0.5 else 0 for v in B_scores])]
out['f1_boot_A'] = list(np.percentile(rA, [2.5, 97.5]))
diffs = rB - rA
out['f1_boot_diff'] = list(np.percentile(diffs, [2.5, 97.5]))
# p of the observed difference with the replicates' SD as its standard error (normal approximation).
out['f1_boot_p'] = 2 * stats.norm.sf(abs(out['f1'][1] - out['f1'][0]) / np.std(diffs, ddof=1))
# Sample sizes (Fleiss, no continuity correction; normal approximation) with scipy.stats.norm.
za = stats.norm.ppf(0.975); zb = stats.norm.ppf(0.8)
p1 = 0.3; p2 = 0.35; bar = (p1 + p2) / 2
out['n_prop'] = math.ceil((za * math.sqrt(2 * bar * (1 - bar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / 0.05 ** 2)
out['n_var'] = math.ceil((za + zb) ** 2 * (0.2 + 0.3) / 0.05 ** 2)
print(json.dumps(out))
*/
