/**
 * A fixed-size latency histogram with log-spaced buckets: bucket i holds
 * values in (F^(i-1), F^i] microseconds, F = 1.05, from 1 µs to 120 s
 * (≈ 380 buckets). A quantile is reported as its bucket's geometric middle,
 * so it is within one bucket (±5 %) of the true value; mean, min and max
 * are exact.
 */
const FACTOR = 1.05;
const LOG_FACTOR = Math.log(FACTOR);
const MAX_MICROS = 120e6;
const BUCKETS = Math.ceil(Math.log(MAX_MICROS) / LOG_FACTOR) + 1;

export class LatencyHistogram {
  private readonly counts = new Float64Array(BUCKETS);
  private n = 0;
  private sum = 0;
  private lo = Infinity;
  private hi = 0;

  /** Records one latency in microseconds (values beyond 120 s land in the last bucket). */
  record(micros: number): void {
    const i = micros <= 1 ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(micros) / LOG_FACTOR - 1e-9));
    this.counts[i]!++;
    this.n++;
    this.sum += micros;
    if (micros < this.lo) this.lo = micros;
    if (micros > this.hi) this.hi = micros;
  }

  /** Adds every observation of `other` to this histogram. */
  add(other: LatencyHistogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
    this.n += other.n;
    this.sum += other.sum;
    if (other.lo < this.lo) this.lo = other.lo;
    if (other.hi > this.hi) this.hi = other.hi;
  }

  get count(): number {
    return this.n;
  }

  /** Observations per bucket, ascending (a read-only view; bucket i holds (1.05^(i−1), 1.05^i] µs). */
  buckets(): Readonly<Float64Array> {
    return this.counts;
  }

  /** The upper edge of bucket `i` in microseconds. */
  static bucketUpper(i: number): number {
    return Math.pow(FACTOR, i);
  }

  /** Mean in microseconds; 0 when empty. */
  mean(): number {
    return this.n === 0 ? 0 : this.sum / this.n;
  }

  /** The q-quantile (0 < q ≤ 1, nearest rank) in microseconds; 0 when empty. */
  quantile(q: number): number {
    if (this.n === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.n));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const mid = i === 0 ? 1 : Math.pow(FACTOR, i - 0.5);
        return Math.min(this.hi, Math.max(this.lo, mid));
      }
    }
    return this.hi;
  }
}
