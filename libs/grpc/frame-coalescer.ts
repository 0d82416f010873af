/**
 * Collects items for a multiplexed stream and sends them as one frame: at
 * once when the caller says the stream is idle (an extra event-loop turn
 * would be pure latency), else at the end of this event-loop turn, so that
 * everything produced in the turn shares one frame (one grpc-js write, one
 * HTTP/2 DATA frame) under load.
 */
export class FrameCoalescer<T> {
  private items: T[] = [];
  private scheduled = false;

  constructor(private readonly send: (items: T[]) => void) {}

  add(item: T, idle: boolean): void {
    this.items.push(item);
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
    this.send(items);
  };
}
