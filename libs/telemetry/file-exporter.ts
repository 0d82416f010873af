import { appendFile } from 'node:fs/promises';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-node';

type ExportResult = Parameters<SpanExporter['export']>[1] extends (r: infer R) => void ? R : never;
// @opentelemetry/core's ExportResultCode values.
const SUCCESS = 0;
const FAILED = 1;

/**
 * Writes finished spans as JSON lines to a file (INFERMESH_TRACE_FILE): for
 * tests and for looking at traces without a collector. Only names, ids,
 * timings, links and the attributes we set (never payloads).
 */
export class FileSpanExporter implements SpanExporter {
  constructor(private readonly path: string, private readonly service: string) {}

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    const lines = spans.map((s) =>
      JSON.stringify({
        service: this.service,
        name: s.name,
        kind: s.kind,
        traceId: s.spanContext().traceId,
        spanId: s.spanContext().spanId,
        parentSpanId: s.parentSpanContext?.spanId ?? null,
        start: s.startTime[0] * 1e3 + s.startTime[1] / 1e6,
        end: s.endTime[0] * 1e3 + s.endTime[1] / 1e6,
        attributes: s.attributes,
        links: s.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId })),
        status: s.status.code,
      }),
    );
    if (lines.length === 0) return done({ code: SUCCESS } as ExportResult);
    // The write runs on libuv's pool, not the event loop that serves requests; the
    // batch processor sends the next batch only after `done`, so lines never interleave.
    appendFile(this.path, `${lines.join('\n')}\n`).then(
      () => done({ code: SUCCESS } as ExportResult),
      (error: unknown) => done({ code: FAILED, error: error as Error } as ExportResult),
    );
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}
