import { GRPC_PREFIX_BYTES } from '../grpc/index.js';

/** Who receives the gRPC messages of one HTTP/2 stream. */
export interface MessageSink {
  /**
   * A message's prefix (compressed flag, declared length), before any of its
   * body is kept: false refuses it (the sink ends the stream; nothing more of
   * the chunk is read), so a hostile length never becomes an allocation.
   */
  declared(flag: number, length: number): boolean;
  message(msg: Buffer): void;
  /** True once the sink has ended the stream: the rest of a chunk is dropped. */
  readonly stopped: boolean;
}

/**
 * Splits an HTTP/2 stream's bytes into gRPC messages (a 5-byte prefix, then
 * the message), for the Runtime link's both ends. A message inside one chunk
 * is handed on as a view of it, copied out only when small next to the read
 * buffer it would keep alive; one that spans chunks is copied together once.
 */
export class GrpcMessageReader {
  private readonly head = Buffer.alloc(GRPC_PREFIX_BYTES);
  private headUsed = 0;
  private body: Buffer | null = null;
  private bodyUsed = 0;

  constructor(private readonly sink: MessageSink) {}

  push(chunk: Buffer): void {
    const sink = this.sink;
    let at = 0;
    const len = chunk.length;
    while (at < len && !sink.stopped) {
      if (this.body === null) {
        if (this.headUsed === 0 && len - at >= GRPC_PREFIX_BYTES) {
          const n = chunk.readUInt32BE(at + 1);
          if (!sink.declared(chunk[at]!, n)) return;
          if (len - at - GRPC_PREFIX_BYTES >= n) {
            const msg = chunk.subarray(at + GRPC_PREFIX_BYTES, at + GRPC_PREFIX_BYTES + n);
            at += GRPC_PREFIX_BYTES + n;
            // A view into the session's read buffer: a message kept a while would keep the whole buffer alive.
            sink.message(msg.buffer.byteLength > 2 * n + 1024 ? Buffer.from(msg) : msg);
            continue;
          }
        }
        const take = Math.min(GRPC_PREFIX_BYTES - this.headUsed, len - at);
        chunk.copy(this.head, this.headUsed, at, at + take);
        this.headUsed += take;
        at += take;
        if (this.headUsed < GRPC_PREFIX_BYTES) return;
        this.headUsed = 0;
        const n = this.head.readUInt32BE(1);
        if (!sink.declared(this.head[0]!, n)) return;
        this.body = Buffer.allocUnsafe(n);
        this.bodyUsed = 0;
      }
      const take = Math.min(this.body.length - this.bodyUsed, len - at);
      chunk.copy(this.body, this.bodyUsed, at, at + take);
      this.bodyUsed += take;
      at += take;
      if (this.bodyUsed === this.body.length) {
        const msg = this.body;
        this.body = null;
        sink.message(msg);
      }
    }
  }
}
