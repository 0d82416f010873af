/**
 * Distribution profiles and drift distances shared by the registry (which
 * profiles reference data at push) and the monitor (which compares live
 * windows against them): decile bins, quantiles, PSI and KS; and the
 * intervals and tests the monitor's comparisons and canary analysis use.
 */
export {
  PROFILE_BINS,
  PROFILE_QUANTILES,
  MomentsAccumulator,
  binEdges,
  binOf,
  binFractions,
  evenQuantiles,
  profileFeature,
  type Moments,
} from './profile.js';
export { PSI_EPSILON, psi, psiOfFractions, ksDistance } from './distance.js';
export { rocAuc } from './auc.js';
export { lgamma, gammaQ, erfc, normCdf, normSf, normPpf, betaInc, tCdf, tSf, tPpf } from './special.js';
export {
  zOf,
  wilsonInterval,
  newcombeInterval,
  twoProportionZTest,
  pFromZ,
  fisherExact,
  mannWhitneyCounts,
  mannWhitneyU,
  delongAuc,
  sampleVariance,
  meanEstimate,
  welchDifference,
  normalDifference,
  seededRandom,
  bootstrap,
  finiteSorted,
  quantileSorted,
  percentileInterval,
  bootstrapP,
  samplesForProportions,
  samplesForVariance,
  type Interval,
  type Alternative,
  type MannWhitney,
  type AucEstimate,
  type MeanEstimate,
  type Difference,
} from './inference.js';
