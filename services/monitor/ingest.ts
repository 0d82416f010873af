/**
 * Turns NATS payloads into statistics, slow requests and metrics. Never
 * throws: a payload that does not decode, or decodes to something
 * inconsistent, is counted in infermesh_monitor_bad_messages_total and dropped.
 */
import { ModelEvent, ModelEvent_Kind, SampleBatch, type PredictionSample, type ShadowResult } from '../../libs/proto/index.js';
import { NAME_RE, subjects } from '../../libs/bus/index.js';
import { codeName } from '../../libs/errors/index.js';
import type { Logger } from '../../libs/log/index.js';
import type { StatsStore } from './stats-store.js';
import type { SlowRequests } from './slow-requests.js';
import type { MonitorMetrics } from './metrics.js';

/** A W3C trace id: 32 lowercase hex digits, not all zero. */
const TRACE_ID_RE = /^(?!0{32})[0-9a-f]{32}$/;

export class Ingest {
  // Reused per batch: requests per status code of one version.
  private readonly perCode = new Map<number, number>();
  // Reused per version: trace ids of its traced requests by latency (µs), and the ids already taken.
  private readonly traced = new Map<number, string[]>();
  private readonly tracedIds = new Set<string>();
  /** Called with every valid batch after the statistics took it (drift windows, alert windows). */
  private readonly listeners: ((batch: SampleBatch) => void)[] = [];

  constructor(
    private readonly store: StatsStore,
    private readonly slow: SlowRequests,
    private readonly metrics: MonitorMetrics,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Adds a consumer of every valid sample batch; it must not throw. */
  onBatch(listener: (batch: SampleBatch) => void): void {
    this.listeners.push(listener);
  }

  /** One SampleBatch published on `infermesh.samples.<name>`. */
  samples(subject: string, data: Uint8Array): void {
    let batch: SampleBatch;
    try {
      batch = SampleBatch.decode(data);
    } catch (err) {
      return this.bad('samples', subject, 'undecodable', err);
    }
    if (!NAME_RE.test(batch.name) || subject !== subjects.samples(batch.name)) {
      return this.bad('samples', subject, 'name does not match subject');
    }
    for (const v of batch.versions) {
      if (v.latencyMicros.length !== v.codes.length) return this.bad('samples', subject, 'latencies and codes differ in length');
    }
    const seenMs = batch.endMs > 0 ? batch.endMs : this.now();
    for (const v of batch.versions) {
      if (v.latencyMicros.length === 0) continue;
      this.store.recordTraffic(batch.name, v, seenMs);
      this.collectTraced(v.version, batch);
      this.observe(batch.name, v.version, v.latencyMicros, v.codes);
      if (v.computeMicros.length === v.latencyMicros.length && v.queueMicros.length === v.latencyMicros.length) this.observeReplica(batch.name, v.version, v.queueMicros, v.computeMicros);
    }
    if (batch.slowest.length > 0) this.slow.record(batch.name, batch.slowest, seenMs);
    if (batch.shadows.length > 0) this.shadows(batch.name, batch.shadows);
    for (const l of this.listeners) {
      try {
        l(batch);
      } catch (err) {
        this.log.warn({ err: String(err) }, 'sample listener failed');
      }
    }
  }

  /**
   * One ModelEvent. `live` is false for events replayed from the stream at
   * start-up: they restore the last event per version but are not counted.
   */
  event(subject: string, data: Uint8Array, live: boolean): void {
    let ev: ModelEvent;
    try {
      ev = ModelEvent.decode(data);
    } catch (err) {
      return this.bad('events', subject, 'undecodable', err);
    }
    if (!NAME_RE.test(ev.name)) return this.bad('events', subject, 'bad model name');
    this.store.recordEvent(ev);
    if (live) this.metrics.events.inc({ model: ev.name, kind: (ModelEvent_Kind[ev.kind] ?? 'UNRECOGNIZED').toLowerCase() });
  }

  /**
   * Fills `traced` with the requests of `version` that came with a trace id
   * (the window's slowest and the traced samples, each trace once), so that
   * observe() can give them exemplars.
   */
  private collectTraced(version: number, batch: SampleBatch): void {
    this.traced.clear();
    if (batch.slowest.length === 0 && batch.samples.length === 0) return;
    this.tracedIds.clear();
    this.addTraced(version, batch.slowest);
    this.addTraced(version, batch.samples);
  }

  private addTraced(version: number, list: PredictionSample[]): void {
    for (const s of list) {
      if (s.version !== version || this.tracedIds.has(s.traceId) || !TRACE_ID_RE.test(s.traceId)) continue;
      this.tracedIds.add(s.traceId);
      const ids = this.traced.get(s.latencyMicros);
      if (ids) ids.push(s.traceId);
      else this.traced.set(s.latencyMicros, [s.traceId]);
    }
  }

  /**
   * Every request is counted once, from `versions[].latencyMicros`. A traced
   * request is one of those entries too (same version, same latency), so the
   * first entry matching it is observed with the trace as exemplar instead
   * of plainly: exemplars never add observations. A traced request with no
   * matching entry gets no exemplar.
   */
  private observe(model: string, version: number, latencies: number[], codes: number[]): void {
    const v = String(version);
    const duration = this.metrics.duration.labels(model, v);
    const traced = this.traced;
    const perCode = this.perCode;
    perCode.clear();
    for (let i = 0; i < latencies.length; i++) {
      const us = latencies[i]!;
      const traceId = traced.size > 0 ? traced.get(us)?.pop() : undefined;
      if (traceId === undefined) duration.observe(us / 1e6);
      else this.metrics.observeTraced(model, v, us / 1e6, traceId);
      const c = codes[i]!;
      perCode.set(c, (perCode.get(c) ?? 0) + 1);
    }
    for (const [code, n] of perCode) this.metrics.requests.inc({ model, version: v, code: codeName(code) }, n);
  }

  /** Queue wait and run time of the requests a replica answered (compute > 0). */
  private observeReplica(model: string, version: number, queue: number[], compute: number[]): void {
    const v = String(version);
    const q = this.metrics.queueDuration.labels(model, v);
    const c = this.metrics.computeDuration.labels(model, v);
    for (let i = 0; i < compute.length; i++) {
      if (compute[i] === 0) continue;
      q.observe(queue[i]! / 1e6);
      c.observe(compute[i]! / 1e6);
    }
  }

  /**
   * Records shadow results run by run: consecutive results of the same
   * (version, production version) pair share one series lookup and one
   * counter increment (a batch usually holds a single run).
   */
  private shadows(model: string, results: ShadowResult[]): void {
    let start = 0;
    while (start < results.length) {
      const { version, productionVersion } = results[start]!;
      const series = this.store.shadowSeries(model, version, productionVersion);
      const agreementsBefore = series.agreements;
      let end = start;
      for (; end < results.length; end++) {
        const r = results[end]!;
        if (r.version !== version || r.productionVersion !== productionVersion) break;
        series.record(r);
      }
      const labels = { model, version: String(version), production_version: String(productionVersion) };
      this.metrics.shadowRequests.inc(labels, end - start);
      this.metrics.shadowAgreements.inc(labels, series.agreements - agreementsBefore);
      start = end;
    }
  }

  private bad(source: 'samples' | 'events', subject: string, reason: string, err?: unknown): void {
    this.metrics.badMessages.inc({ source });
    this.log.debug({ subject, reason, err: err === undefined ? undefined : String(err) }, 'dropped bad message');
  }
}
