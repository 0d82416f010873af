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

/** First wait after a fast transient failure (no responders); doubles up to {@link MAX_BACKOFF_MS}. */
const FIRST_BACKOFF_MS = 50;
/** Longest wait between attempts: a new leader is used within this of its election. */
const MAX_BACKOFF_MS = 250;
/**
 * How long an attempt may go unanswered before another is sent beside it
 * (hedged): a request lost to a dying leader is sent again soon, while a slow
 * but live leader (a loaded machine) can still answer the first. Grows by half
 * per attempt up to {@link MAX_WINDOW_MS}; jittered so callers spread out.
 */
const FIRST_WINDOW_MS = 300;
const MAX_WINDOW_MS = 800;
/** Most attempts of one call out at once. */
const MAX_IN_FLIGHT = 5;
/**
 * How long one JetStream request stays out (the JetStream handle's timeout,
 * a publish's): long, since later attempts are sent beside it rather than
 * after it ({@link retryTransient}).
 */
export const ATTEMPT_TIMEOUT_MS = 4_000;
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

/**
 * The deadline storage calls now run under: the caller's ({@link withDeadline}),
 * but never more than {@link DEFAULT_BUDGET_MS} from now. A JetStream leader
 * election ends within that; NATS down for longer is an outage, and a caller
 * with a long deadline is told UNAVAILABLE then rather than held to its end.
 */
export function currentDeadline(): number {
  const d = deadlines.getStore();
  const budget = Date.now() + DEFAULT_BUDGET_MS;
  // Leave the answer time to travel back before the caller's deadline passes.
  return d !== undefined && Number.isFinite(d) ? Math.min(d - 150, budget) : budget;
}

export interface RetryOptions {
  /** Epoch ms after which the last error is thrown; default {@link currentDeadline}. */
  deadline?: number;
  /** Called before each retry (logging, counting). */
  onRetry?(err: unknown, attempt: number): void;
  /** Errors retried besides {@link isTransient}'s. */
  alsoRetry?(err: unknown): boolean;
}

/**
 * Calls `fn` until it succeeds, fails with a non-transient error, or the
 * deadline passes (then the last error is thrown). An attempt that fails fast
 * (no responders, no leader) is retried after a short jittered backoff; one
 * still unanswered after its window is joined by another without being given
 * up: whichever answers first wins. So `fn` must be safe to run twice at once
 * — a read, a compare-and-set write (a second copy is refused), a publish
 * with a message id (deduplicated) — as every caller here is.
 */
export function retryTransient<T>(fn: () => Promise<T>, o: RetryOptions = {}): Promise<T> {
  const deadline = o.deadline ?? currentDeadline();
  return new Promise<T>((resolve, reject) => {
    let done = false;
    let attempt = 0;
    let inFlight = 0;
    let wait = FIRST_BACKOFF_MS;
    let lastErr: unknown = null;
    let next: NodeJS.Timeout | null = null;
    const settle = (): boolean => {
      if (done) return false;
      done = true;
      if (next) clearTimeout(next);
      clearTimeout(expiry);
      return true;
    };
    const fail = (err: unknown): void => {
      if (settle()) reject(err);
    };
    // A deadline already past still gets one attempt (its first window).
    const budget = deadline - Date.now();
    const expiry = setTimeout(() => fail(lastErr ?? new NatsError('timeout', 'TIMEOUT')), budget > 0 ? budget : FIRST_WINDOW_MS);
    const schedule = (ms: number) => {
      if (next) clearTimeout(next);
      next = setTimeout(launch, Math.max(0, Math.min(ms, deadline - Date.now())));
    };
    function launch(): void {
      next = null;
      if (done) return;
      if (attempt > 0 && Date.now() >= deadline) return fail(lastErr ?? new NatsError('timeout', 'TIMEOUT'));
      if (inFlight >= MAX_IN_FLIGHT) return; // the next answer (or failure) schedules again
      const mine = ++attempt;
      if (mine > 1) o.onRetry?.(lastErr, mine - 1);
      inFlight++;
      let p: Promise<T>;
      try {
        p = fn();
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(
        (v) => {
          inFlight--;
          if (settle()) resolve(v);
        },
        (err: unknown) => {
          inFlight--;
          if (done) return;
          if (!(isTransient(err) || o.alsoRetry?.(err))) return fail(err);
          lastErr = err;
          // The newest attempt failed (or the cap was reached): next one after a backoff.
          if (mine === attempt || next === null) {
            schedule(wait * (0.75 + Math.random() * 0.5));
            wait = Math.min(wait * 2, MAX_BACKOFF_MS);
          }
        },
      );
      // Unanswered after its window: another beside it.
      schedule(Math.min(MAX_WINDOW_MS, FIRST_WINDOW_MS * 1.5 ** (mine - 1)) * (0.8 + Math.random() * 0.4));
    }
    launch();
  });
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
        timeout: Math.max(250, Math.min(ATTEMPT_TIMEOUT_MS, deadline - Date.now())),
        ...(o.headers ? { headers: o.headers } : {}),
        ...(o.expect ? { expect: o.expect } : {}),
      }),
    { deadline, onRetry: o.onRetry },
  );
}
