/**
 * Turns sample batches (checked by the SampleFeed) and lifecycle events into
 * statistics, slow requests and metrics. Never throws: a payload that does
 * not decode, or decodes to something inconsistent, is counted in
 * infermesh_monitor_bad_messages_total and dropped.
 */
import { ModelEvent, ModelEvent_Kind, type PredictionSample, type SampleBatch, type ShadowResult, type VersionTraffic } from '../../libs/proto/index.js';
import { eventSubjectProblem, NAME_RE } from '../../libs/bus/index.js';
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

  constructor(
    private readonly store: StatsStore,
    private readonly slow: SlowRequests,
    private readonly metrics: MonitorMetrics,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * One checked SampleBatch. A `replayed` one (stored before this monitor
   * started) only restores the slowest requests, which expire by their own
   * time; counters and histograms take live batches, so no request is
   * counted twice across a restart.
   */
  samples(batch: SampleBatch, replayed: boolean): void {
    const seenMs = batch.endMs > 0 ? batch.endMs : this.now();
    if (batch.slowest.length > 0) this.slow.record(batch.name, batch.slowest, seenMs);
    if (replayed) return;
    for (const v of batch.versions) {
      if (v.latencyMicros.length === 0) continue;
      this.store.recordTraffic(batch.name, v, seenMs);
      this.collectTraced(v.version, batch);
      this.observe(batch.name, v.version, v.latencyMicros, v.codes);
      if (v.computeMicros.length === v.latencyMicros.length && v.queueMicros.length === v.latencyMicros.length) this.observeReplica(batch.name, v.version, v.queueMicros, v.computeMicros);
    }
    if (batch.shadows.length > 0) this.shadows(batch.name, batch.shadows);
    if (batch.probes.length > 0) this.probes(batch.name, batch.probes);
  }

  /**
   * One ModelEvent. `live` is false for events replayed from the stream at
   * start-up: they restore the last event per version but are not counted.
   * Returns the event when it was valid (null when dropped).
   */
  event(subject: string, data: Uint8Array, live: boolean): ModelEvent | null {
    let ev: ModelEvent;
    try {
      ev = ModelEvent.decode(data);
    } catch (err) {
      this.bad('events', subject, 'undecodable', err);
      return null;
    }
    if (!NAME_RE.test(ev.name)) {
      this.bad('events', subject, 'bad model name');
      return null;
    }
    // Registry kinds only from the registry's subject, replica steps only from that replica's (a forged promotion is dropped).
    const misplaced = eventSubjectProblem(subject, ev);
    if (misplaced) {
      this.bad('events', subject, misplaced);
      return null;
    }
    this.store.recordEvent(ev);
    if (live) this.metrics.events.inc({ model: ev.name, kind: (ModelEvent_Kind[ev.kind] ?? 'UNRECOGNIZED').toLowerCase() });
    return ev;
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

  /** Golden-probe requests the routers saw, counted apart from traffic (infermesh_probe_requests_total). */
  private probes(model: string, probes: VersionTraffic[]): void {
    const perCode = this.perCode;
    for (const v of probes) {
      perCode.clear();
      for (const c of v.codes) perCode.set(c, (perCode.get(c) ?? 0) + 1);
      const version = String(v.version);
      for (const [code, n] of perCode) this.metrics.probeRequests.inc({ model, version, code: codeName(code) }, n);
    }
  }

  /** Counts and drops a malformed message (the sample feed reports its own here too). */
  bad(source: 'samples' | 'events', subject: string, reason: string, err?: unknown): void {
    this.metrics.badMessages.inc({ source });
    this.log.debug({ subject, reason, err: err === undefined ? undefined : String(err) }, 'dropped bad message');
  }
}
