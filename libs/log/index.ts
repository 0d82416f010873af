/**
 * Structured logs: one JSON object per line on stdout (pino). The test
 * harness and `infermesh up` read the `listening` line of each service to
 * learn its bound port. Never log per request at info level.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

/** A logger for `service`, at `level` (trace … fatal, or silent). */
export function createLogger(service: string, level = 'info', extra: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { service, pid: process.pid, ...extra }, timestamp: pino.stdTimeFunctions.isoTime });
}
