/**
 * Recent serving statistics per (model, version): requests, errors and a
 * latency histogram over a sliding window of whole seconds. The alert rules
 * (p99, error rate) and the canary analysis read these, so an old incident
 * neither keeps an alert firing nor condemns a canary forever.
 */
import type { SampleBatch } from '../../libs/proto/index.js';
import { LatencyHistogram } from './latency-histogram.js';

interface Slot {
  second: number;
  requests: number;
  errors: number;
  latency: LatencyHistogram;
}

/** What one version did within the window. */
export interface WindowSummary {
  requests: number;
  errors: number;
  /** errors / requests; 0 without requests. */
  errorRate: number;
  p50Ms: number;
  p99Ms: number;
}

class VersionWindow {
  private readonly slots: Slot[] = [];

  constructor(private readonly seconds: number) {}

  record(second: number, latencies: number[], codes: number[]): void {
    let slot: Slot | undefined = this.slots[this.slots.length - 1];
    if (!slot || slot.second !== second) {
      slot = this.slots.find((s) => s.second === second);
      if (!slot) {
        slot = { second, requests: 0, errors: 0, latency: new LatencyHistogram() };
        this.slots.push(slot);
        this.slots.sort((a, b) => a.second - b.second);
      }
    }
    for (let i = 0; i < latencies.length; i++) {
      slot.requests++;
      if (codes[i] !== 0) slot.errors++;
      slot.latency.record(latencies[i]!);
    }
  }

  /** Drops slots older than the window; true when none is left. */
  prune(nowSecond: number): boolean {
    while (this.slots.length > 0 && this.slots[0]!.second <= nowSecond - this.seconds) this.slots.shift();
    return this.slots.length === 0;
  }

  /** The latencies of the window merged into one histogram. */
  histogram(nowSecond: number): LatencyHistogram {
    const hist = new LatencyHistogram();
    for (const s of this.slots) if (s.second > nowSecond - this.seconds) hist.add(s.latency);
    return hist;
  }

  summary(nowSecond: number): WindowSummary {
    const hist = new LatencyHistogram();
    let requests = 0;
    let errors = 0;
    for (const s of this.slots) {
      if (s.second <= nowSecond - this.seconds) continue;
      requests += s.requests;
      errors += s.errors;
      hist.add(s.latency);
    }
    return {
      requests,
      errors,
      errorRate: requests === 0 ? 0 : errors / requests,
      p50Ms: hist.quantile(0.5) / 1000,
      p99Ms: hist.quantile(0.99) / 1000,
    };
  }
}

export class WindowStats {
  private readonly models = new Map<string, Map<number, VersionWindow>>();
  private readonly seconds: number;

  /** `windowMs` is rounded up to whole seconds. */
  constructor(windowMs: number, private readonly now: () => number = Date.now) {
    this.seconds = Math.max(1, Math.ceil(windowMs / 1000));
  }

  /**
   * Adds a router's batch (every request it counted, by version). A batch
   * that ended before the window (a replayed one, after a restart) is
   * ignored: it could never count again.
   */
  add(batch: SampleBatch): void {
    const second = Math.floor((batch.endMs > 0 ? batch.endMs : this.now()) / 1000);
    if (second <= Math.floor(this.now() / 1000) - this.seconds) return;
    let m = this.models.get(batch.name);
    for (const v of batch.versions) {
      if (v.latencyMicros.length === 0) continue;
      if (!m) this.models.set(batch.name, (m = new Map()));
      let w = m.get(v.version);
      if (!w) m.set(v.version, (w = new VersionWindow(this.seconds)));
      w.record(second, v.latencyMicros, v.codes);
    }
  }

  /** The window of one version; zeros when it had no traffic in it. */
  summary(name: string, version: number): WindowSummary {
    const w = this.models.get(name)?.get(version);
    return w ? w.summary(Math.floor(this.now() / 1000)) : { requests: 0, errors: 0, errorRate: 0, p50Ms: 0, p99Ms: 0 };
  }

  /** The latencies of one version over the window (the canary analysis compares distributions); empty when it had no traffic. */
  histogram(name: string, version: number): LatencyHistogram {
    const w = this.models.get(name)?.get(version);
    return w ? w.histogram(Math.floor(this.now() / 1000)) : new LatencyHistogram();
  }

  /** Every (model, version) with traffic in the window; prunes the rest. */
  live(): { name: string; version: number }[] {
    const nowSecond = Math.floor(this.now() / 1000);
    const out: { name: string; version: number }[] = [];
    for (const [name, m] of this.models) {
      for (const [version, w] of m) {
        if (w.prune(nowSecond)) m.delete(version);
        else out.push({ name, version });
      }
      if (m.size === 0) this.models.delete(name);
    }
    return out;
  }
}
