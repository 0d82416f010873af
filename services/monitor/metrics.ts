/**
 * The monitor's Prometheus metrics, on a registry of its own (so several
 * monitors can live in one process, as in tests). The registry speaks
 * OpenMetrics, the only text format that carries exemplars: the request
 * duration histogram links each bucket to a recent trace (`trace_id`).
 */
import { Counter, Histogram, Registry, collectDefaultMetrics, type OpenMetricsContentType } from 'prom-client';

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

  constructor() {
    this.registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
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
}
