/**
 * Collects items for a multiplexed stream and sends them as one frame: at
 * once when the caller says the stream is idle (an extra event-loop turn
 * would be pure latency), else at the end of this event-loop turn, so that
 * everything produced in the turn shares one frame (one grpc-js write, one
 * HTTP/2 DATA frame) under load.
 *
 * A frame never grows past `budgetBytes`: an item that would push it over
 * sends what is collected first. A frame over the stream's message limit
 * would break the whole stream and every request on it, not just its own.
 */
export class FrameCoalescer<T> {
  private items: T[] = [];
  private bytes = 0;
  private scheduled = false;

  /**
   * `sizeOf` is an upper bound of an item's encoded size (cheap: no
   * encoding); `budgetBytes` the most a frame may hold by that measure.
   */
  constructor(
    private readonly send: (items: T[]) => void,
    private readonly sizeOf: (item: T) => number = () => 0,
    private readonly budgetBytes = Infinity,
  ) {}

  add(item: T, idle: boolean): void {
    const n = this.sizeOf(item);
    if (this.bytes + n > this.budgetBytes && this.items.length > 0) this.flush();
    this.items.push(item);
    this.bytes += n;
    if (idle) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  /** Sends what is collected now (nothing when empty). */
  readonly flush = (): void => {
    this.scheduled = false;
    if (this.items.length === 0) return;
    const items = this.items;
    this.items = [];
    this.bytes = 0;
    this.send(items);
  };
}

/**
 * Headroom of an internal multiplexed link (router ↔ replica) over the
 * client-facing message limit: one request or answer of the largest size a
 * client may send or receive, plus its frame's fields (ids, model name,
 * trace context, status message), always fits in one frame.
 */
export const LINK_HEADROOM_BYTES = 64 * 1024;

/** The message limit of an internal link that carries messages of up to `maxMessageBytes` each. */
export function linkMessageBytes(maxMessageBytes: number): number {
  return maxMessageBytes + LINK_HEADROOM_BYTES;
}
