/**
 * The slowest requests per model over a retention window, fed by the
 * routers' `SampleBatch.slowest` and read by GetSlowRequests.
 *
 * Time is cut into slices of retention/SLICES by each request's `atMs`, and
 * every slice keeps only its MAX_SLOW_REQUESTS slowest. Because a query asks
 * for at most MAX_SLOW_REQUESTS, the union of the slices' survivors always
 * holds the exact answer for the window, even after the slowest of all have
 * expired; memory stays bounded at (SLICES + 1) × MAX_SLOW_REQUESTS per model.
 * Expired slices are dropped on every insert and read.
 */
import type { PredictionSample, SlowRequest } from '../../libs/proto/index.js';

/** The most requests a query returns, and the most each time slice keeps. */
export const MAX_SLOW_REQUESTS = 100;
/** Slices per retention window. */
const SLICES = 15;

export class SlowRequests {
  // name -> slice index (floor(atMs / sliceMs)) -> entries, slowest first.
  private readonly models = new Map<string, Map<number, SlowRequest[]>>();
  private readonly sliceMs: number;

  /** `retentionMs` > 0: how long a request stays listed after it happened, by `now`. */
  constructor(
    readonly retentionMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.sliceMs = Math.max(1, Math.ceil(retentionMs / SLICES));
  }

  /**
   * Adds one router's slowest requests of `name`. A request without a time
   * is taken as seen at `seenMs`; one already outside the window is ignored.
   */
  record(name: string, slowest: readonly PredictionSample[], seenMs: number): void {
    let slices = this.models.get(name);
    if (!slices) this.models.set(name, (slices = new Map()));
    const now = this.now();
    this.prune(slices, now);
    const oldest = now - this.retentionMs;
    for (const s of slowest) {
      const atMs = s.atMs > 0 ? s.atMs : seenMs;
      if (atMs <= oldest) continue;
      const key = Math.floor(atMs / this.sliceMs);
      let list = slices.get(key);
      if (!list) slices.set(key, (list = []));
      insert(list, {
        name,
        version: s.version,
        traceId: s.traceId,
        latencyMs: s.latencyMicros / 1000,
        queueMs: s.queueMicros / 1000,
        computeMs: s.computeMicros / 1000,
        networkMs: s.networkMicros / 1000,
        routerMs: s.routerMicros / 1000,
        code: s.code,
        atMs,
      });
    }
  }

  /** Whether slow requests were ever recorded for `name` (even if all have expired). */
  has(name: string): boolean {
    return this.models.has(name);
  }

  /** The `limit` slowest requests of `name` within the window, slowest first (latest first on ties). */
  slowest(name: string, limit: number): SlowRequest[] {
    const slices = this.models.get(name);
    if (!slices) return [];
    const now = this.now();
    this.prune(slices, now);
    const oldest = now - this.retentionMs;
    const out: SlowRequest[] = [];
    for (const list of slices.values()) for (const r of list) if (r.atMs > oldest) out.push(r);
    out.sort(slowerFirst);
    if (out.length > limit) out.length = limit;
    return out;
  }

  /** Drops the slices that lie wholly outside the window. */
  private prune(slices: Map<number, SlowRequest[]>, now: number): void {
    const firstLive = Math.floor((now - this.retentionMs) / this.sliceMs);
    for (const key of slices.keys()) if (key < firstLive) slices.delete(key);
  }
}

function slowerFirst(a: SlowRequest, b: SlowRequest): number {
  return b.latencyMs - a.latencyMs || b.atMs - a.atMs;
}

/** Inserts `r` into `list` (slowest first), keeping at most MAX_SLOW_REQUESTS. */
function insert(list: SlowRequest[], r: SlowRequest): void {
  if (list.length >= MAX_SLOW_REQUESTS && slowerFirst(r, list[list.length - 1]!) >= 0) return;
  let i = list.length;
  while (i > 0 && slowerFirst(r, list[i - 1]!) < 0) i--;
  list.splice(i, 0, r);
  if (list.length > MAX_SLOW_REQUESTS) list.length = MAX_SLOW_REQUESTS;
}
