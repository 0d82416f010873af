/**
 * The monitor's Prometheus metrics, on a registry of its own (so several
 * monitors can live in one process, as in tests). The registry speaks
 * OpenMetrics, the only text format that carries exemplars: the request
 * duration histogram links each bucket to a recent trace (`trace_id`).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type OpenMetricsContentType } from 'prom-client';
import type { FeatureDrift, VersionEvaluation } from '../../libs/proto/index.js';

/** Conventional request-duration buckets, 100 µs to 10 s. */
export const DURATION_BUCKETS_SECONDS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export class MonitorMetrics {
  readonly registry = new Registry<OpenMetricsContentType>();
  readonly requests: Counter<'model' | 'version' | 'code'>;
  readonly duration: Histogram<'model' | 'version'>;
  readonly events: Counter<'model' | 'kind'>;
  readonly badMessages: Counter<'source'>;
  readonly shadowRequests: Counter<'model' | 'version' | 'production_version'>;
  readonly shadowAgreements: Counter<'model' | 'version' | 'production_version'>;
  readonly queueDuration: Histogram<'model' | 'version'>;
  readonly computeDuration: Histogram<'model' | 'version'>;
  readonly probeUp: Gauge<'model'>;
  readonly probeDuration: Gauge<'model'>;
  readonly probes: Counter<'model' | 'result'>;
  readonly probeRequests: Counter<'model' | 'version' | 'code'>;
  readonly alertsFiring: Gauge<'model' | 'rule'>;
  readonly canaryRollbacks: Counter<'model'>;
  readonly driftPsi: Gauge<'model' | 'version' | 'feature'>;
  readonly driftKs: Gauge<'model' | 'version' | 'feature'>;
  /** What the drift gauges show, read at each scrape (the monitor points it at the drift tracker's report). */
  driftReport: () => readonly FeatureDrift[] = () => [];
  readonly costPer1000: Gauge<'model' | 'version' | 'bound'>;
  readonly costOptimalThreshold: Gauge<'model' | 'version'>;
  readonly costOptimalPer1000: Gauge<'model' | 'version'>;
  /** Evaluations with cost fields (models with a cost model), read at each scrape. */
  costReport: () => readonly VersionEvaluation[] = () => [];

  constructor() {
    this.registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // prom-client names these gauges *_total, which `promtool check metrics` rejects (only counters end in _total).
    for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(n);
    this.requests = new Counter({
      name: 'infermesh_requests_total',
      help: 'Requests seen by the routers, by model, version and gRPC status code name.',
      labelNames: ['model', 'version', 'code'],
      registers,
    });
    this.duration = new Histogram({
      name: 'infermesh_request_duration_seconds',
      help: 'End-to-end request latency seen by the routers.',
      labelNames: ['model', 'version'],
      buckets: DURATION_BUCKETS_SECONDS,
      enableExemplars: true,
      registers,
    });
    this.events = new Counter({
      name: 'infermesh_model_events_total',
      help: 'Model lifecycle events received since this monitor started, by kind.',
      labelNames: ['model', 'kind'],
      registers,
    });
    this.badMessages = new Counter({
      name: 'infermesh_monitor_bad_messages_total',
      help: 'NATS messages dropped because they could not be decoded or were inconsistent.',
      labelNames: ['source'],
      registers,
    });
    this.shadowRequests = new Counter({
      name: 'infermesh_shadow_requests_total',
      help: 'Mirrored calls to a shadow version, by model, shadow version and the production version it was compared with.',
      labelNames: ['model', 'version', 'production_version'],
      registers,
    });
    this.shadowAgreements = new Counter({
      name: 'infermesh_shadow_agreements_total',
      help: 'Successful mirrored calls whose answer agreed with production, by model, shadow version and production version.',
      labelNames: ['model', 'version', 'production_version'],
      registers,
    });
    this.queueDuration = new Histogram({
      name: 'infermesh_queue_duration_seconds',
      help: 'Time requests waited in an inference replica’s queue (batching and backlog), for requests a replica answered.',
      labelNames: ['model', 'version'],
      buckets: DURATION_BUCKETS_SECONDS,
      registers,
    });
    this.computeDuration = new Histogram({
      name: 'infermesh_compute_duration_seconds',
      help: 'Model run time (ONNX Runtime, the whole batch the request was in), for requests a replica answered.',
      labelNames: ['model', 'version'],
      buckets: DURATION_BUCKETS_SECONDS,
      registers,
    });
    this.probeUp = new Gauge({
      name: 'infermesh_probe_success',
      help: 'Whether the latest golden probe of the model answered correctly and in time (1) or not (0).',
      labelNames: ['model'],
      registers,
    });
    this.probeDuration = new Gauge({
      name: 'infermesh_probe_duration_seconds',
      help: 'Round-trip time of the latest golden probe through the router.',
      labelNames: ['model'],
      registers,
    });
    this.probes = new Counter({
      name: 'infermesh_probes_total',
      help: 'Golden probes sent, by model and result (ok, wrong, slow, error).',
      labelNames: ['model', 'result'],
      registers,
    });
    this.probeRequests = new Counter({
      name: 'infermesh_probe_requests_total',
      help: 'Golden-probe requests the routers saw (kept out of infermesh_requests_total, drift, evaluation and the alert windows), by model, version and gRPC status code name.',
      labelNames: ['model', 'version', 'code'],
      registers,
    });
    this.alertsFiring = new Gauge({
      name: 'infermesh_alerts_firing',
      help: 'Alerts firing now, by model and rule.',
      labelNames: ['model', 'rule'],
      registers,
    });
    this.canaryRollbacks = new Counter({
      name: 'infermesh_canary_rollbacks_total',
      help: 'Canaries rolled back by the monitor’s canary analysis.',
      labelNames: ['model'],
      registers,
    });
    // Computed at scrape time from the drift windows: no work per sample.
    this.driftPsi = new Gauge({
      name: 'infermesh_drift_psi',
      help: 'Population stability index of a feature (or output:<column>) of a model version against its baseline (reference profile or previous version).',
      labelNames: ['model', 'version', 'feature'],
      registers,
      collect: () => this.fillDrift(this.driftPsi, 'psi'),
    });
    this.driftKs = new Gauge({
      name: 'infermesh_drift_ks',
      help: 'Kolmogorov-Smirnov distance of a feature (or output:<column>) of a model version from its baseline.',
      labelNames: ['model', 'version', 'feature'],
      registers,
      collect: () => this.fillDrift(this.driftKs, 'ks'),
    });
    // Business impact, computed at scrape time from the joined outcomes of models with a cost model.
    this.costPer1000 = new Gauge({
      name: 'infermesh_cost_per_1000_decisions',
      help: 'Expected cost per 1,000 decisions of a model version under its cost model at the default threshold: bound="estimate", and the 95 % interval bound="low"|"high".',
      labelNames: ['model', 'version', 'bound'],
      registers,
      collect: () => this.fillCost(),
    });
    this.costOptimalThreshold = new Gauge({
      name: 'infermesh_cost_optimal_threshold',
      help: 'Decision threshold that minimises the cost of a model version over its joined outcomes.',
      labelNames: ['model', 'version'],
      registers,
    });
    this.costOptimalPer1000 = new Gauge({
      name: 'infermesh_cost_optimal_per_1000_decisions',
      help: 'Cost per 1,000 decisions of a model version at its cost-minimising threshold.',
      labelNames: ['model', 'version'],
      registers,
    });
    // Zero series exist from the start, so a scrape shows 0 rather than nothing.
    this.badMessages.inc({ source: 'samples' }, 0);
    this.badMessages.inc({ source: 'events' }, 0);
  }

  /**
   * Observes one request's latency (seconds) and makes its trace the
   * exemplar of the bucket it falls in. Counts the request like
   * `duration.labels(model, version).observe(seconds)` does, so a request
   * goes through exactly one of the two.
   */
  observeTraced(model: string, version: string, seconds: number, traceId: string): void {
    // prom-client types exemplarLabels with the metric's own label names; trace_id is an exemplar label only.
    (this.duration as unknown as Histogram<'model' | 'version' | 'trace_id'>).observe({
      labels: { model, version },
      value: seconds,
      exemplarLabels: { trace_id: traceId },
    });
  }

  /** Fills the three cost gauges (one collect, so they always agree). */
  private fillCost(): void {
    this.costPer1000.reset();
    this.costOptimalThreshold.reset();
    this.costOptimalPer1000.reset();
    for (const e of this.costReport()) {
      if (e.segment !== '' || !Number.isFinite(e.costPer1000)) continue;
      const l = { model: e.name, version: String(e.version) };
      this.costPer1000.set({ ...l, bound: 'estimate' }, e.costPer1000);
      if (Number.isFinite(e.costPer1000Low)) this.costPer1000.set({ ...l, bound: 'low' }, e.costPer1000Low);
      if (Number.isFinite(e.costPer1000High)) this.costPer1000.set({ ...l, bound: 'high' }, e.costPer1000High);
      if (Number.isFinite(e.optimalThreshold)) this.costOptimalThreshold.set(l, e.optimalThreshold);
      if (Number.isFinite(e.optimalCostPer1000)) this.costOptimalPer1000.set(l, e.optimalCostPer1000);
    }
  }

  private fillDrift(g: Gauge<'model' | 'version' | 'feature'>, key: 'psi' | 'ks'): void {
    g.reset();
    for (const f of this.driftReport()) g.set({ model: f.name, version: String(f.version), feature: f.feature }, f[key]);
  }
}
