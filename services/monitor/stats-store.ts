/**
 * In-memory serving statistics per (model, version): exact request and error
 * counts, a latency histogram, a 60 s rate window, and the last lifecycle
 * event; and per (model, shadow version, production version): how the
 * mirrored calls compared. Fed by the NATS consumers; read by GetModelStats.
 */
import type { ModelEvent, ShadowResult, ShadowStats, VersionStats, VersionTraffic } from '../../libs/proto/index.js';
import { codeName } from '../../libs/errors/index.js';
import { LatencyHistogram } from './latency-histogram.js';
import { RateWindow } from './rate-window.js';

class VersionSeries {
  requests = 0;
  errors = 0;
  readonly errorsByCode = new Map<number, number>();
  readonly latency = new LatencyHistogram();
  readonly rate = new RateWindow(60);
  lastSeenMs = 0;
  lastEvent: ModelEvent | undefined;
}

/** The mirrored calls of one shadow version against one production version. */
export class ShadowSeries {
  requests = 0;
  agreements = 0;
  errors = 0;
  readonly latency = new LatencyHistogram();

  /** Adds one shadow call; a failed call counts as an error, never as an agreement. */
  record(r: ShadowResult): void {
    this.requests++;
    this.latency.record(r.latencyMicros);
    if (r.code !== 0) this.errors++;
    else if (r.agree) this.agreements++;
  }
}

export class StatsStore {
  private readonly models = new Map<string, Map<number, VersionSeries>>();
  // name -> shadow version -> production version -> series.
  private readonly shadows = new Map<string, Map<number, Map<number, ShadowSeries>>>();

  /** `now` is the clock for the rate window (injected for tests). */
  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Adds one router's traffic for `name`/`traffic.version`. The caller has
   * checked that latencies and codes have the same length.
   */
  recordTraffic(name: string, traffic: VersionTraffic, seenMs: number): void {
    const s = this.series(name, traffic.version);
    const { latencyMicros, codes } = traffic;
    for (let i = 0; i < latencyMicros.length; i++) {
      s.latency.record(latencyMicros[i]!);
      const code = codes[i]!;
      if (code !== 0) {
        s.errors++;
        s.errorsByCode.set(code, (s.errorsByCode.get(code) ?? 0) + 1);
      }
    }
    s.requests += latencyMicros.length;
    s.rate.add(latencyMicros.length, this.now());
    if (seenMs > s.lastSeenMs) s.lastSeenMs = seenMs;
  }

  /** Keeps `ev` as the last lifecycle event of its model version. */
  recordEvent(ev: ModelEvent): void {
    this.series(ev.name, ev.version).lastEvent = ev;
  }

  /** The last lifecycle event seen for `name`/`version`, if any. */
  lastEvent(name: string, version: number): ModelEvent | undefined {
    return this.models.get(name)?.get(version)?.lastEvent;
  }

  /**
   * The series of `name`'s shadow `version` compared against
   * `productionVersion`, created on first use. The caller records into it
   * (a batch usually holds one such pair, so it is looked up once per run).
   */
  shadowSeries(name: string, version: number, productionVersion: number): ShadowSeries {
    let versions = this.shadows.get(name);
    if (!versions) this.shadows.set(name, (versions = new Map()));
    let productions = versions.get(version);
    if (!productions) versions.set(version, (productions = new Map()));
    let s = productions.get(productionVersion);
    if (!s) productions.set(productionVersion, (s = new ShadowSeries()));
    return s;
  }

  /** Whether anything (traffic, a shadow result or an event) was seen for `name`. */
  has(name: string): boolean {
    return this.models.has(name) || this.shadows.has(name);
  }

  /** Whether requests (not just events or shadow results) were seen for `name`. */
  hasTraffic(name: string): boolean {
    const versions = this.models.get(name);
    if (versions) for (const s of versions.values()) if (s.requests > 0) return true;
    return false;
  }

  /**
   * Statistics of `name`'s versions, or of every model's when `name` is
   * undefined; sorted by name, then version. A version that is loaded but not
   * called yet is a row with zero requests (and its last lifecycle event).
   * Model-level events (PROBE_SET/PROBE_CLEARED) carry version 0, which no
   * version has: they are no row. Golden probes never reach these series.
   */
  stats(name?: string): VersionStats[] {
    const names = name === undefined ? [...this.models.keys()].sort() : this.models.has(name) ? [name] : [];
    const now = this.now();
    const out: VersionStats[] = [];
    for (const n of names) {
      const versions = [...this.models.get(n)!.entries()].sort((a, b) => a[0] - b[0]);
      for (const [version, s] of versions) {
        if (version === 0) continue;
        const errorsByCode: Record<string, number> = {};
        for (const [code, count] of s.errorsByCode) errorsByCode[codeName(code)] = count;
        out.push({
          name: n,
          version,
          requests: s.requests,
          errors: s.errors,
          p50Ms: s.latency.quantile(0.5) / 1000,
          p95Ms: s.latency.quantile(0.95) / 1000,
          p99Ms: s.latency.quantile(0.99) / 1000,
          rps: s.rate.rate(now),
          errorsByCode,
          meanMs: s.latency.mean() / 1000,
          lastSeenMs: s.lastSeenMs,
        });
      }
    }
    return out;
  }

  /**
   * Shadow statistics of `name`, or of every model when `name` is undefined;
   * sorted by name, version, then production version. `agreementRate` is
   * agreements over the calls that succeeded (requests − errors), 0 when none did.
   */
  shadowStats(name?: string): ShadowStats[] {
    const names = name === undefined ? [...this.shadows.keys()].sort() : this.shadows.has(name) ? [name] : [];
    const out: ShadowStats[] = [];
    for (const n of names) {
      const versions = [...this.shadows.get(n)!.entries()].sort((a, b) => a[0] - b[0]);
      for (const [version, productions] of versions) {
        for (const [productionVersion, s] of [...productions.entries()].sort((a, b) => a[0] - b[0])) {
          const succeeded = s.requests - s.errors;
          out.push({
            name: n,
            version,
            productionVersion,
            requests: s.requests,
            agreements: s.agreements,
            agreementRate: succeeded === 0 ? 0 : s.agreements / succeeded,
            errors: s.errors,
            p50Ms: s.latency.quantile(0.5) / 1000,
            p99Ms: s.latency.quantile(0.99) / 1000,
          });
        }
      }
    }
    return out;
  }

  private series(name: string, version: number): VersionSeries {
    let versions = this.models.get(name);
    if (!versions) this.models.set(name, (versions = new Map()));
    let s = versions.get(version);
    if (!s) versions.set(version, (s = new VersionSeries()));
    return s;
  }
}
