/**
 * Riding out JetStream leader elections. On a NATS cluster a killed meta or
 * stream leader leaves a few seconds in which JetStream calls answer "no
 * responders" (503), time out, or say there is no leader; the cluster is back
 * once a new leader is elected. Calls that must succeed retry those failures
 * with a doubling backoff, bounded by the caller's deadline; every other error
 * (wrong last sequence, not found, permissions) is returned at once.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { NatsError, type JetStreamClient, type JetStreamPublishOptions, type MsgHdrs, type PubAck } from 'nats';

/** First wait after a transient failure; doubles up to {@link MAX_BACKOFF_MS}. */
const FIRST_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 1_000;
/** One JetStream request's wait: short, so a request lost to a dying leader is retried soon. */
export const ATTEMPT_TIMEOUT_MS = 1_000;
/** Budget of a storage call made outside any deadline (start-up, background work). */
export const DEFAULT_BUDGET_MS = 8_000;

const TRANSIENT_TEXT = /no responders|timeout|timed out|no leader|leader|not available|unavailable|temporarily|offline|not current|disconnect|stale connection|cluster/i;

/**
 * Whether `err` is what JetStream answers while a leader is being elected or
 * a server is away: retrying later may succeed. A compare-and-set conflict,
 * a missing key or a refused permission is not.
 */
export function isTransient(err: unknown): boolean {
  if (err instanceof NatsError) {
    const code = err.code as string;
    if (code === '503' || code === 'TIMEOUT' || code === '408' || code === 'DISCONNECT' || code === 'REQUEST_ERROR') return true;
    const api = err.api_error;
    if (api) {
      // 10071 wrong last sequence, 10037 no message found, 10059 stream not found: answers, not outages.
      if (api.err_code === 10071 || api.err_code === 10037 || api.err_code === 10059 || api.err_code === 10014) return false;
      if (api.code === 503 || api.code === 408 || api.code === 500) return true;
      return TRANSIENT_TEXT.test(api.description ?? '');
    }
    if (code === 'PERMISSIONS_VIOLATION' || code === 'AUTHORIZATION_VIOLATION' || code === 'CONNECTION_CLOSED') return false;
  }
  const text = err instanceof Error ? err.message : String(err);
  if (/wrong last sequence|key exists|permission|authorization/i.test(text)) return false;
  return TRANSIENT_TEXT.test(text);
}

const deadlines = new AsyncLocalStorage<number>();

/**
 * Runs `fn` with `deadline` (epoch ms; Infinity = none) as the budget of the
 * storage retries it makes ({@link retryTransient} without its own deadline).
 */
export function withDeadline<T>(deadline: number, fn: () => Promise<T>): Promise<T> {
  return deadlines.run(deadline, fn);
}

/** The deadline storage calls now run under: the caller's ({@link withDeadline}) or {@link DEFAULT_BUDGET_MS} from now. */
export function currentDeadline(): number {
  const d = deadlines.getStore();
  // Leave the answer time to travel back before the caller's deadline passes.
  return d !== undefined && Number.isFinite(d) ? d - 150 : Date.now() + DEFAULT_BUDGET_MS;
}

export interface RetryOptions {
  /** Epoch ms after which the last error is thrown; default {@link currentDeadline}. */
  deadline?: number;
  /** Called before each retry (logging, counting). */
  onRetry?(err: unknown, attempt: number): void;
  /** Errors retried besides {@link isTransient}'s. */
  alsoRetry?(err: unknown): boolean;
}

/** Calls `fn` until it succeeds, a non-transient error, or the deadline (then the last error is thrown). */
export async function retryTransient<T>(fn: () => Promise<T>, o: RetryOptions = {}): Promise<T> {
  const deadline = o.deadline ?? currentDeadline();
  let wait = FIRST_BACKOFF_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!(isTransient(err) || o.alsoRetry?.(err))) throw err;
      const left = deadline - Date.now();
      if (left <= 0) throw err;
      o.onRetry?.(err, attempt);
      const jitter = wait * (0.75 + Math.random() * 0.5);
      await new Promise((r) => setTimeout(r, Math.min(jitter, left)));
      wait = Math.min(wait * 2, MAX_BACKOFF_MS);
    }
  }
}

/** A message id for JetStream's duplicate window: the same bytes on the same subject are stored once. */
export function contentMsgId(subject: string, data: Uint8Array): string {
  return createHash('sha256').update(subject).update('\0').update(data).digest('base64url').slice(0, 32);
}

/**
 * Publishes to a JetStream stream and waits for its acknowledgement,
 * retrying transient failures until `deadline`. `msgID` (default: a hash of
 * subject and bytes) lets JetStream drop the copy of a publish whose
 * acknowledgement was lost and which was sent again, so a retry never stores
 * a message twice (within the stream's duplicate window, 2 min by default).
 */
export function publishAcked(
  js: JetStreamClient,
  subject: string,
  data: Uint8Array,
  o: { deadline?: number; msgID?: string; headers?: MsgHdrs; expect?: JetStreamPublishOptions['expect']; onRetry?: RetryOptions['onRetry'] } = {},
): Promise<PubAck> {
  const deadline = o.deadline ?? currentDeadline();
  const msgID = o.msgID ?? contentMsgId(subject, data);
  return retryTransient(
    () =>
      js.publish(subject, data, {
        msgID,
        timeout: Math.max(100, Math.min(ATTEMPT_TIMEOUT_MS, deadline - Date.now())),
        ...(o.headers ? { headers: o.headers } : {}),
        ...(o.expect ? { expect: o.expect } : {}),
      }),
    { deadline, onRetry: o.onRetry },
  );
}
