import { statSync } from 'node:fs';
import { appendFile, rename } from 'node:fs/promises';
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
  private size: number;

  /**
   * `maxBytes` > 0 bounds the disk used: once the file would grow past it, it
   * is renamed to `<path>.1` (replacing the one before) and a new one begun,
   * so at most about twice `maxBytes` is kept.
   */
  constructor(private readonly path: string, private readonly service: string, private readonly maxBytes = 0) {
    let size = 0;
    try {
      size = statSync(path).size;
    } catch {
      // No file yet.
    }
    this.size = size;
  }

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
    const text = `${lines.join('\n')}\n`;
    const bytes = Buffer.byteLength(text);
    const rotate = this.maxBytes > 0 && this.size > 0 && this.size + bytes > this.maxBytes;
    (rotate ? rename(this.path, `${this.path}.1`).catch(() => undefined) : Promise.resolve())
      .then(() => {
        if (rotate) this.size = 0;
        return appendFile(this.path, text);
      })
      .then(
        () => {
          this.size += bytes;
          done({ code: SUCCESS } as ExportResult);
        },
        (error: unknown) => done({ code: FAILED, error: error as Error } as ExportResult),
      );
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}
