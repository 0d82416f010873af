import * as grpc from '@grpc/grpc-js';
import { channelOptions, FrameCoalescer, linkMessageBytes } from '../../libs/grpc/index.js';
import type { Logger } from '../../libs/log/index.js';
import { RequestFrame, ResponseFrame, RuntimeService, type RequestItem } from '../../libs/proto/index.js';
import { CancelledError, DeadlineExceededError, fromStatus, ResourceExhaustedError, UnavailableError, type MeshError } from '../../libs/errors/index.js';

/** Whoever waits for a request sent on a link (the request path's RouterRequest, a shadow call). */
export interface LinkCaller {
  /**
   * Called once with the request's answer: a serialized ModelInferResponse,
   * or why there is none (the replica's status rebuilt as a libs/errors
   * class, or the link's own: UNAVAILABLE when it broke, DEADLINE_EXCEEDED,
   * CANCELLED, RESOURCE_EXHAUSTED for a request it cannot carry); queue and
   * compute time as the replica measured them.
   */
  replied(result: Uint8Array | MeshError, queueMicros: number, computeMicros: number): void;
}

interface Pending {
  caller: LinkCaller;
  deadline: number;
}

const RAW_INFER = { ...RuntimeService.infer, requestSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };

/**
 * One inference replica as the router sees it: a long-lived multiplexed
 * bidirectional stream carrying many requests at once. Requests submitted in
 * one event-loop turn travel in one frame. A request is answered exactly
 * once: by the replica, by the sweeper when its deadline passes, or with
 * UNAVAILABLE when the stream breaks (the caller may then retry elsewhere).
 */
/** Timeouts in a row after which a replica is ejected (outlier detection). */
const EJECT_AFTER = 3;
const EJECT_BASE_MS = 1_000;
const EJECT_MAX_MS = 30_000;
const EMPTY = new Uint8Array(0);
/** Bytes of a RequestItem and its place in the frame beyond its strings and request (varints, tags). */
const ITEM_OVERHEAD_BYTES = 64;

/** An upper bound of a RequestItem's encoded size, without encoding it (UTF-8: ≤ 3 bytes per UTF-16 unit). */
function itemBytes(item: RequestItem): number {
  return item.request.byteLength + 3 * (item.model.length + item.traceparent.length) + ITEM_OVERHEAD_BYTES;
}

