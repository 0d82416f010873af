import { type Rng, mulberry32 } from './prng.js';

/** The demo fraud model's input columns, in order. */
export const FRAUD_FEATURES = [
  'amount',
  'hour',
  'merchant_risk',
  'distance_km',
  'tx_last_24h',
  'account_age_days',
  'foreign',
  'card_present',
] as const;

/** Synthetic transactions: feature rows plus the 0/1 fraud label of each. */
export interface LabeledRows {
  readonly rows: number[][];
  readonly labels: number[];
}

/**
 * Chosen so the hidden rule flags about 3 % of transactions as fraud; fixed
 * rather than fitted per sample so the "truth" is the same for every seed.
 */
const HIDDEN_INTERCEPT = -6.2;

function poisson(rng: Rng, mean: number): number {
  const limit = Math.exp(-mean);
  let k = 0;
  for (let p = rng.next(); p > limit; p *= rng.next()) k++;
  return k;
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));
// Dividing by a power of ten (not multiplying by a step) keeps 477.96 from printing as 477.96000000000004.
const round = (v: number, decimals: number): number => Math.round(v * 10 ** decimals) / 10 ** decimals;

/** One card transaction with realistic marginals (units in the feature names). */
function transaction(rng: Rng): number[] {
  // Log-normal amounts: median about $37, a long tail capped at $10k.
  const amount = round(clamp(Math.exp(3.6 + 1.0 * rng.normal()), 0.5, 10_000), 2);
  // Mostly daytime, with a flat 15 % spread over the whole day.
  const hour = rng.next() < 0.85 ? Math.floor(((14 + 4 * rng.normal()) % 24 + 24) % 24) : Math.floor(24 * rng.next());
  const merchantRisk = round(rng.next() ** 2.5, 3);
  const distanceKm = round(clamp(Math.exp(1.2 + 1.3 * rng.normal()), 0, 15_000), 1);
  const txLast24h = poisson(rng, 2);
  const accountAgeDays = Math.min(3650, Math.floor(Math.exp(6 + 1.2 * rng.normal())) + 1);
  const foreign = rng.next() < 0.07 ? 1 : 0;
  const cardPresent = rng.next() < 0.65 ? 1 : 0;
  return [amount, hour, merchantRisk, distanceKm, txLast24h, accountAgeDays, foreign, cardPresent];
}

/**
 * The hidden rule's log-odds. Deliberately not linear in the raw features
 * (logs, a night-time step) so the trained logistic regression is a fair
 * approximation, not a copy.
 */
function hiddenLogit(r: readonly number[]): number {
  const [amount, hour, merchantRisk, distanceKm, txLast24h, accountAgeDays, foreign, cardPresent] = r as [
    number, number, number, number, number, number, number, number,
  ];
  return (
    HIDDEN_INTERCEPT +
    0.9 * Math.log(amount / 40) +
    3.0 * merchantRisk +
    0.5 * Math.log1p(distanceKm) +
    0.35 * txLast24h -
    0.6 * Math.log(accountAgeDays / 365) +
    1.2 * foreign -
    1.3 * cardPresent +
    (hour < 6 ? 0.9 : 0)
  );
}

/**
 * `n` synthetic transactions from mulberry32(seed), each labelled fraud with
 * the hidden rule's probability (the Bernoulli draw is the label noise).
 */
export function generateTransactions(n: number, seed: number): LabeledRows {
  const rng = mulberry32(seed);
  const rows: number[][] = [];
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const row = transaction(rng);
    rows.push(row);
    labels.push(rng.next() < 1 / (1 + Math.exp(-hiddenLogit(row))) ? 1 : 0);
  }
  return { rows, labels };
}
