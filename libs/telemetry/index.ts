/**
 * OpenTelemetry start-up for every service. Configured by the standard
 * OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER, …);
 * when no exporter endpoint is set, spans are created for context
 * propagation but not exported. No auto-instrumentation: the hot path is
 * instrumented by hand (FIELD-NOTES: HTTP auto-instrumentation is costly).
 */
import { NodeSDK } from '@opentelemetry/sdk-node';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { trace, type Tracer } from '@opentelemetry/api';

export interface Telemetry {
  tracer: Tracer;
  /** Flushes and stops the SDK. Idempotent. */
  shutdown(): Promise<void>;
}

/** Starts the SDK for `serviceName`; `env` is the process environment (read here for OTEL_* only). */
export function startTelemetry(serviceName: string, env: NodeJS.ProcessEnv, attributes: Record<string, string> = {}): Telemetry {
  const exporting = Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  if (!env.OTEL_SERVICE_NAME) env.OTEL_SERVICE_NAME = serviceName;
  const extra = Object.entries(attributes).map(([k, v]) => `${k}=${v}`).join(',');
  if (extra) env.OTEL_RESOURCE_ATTRIBUTES = env.OTEL_RESOURCE_ATTRIBUTES ? `${env.OTEL_RESOURCE_ATTRIBUTES},${extra}` : extra;
  if (!env.OTEL_TRACES_SAMPLER) {
    env.OTEL_TRACES_SAMPLER = 'parentbased_traceidratio';
    env.OTEL_TRACES_SAMPLER_ARG ??= '0.05';
  }
  if (!exporting) env.OTEL_TRACES_EXPORTER ??= 'none';
  env.OTEL_METRICS_EXPORTER ??= 'none';
  env.OTEL_LOGS_EXPORTER ??= 'none';
  const sdk = new NodeSDK({
    ...(exporting ? { traceExporter: new OTLPTraceExporter() } : {}),
    instrumentations: [],
  });
  sdk.start();
  let done: Promise<void> | null = null;
  return {
    tracer: trace.getTracer('infermesh'),
    shutdown: () => (done ??= sdk.shutdown().catch(() => undefined)),
  };
}
