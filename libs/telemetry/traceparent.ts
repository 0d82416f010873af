import { TraceFlags, type SpanContext } from '@opentelemetry/api';

const RE = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Parses a W3C `traceparent` (version 00); null when absent or malformed. */
export function parseTraceparent(value: string | undefined): SpanContext | null {
  if (!value) return null;
  const m = RE.exec(value.trim());
  if (!m || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return null;
  return { traceId: m[1]!, spanId: m[2]!, traceFlags: parseInt(m[3]!, 16), isRemote: true };
}

/** Formats a span context as a W3C `traceparent`. */
export function formatTraceparent(c: SpanContext): string {
  return `00-${c.traceId}-${c.spanId}-${(c.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

export function isSampled(c: SpanContext | null): boolean {
  return c !== null && (c.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED;
}

/** Epoch milliseconds of a performance.now() reading (spans take wall-clock times). */
export function epochMs(perfNow: number): number {
  return performance.timeOrigin + perfNow;
}
