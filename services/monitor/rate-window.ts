/**
 * Events per second over a sliding window, kept as a ring of per-second
 * counts (no allocation after construction).
 */
export class RateWindow {
  private readonly counts: Float64Array;
  private readonly seconds: Float64Array;
  private firstSecond = -1;

  constructor(private readonly windowSeconds = 60) {
    this.counts = new Float64Array(windowSeconds);
    this.seconds = new Float64Array(windowSeconds).fill(-1);
  }

  /** Adds `n` events at `nowMs`. */
  add(n: number, nowMs: number): void {
    const s = Math.floor(nowMs / 1000);
    if (this.firstSecond < 0) this.firstSecond = s;
    const i = s % this.windowSeconds;
    if (this.seconds[i] !== s) {
      this.seconds[i] = s;
      this.counts[i] = 0;
    }
    this.counts[i]! += n;
  }

  /**
   * Events per second over the window ending at `nowMs`. While the series is
   * younger than the window, divides by its age (at least 1 s), so a new
   * version does not read as idle.
   */
  rate(nowMs: number): number {
    if (this.firstSecond < 0) return 0;
    const s = Math.floor(nowMs / 1000);
    let total = 0;
    for (let i = 0; i < this.windowSeconds; i++) {
      const at = this.seconds[i]!;
      if (at > s - this.windowSeconds && at <= s) total += this.counts[i]!;
    }
    const span = Math.min(this.windowSeconds, Math.max(1, s - this.firstSecond + 1));
    return total / span;
  }
}
