/**
 * What every data-plane front door reads from a call besides its message:
 * its priority and its deadline. One parser and one normaliser, used by the
 * router and the replicas alike, so that two doors cannot read the same call
 * differently.
 *
 * Deadlines inside a process are one number: milliseconds on the monotonic
 * clock `performance.now()`. Wall-clock deadlines (grpc-js, `grpc-timeout`
 * read by the raw HTTP/2 path) and relative budgets (the Runtime stream's
 * `timeout_micros`) are converted here, at the door.
 */
import { InvalidArgumentError } from '../errors/index.js';

/** The metadata key of a call's priority. */
export const PRIORITY_HEADER = 'x-infermesh-priority';
/** The highest priority level; larger integers count as this. */
export const MAX_PRIORITY = 255;

const DIGITS = /^\d{1,12}$/;

/**
 * A call's priority: 0 (real-time, the default when absent) or a bulk level
 * 1–255 (larger integers count as 255).
 * Throws InvalidArgumentError naming `x-infermesh-priority` for anything but a
 * decimal integer ≥ 0 ("1.5", "-1", "high", "" are refused, not guessed).
 * A number (the Runtime stream's already-parsed field) is checked the same way.
 */
export function parsePriority(value: string | Buffer | number | undefined): number {
  if (value === undefined) return 0;
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0) return Math.min(value, MAX_PRIORITY);
    throw new InvalidArgumentError(PRIORITY_HEADER, `must be an integer from 0 to ${MAX_PRIORITY}`);
  }
  const s = typeof value === 'string' ? value.trim() : value.toString('latin1').trim();
  if (!DIGITS.test(s)) throw new InvalidArgumentError(PRIORITY_HEADER, `must be an integer from 0 to ${MAX_PRIORITY}, not ${JSON.stringify(s.slice(0, 16))}`);
  return Math.min(Number(s), MAX_PRIORITY);
}

/** The priority of a call from its metadata (the first `x-infermesh-priority` value); see parsePriority. */
export function priorityOf(headers: { get(key: string): (string | Buffer)[] }): number {
  const v = headers.get(PRIORITY_HEADER);
  return v.length === 0 ? 0 : parsePriority(v[0]);
}

/**
 * The one deadline normaliser: the monotonic deadline (`performance.now()`
 * milliseconds) of a call with `remainingMs` left, capped at `capMs` (the
 * service's longest and default timeout). A missing budget (Infinity, NaN)
 * gets the cap; a spent one (≤ 0) gives a deadline already past, `now`.
 */
export function deadlineAfter(remainingMs: number, capMs: number, now: number = performance.now()): number {
  if (!(remainingMs < capMs)) return now + capMs;
  return remainingMs > 0 ? now + remainingMs : now;
}

/** Milliseconds left before a wall-clock deadline (epoch ms, or grpc-js's Date); Infinity when there is none. */
export function remainingMsOf(deadline: Date | number): number {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? at - Date.now() : Infinity;
}
