/**
 * OpenTelemetry start-up for every service, from the standard OTEL_*
 * variables: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
 * OTEL_TRACES_SAMPLER(_ARG) (default here: parentbased_traceidratio at 5 %),
 * OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT (OTLP over gRPC; nothing is exported
 * when unset, but context still propagates). INFERMESH_TRACE_FILE also writes
 * spans as JSON lines to a file (tests, quick looks without a collector, and
 * `infermesh up`'s <dir>/traces/ for `infermesh traces show`), rotated to
 * `<file>.1` past INFERMESH_TRACE_FILE_MAX_BYTES when set.
 *
 * Built from the tracing part of the Node SDK (sdk-trace-node: tracer
 * provider, W3C propagator, AsyncLocalStorage context) rather than
 * @opentelemetry/sdk-node's NodeSDK, which loads every exporter and detector
 * and costs about 56 MB of RSS per process (measured: 66 → 122 MB) against a
 * router budget of 150 MB. No auto-instrumentation: the hot path is
 * instrumented by hand (FIELD-NOTES: HTTP auto-instrumentation is costly).
 */
import { trace, type Attributes, type Context, type Link, type SpanKind, type Tracer } from '@opentelemetry/api';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  NodeTracerProvider,
  ParentBasedSampler,
  SamplingDecision,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SamplingResult,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-node';
import { FileSpanExporter } from './file-exporter.js';

export { parseTraceparent, formatTraceparent, isSampled, epochMs } from './traceparent.js';

export interface Telemetry {
  tracer: Tracer;
  /**
   * Share of requests without a sampled parent that start a trace (from
   * OTEL_TRACES_SAMPLER_ARG): the hot path decides with it before creating
   * any span, so unsampled requests cost nothing.
   */
  rootRatio: number;
  /** Flushes and stops the provider. Idempotent. */
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  /** Extra resource attributes (replica id, version, …). */
  attributes?: Record<string, string>;
  /** Span processors to use instead of the OTLP exporter (tests pass an in-memory one). */
  processors?: SpanProcessor[];
  /**
   * Registers the AsyncLocalStorage context manager (default true), which
   * `startActiveSpan` and `context.active()` need across awaits. It turns on
   * Node's async hooks, a cost on every async resource of the process (each
   * HTTP/2 stream, write, promise); the router and replicas pass span
   * contexts explicitly on their data planes and start without it.
   */
  asyncContext?: boolean;
  /**
   * Names of root spans whose sampling the caller draws itself (with
   * `rootRatio`) before it starts them: the provider records each one it is
   * given. Without this its own ratio sampler would draw a second time and
   * keep rootRatio² of them (0.25 % instead of 5 %). Other spans are sampled
   * as usual (parent-based, the ratio at the root).
   */
  headSampled?: string[];
}

/** Starts tracing for `serviceName`; `env` is the process environment (read here for OTEL_* only). */
export async function startTelemetry(serviceName: string, env: NodeJS.ProcessEnv, o: TelemetryOptions = {}): Promise<Telemetry> {
  if (!env.OTEL_TRACES_SAMPLER) {
    env.OTEL_TRACES_SAMPLER = 'parentbased_traceidratio';
    env.OTEL_TRACES_SAMPLER_ARG ??= '0.05';
  }
  const processors: SpanProcessor[] = [...(o.processors ?? [])];
  if (env.INFERMESH_TRACE_FILE) {
    // Batched like an OTLP export would be, flushed often so a test sees its spans quickly; small
    // batches, so encoding one holds the event loop only briefly (512 spans at once is a visible stall).
    processors.push(
      new BatchSpanProcessor(new FileSpanExporter(env.INFERMESH_TRACE_FILE, env.OTEL_SERVICE_NAME || serviceName, Math.max(0, Number(env.INFERMESH_TRACE_FILE_MAX_BYTES) || 0)), { scheduledDelayMillis: 100, maxExportBatchSize: 64, maxQueueSize: 8192 }),
    );
  }
  if (!o.processors && (env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)) {
    // Loaded only when used: the exporter pulls in the OTLP transformer.
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-grpc');
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter() as SpanExporter));
  }
  const resource = resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME || serviceName, ...(o.attributes ?? {}) }).merge(
    detectResources({ detectors: [envDetector] }),
  );
  const ratio = /^parentbased_traceidratio|traceidratio$/.test(env.OTEL_TRACES_SAMPLER) ? Number(env.OTEL_TRACES_SAMPLER_ARG ?? '1') : env.OTEL_TRACES_SAMPLER.endsWith('always_off') ? 0 : 1;
  const rootRatio = Number.isFinite(ratio) ? Math.min(1, Math.max(0, ratio)) : 0.05;
  const sampler = o.headSampled?.length ? new CallerDecidedRoots(new Set(o.headSampled), new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(rootRatio) })) : undefined;
  const provider = new NodeTracerProvider({ resource, spanProcessors: processors, ...(sampler ? { sampler } : {}) });
  provider.register(o.asyncContext === false ? { contextManager: null } : {});
  let done: Promise<void> | null = null;
  return {
    tracer: trace.getTracer('infermesh'),
    rootRatio,
    shutdown: () => (done ??= provider.shutdown().catch(() => undefined)),
  };
}

/** Records the root spans named in `names` (the caller sampled them already); everything else as `other` decides. */
class CallerDecidedRoots implements Sampler {
  constructor(
    private readonly names: ReadonlySet<string>,
    private readonly other: Sampler,
  ) {}

  shouldSample(context: Context, traceId: string, name: string, kind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    if (this.names.has(name) && !trace.getSpanContext(context)) return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    return this.other.shouldSample(context, traceId, name, kind, attributes, links);
  }

  toString(): string {
    return `CallerDecidedRoots{${[...this.names].join(',')}; ${this.other.toString()}}`;
  }
}
