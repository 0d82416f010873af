/**
 * Distribution profiles and drift distances shared by the registry (which
 * profiles reference data at push) and the monitor (which compares live
 * windows against them): decile bins, quantiles, PSI and KS.
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
