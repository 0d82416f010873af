import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { RoutingTable } from './routing-table.js';

/** Counters the request path keeps (plain fields: the hot path only does `++`). */
export interface RouterCounters {
  inflight: number;
  /** gRPC calls whose request body is still arriving (they count toward the in-flight limit too). */
  receiving: number;
  shed: number;
  cancelled: number;
  /** Requests sent once more, to another replica, after an UNAVAILABLE (a broken or unreachable link, a version not ready there). */
  retried: number;
}

/**
 * The router's own Prometheus metrics on its REST port (`/metrics`): what
 * only it knows — requests in flight, load shed, replicas known and ejected.
 * Values are read from the plain counters at scrape time. Per-model latency
 * and errors come from the monitor, which every router feeds.
 */
export function routerMetrics(table: RoutingTable, c: RouterCounters): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'infermesh_router_' });
  // prom-client names these gauges *_total, which `promtool check metrics` rejects (only counters end in _total).
  for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(`infermesh_router_${n}`);
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({ name, help, registers: [registry], collect() { this.reset(); this.inc(read()); } });
  gauge('infermesh_router_inflight_requests', 'Requests in flight through this router', () => c.inflight);
  gauge('infermesh_router_receiving_requests', 'gRPC requests whose body is still arriving', () => c.receiving);
  gauge('infermesh_router_replicas', 'Inference replicas this router knows', () => table.replicaCount());
  gauge('infermesh_router_ejected_replicas', 'Replicas out of rotation after repeated timeouts', () => table.ejectedCount());
  gauge('infermesh_router_tls_failing_replicas', 'Replicas this router cannot verify over TLS now (not ready; the reason is in its log)', () => table.tlsFailing().now);
  counter('infermesh_router_replica_tls_failures_total', 'Times a replica connection started failing TLS verification (once per failure streak)', () => table.tlsFailing().total);
  counter('infermesh_router_shed_requests_total', 'Requests refused with RESOURCE_EXHAUSTED because too many were in flight', () => c.shed);
  counter('infermesh_router_cancelled_requests_total', 'Requests their callers cancelled', () => c.cancelled);
  counter('infermesh_router_retried_requests_total', 'Requests sent once more to another replica after UNAVAILABLE (a broken or unreachable link, a version not ready there)', () => c.retried);
  return registry;
}