export class ReplicaConn {
  /** Requests sent and not yet answered (power-of-two-choices load signal). */
  outstanding = 0;
  /** performance.now() until which the router avoids this replica (0 = in rotation). */
  ejectedUntil = 0;
  private timeoutsInARow = 0;
  private ejections = 0;
  private readonly client: grpc.Client;
  private stream: grpc.ClientDuplexStream<Buffer, Buffer> | null = null;
  private readonly pending = new Map<number, Pending>();
  private readonly frames: FrameCoalescer<RequestItem>;
  /** The link's message limit: the client-facing one plus headroom for the frame around a request. */
  private readonly linkBytes: number;
  private nextId = 1;
  private closed = false;
  private backoffMs = 50;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    readonly id: string,
    readonly address: string,
    private readonly maxMessageBytes: number,
    private readonly log: Logger,
    credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
    serverName = '',
  ) {
    this.linkBytes = linkMessageBytes(maxMessageBytes);
    // Frames are split before they outgrow the link: one too large would break the stream and
    // every request on it. A request the link cannot carry at all fails alone (send).
    this.frames = new FrameCoalescer<RequestItem>((items) => this.sendFrame(items), itemBytes, this.linkBytes);
    // TLS is set up once per connection here; the frames on the stream cost the same either way.
    this.client = new grpc.Client(address, credentials, {
      ...channelOptions(this.linkBytes),
      'grpc.max_concurrent_streams': 100,
      ...(serverName ? { 'grpc.ssl_target_name_override': serverName } : {}),
    } as grpc.ChannelOptions);
    this.open();
    this.sweeper = setInterval(() => this.sweep(), 25);
    this.sweeper.unref();
  }

  /**
   * Queues one request for the next frame. `timeoutMicros` is also the
   * replica's budget. Returns the request's id on this stream (for cancel), 0
   * when it was answered at once.
   */
  send(model: string, version: number, timeoutMicros: number, traceparent: string, request: Uint8Array, priority: number, caller: LinkCaller): number {
    if (this.closed) {
      caller.replied(new UnavailableError('replica is gone'), 0, 0);
      return 0;
    }
    const item: RequestItem = { id: this.nextId++, model, version, timeoutMicros, traceparent, request, priority, cancel: false };
    if (request.byteLength > this.maxMessageBytes || itemBytes(item) > this.linkBytes) {
      caller.replied(new ResourceExhaustedError(`request: message of ${request.byteLength} bytes is larger than the limit of ${this.maxMessageBytes} bytes`), 0, 0);
      return 0;
    }
    this.pending.set(item.id, { caller, deadline: performance.now() + timeoutMicros / 1000 });
    this.outstanding++;
    this.enqueue(item);
    return item.id;
  }

  /** The caller gave up: answer CANCELLED now (freeing the slot) and tell the replica to drop it. */
  cancel(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    const now = performance.now();
    // A caller whose own deadline fired cancels just before the sweeper would: that is a timeout too.
    const timedOut = p.deadline - now < 5;
    this.answer(id, new CancelledError('cancelled by the caller'));
    if (timedOut) this.noteTimeouts(1, now);
    this.enqueue({ id, model: '', version: 0, timeoutMicros: 0, traceparent: '', request: EMPTY, priority: 0, cancel: true });
  }

  private enqueue(item: RequestItem): void {
    // Alone in flight: send now. Under load: one frame per event-loop turn.
    this.frames.add(item, this.outstanding === 1);
  }

  private sendFrame(items: RequestItem[]): void {
    if (!this.stream) this.open();
    const u8 = RequestFrame.encode({ items }).finish();
    this.stream!.write(Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength));
  }

  private open(): void {
    if (this.closed) return;
    const s = this.client.makeBidiStreamRequest(RAW_INFER.path, RAW_INFER.requestSerialize, RAW_INFER.responseDeserialize) as grpc.ClientDuplexStream<Buffer, Buffer>;
    this.stream = s;
    s.on('data', (buf: Buffer) => {
      this.backoffMs = 50;
      // It answers again: back in rotation.
      if (this.ejectedUntil) {
        this.ejectedUntil = 0;
        this.ejections = 0;
      }
      let frame: ResponseFrame;
      try {
        frame = ResponseFrame.decode(buf);
      } catch {
        this.log.warn({ replica: this.id }, 'malformed response frame');
        return;
      }
      for (const it of frame.items) this.answer(it.id, it.code === 0 ? it.response : fromStatus(it.code, it.message), it.queueMicros, it.computeMicros);
    });
    const broken = (why: string) => {
      if (this.stream !== s) return;
      this.stream = null;
      // Everything in flight on this stream is lost: answer UNAVAILABLE so callers can retry. The
      // callers' message names no replica (internal); the log does.
      if (!this.closed) this.log.warn({ replica: this.id, pending: this.pending.size }, `replica stream ${why}`);
      const lost = new UnavailableError(`replica stream ${why}`);
      for (const id of [...this.pending.keys()]) this.answer(id, lost);
      if (!this.closed) {
        const wait = this.backoffMs;
        this.backoffMs = Math.min(this.backoffMs * 2, 2000);
        setTimeout(() => {
          if (!this.stream && !this.closed) this.open();
        }, wait).unref();
      }
    };
    s.on('error', (e: grpc.ServiceError) => broken(`failed: ${grpc.status[e.code] ?? e.code}`));
    s.on('end', () => broken('ended'));
  }

  private answer(id: number, result: Uint8Array | MeshError, queueMicros = 0, computeMicros = 0): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    this.outstanding--;
    if (result instanceof Uint8Array) this.timeoutsInARow = 0;
    p.caller.replied(result, queueMicros, computeMicros);
  }

  /** The channel to the replica (its connectivity shows TLS failures: ReplicaTrust). */
  get channel(): ReturnType<grpc.Client['getChannel']> {
    return this.client.getChannel();
  }

  /** True while ejected for timing out repeatedly. */
  ejected(now: number): boolean {
    return this.ejectedUntil > now;
  }

  private sweep(): void {
    if (this.pending.size === 0) return;
    const now = performance.now();
    let expired = 0;
    for (const [id, p] of this.pending) {
      if (p.deadline <= now) {
        expired++;
        this.answer(id, new DeadlineExceededError('deadline exceeded waiting for the replica'));
      }
    }
    if (expired > 0) this.noteTimeouts(expired, now);
  }

  /**
   * Outlier detection: a replica that lets requests time out again and again
   * (frozen, overloaded) leaves the rotation for a while, longer each time.
   */
  private noteTimeouts(n: number, now: number): void {
    this.timeoutsInARow += n;
    if (this.timeoutsInARow >= EJECT_AFTER && !this.ejected(now)) {
      const ms = Math.min(EJECT_MAX_MS, EJECT_BASE_MS * 2 ** this.ejections++);
      this.ejectedUntil = now + ms;
      this.timeoutsInARow = 0;
      this.log.warn({ replica: this.id, ms }, 'replica ejected after repeated timeouts');
    }
  }

  /** Fails what is pending and closes the channel. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    const left = new UnavailableError('replica left');
    for (const id of [...this.pending.keys()]) this.answer(id, left);
    this.stream?.cancel();
    this.client.close();
  }
}
