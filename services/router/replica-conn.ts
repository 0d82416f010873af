import http2 from 'node:http2';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { channelOptions, FrameCoalescer, GRPC_PREFIX_BYTES, linkMessageBytes } from '../../libs/grpc/index.js';
import type { Logger } from '../../libs/log/index.js';
import { ResponseFrame, RuntimeService, type RequestItem } from '../../libs/proto/index.js';
import { CancelledError, DeadlineExceededError, fromStatus, ResourceExhaustedError, UnavailableError, type MeshError } from '../../libs/errors/index.js';
import { putVarint, varintSize } from './varint.js';

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

/** The multiplexed stream under a ReplicaConn: writes gRPC messages (framed: GRPC_PREFIX_BYTES first), cancels. */
interface Link {
  write(framed: Buffer): void;
  cancel(): void;
}

/** Encoded size of one RequestItem (proto3: zero values left out). */
function itemSize(it: RequestItem, model: number, tp: number): number {
  let n = 1 + varintSize(it.id);
  if (model) n += 1 + varintSize(model) + model;
  if (it.version) n += 1 + varintSize(it.version);
  if (it.timeoutMicros) n += 1 + varintSize(it.timeoutMicros);
  if (tp) n += 1 + varintSize(tp) + tp;
  if (it.request.byteLength) n += 1 + varintSize(it.request.byteLength) + it.request.byteLength;
  if (it.priority) n += 1 + varintSize(it.priority);
  if (it.cancel) n += 2;
  return n;
}

/**
 * A RequestFrame encoded by hand, GRPC_PREFIX_BYTES of gRPC message prefix
 * first: one allocation and one copy of each request's bytes (the generic
 * encoder grows a buffer and copies again; this is the hot path).
 */
export function encodeRequestFrame(items: readonly RequestItem[]): Buffer {
  let total = 0;
  const sizes = new Array<number>(items.length * 3);
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    const model = Buffer.byteLength(it.model);
    const tp = Buffer.byteLength(it.traceparent);
    const n = itemSize(it, model, tp);
    sizes[3 * i] = n;
    sizes[3 * i + 1] = model;
    sizes[3 * i + 2] = tp;
    total += 1 + varintSize(n) + n;
  }
  const out = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + total);
  out[0] = 0;
  out.writeUInt32BE(total, 1);
  let at = GRPC_PREFIX_BYTES;
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    out[at++] = 0x0a;
    at = putVarint(out, at, sizes[3 * i]!);
    out[at++] = 0x08;
    at = putVarint(out, at, it.id);
    const model = sizes[3 * i + 1]!;
    if (model) {
      out[at++] = 0x12;
      at = putVarint(out, at, model);
      at += out.write(it.model, at, 'utf8');
    }
    if (it.version) {
      out[at++] = 0x18;
      at = putVarint(out, at, it.version);
    }
    if (it.timeoutMicros) {
      out[at++] = 0x20;
      at = putVarint(out, at, it.timeoutMicros);
    }
    const tp = sizes[3 * i + 2]!;
    if (tp) {
      out[at++] = 0x2a;
      at = putVarint(out, at, tp);
      at += out.write(it.traceparent, at, 'utf8');
    }
    if (it.request.byteLength) {
      out[at++] = 0x32;
      at = putVarint(out, at, it.request.byteLength);
      out.set(it.request, at);
      at += it.request.byteLength;
    }
    if (it.priority) {
      out[at++] = 0x38;
      at = putVarint(out, at, it.priority);
    }
    if (it.cancel) {
      out[at++] = 0x40;
      out[at++] = 1;
    }
  }
  return out;
}

/**
 * Splits a byte stream into gRPC messages (5-byte prefix, then the message).
 * A message inside one chunk is handed on as a view of it, one that spans
 * chunks is copied together once.
 */
class MessageReader {
  private head = Buffer.alloc(GRPC_PREFIX_BYTES);
  private headUsed = 0;
  private body: Buffer | null = null;
  private bodyUsed = 0;

  constructor(private readonly onMessage: (msg: Buffer) => void) {}

  push(chunk: Buffer): void {
    let at = 0;
    const len = chunk.length;
    while (at < len) {
      if (this.body === null) {
        if (this.headUsed === 0 && len - at >= GRPC_PREFIX_BYTES) {
          const n = chunk.readUInt32BE(at + 1);
          if (len - at - GRPC_PREFIX_BYTES >= n) {
            this.onMessage(chunk.subarray(at + GRPC_PREFIX_BYTES, at + GRPC_PREFIX_BYTES + n));
            at += GRPC_PREFIX_BYTES + n;
            continue;
          }
        }
        const take = Math.min(GRPC_PREFIX_BYTES - this.headUsed, len - at);
        chunk.copy(this.head, this.headUsed, at, at + take);
        this.headUsed += take;
        at += take;
        if (this.headUsed < GRPC_PREFIX_BYTES) return;
        this.headUsed = 0;
        this.body = Buffer.allocUnsafe(this.head.readUInt32BE(1));
        this.bodyUsed = 0;
      }
      const take = Math.min(this.body.length - this.bodyUsed, len - at);
      chunk.copy(this.body, this.bodyUsed, at, at + take);
      this.bodyUsed += take;
      at += take;
      if (this.bodyUsed === this.body.length) {
        const msg = this.body;
        this.body = null;
        this.onMessage(msg);
      }
    }
  }
}

const { HTTP2_HEADER_METHOD, HTTP2_HEADER_PATH, HTTP2_HEADER_CONTENT_TYPE, HTTP2_HEADER_TE } = http2.constants;
/** Flow-control window of the raw link (session and stream): frames are never held back on loopback or a LAN. */
const LINK_WINDOW_BYTES = 16 << 20;

export class ReplicaConn {
  /** Requests sent and not yet answered (power-of-two-choices load signal). */
  outstanding = 0;
  /** performance.now() until which the router avoids this replica (0 = in rotation). */
  ejectedUntil = 0;
  private timeoutsInARow = 0;
  private ejections = 0;
  private readonly client: grpc.Client;
  private stream: Link | null = null;
  /**
   * With `rawLink`, plaintext links go over node:http2 directly (no grpc-js call machinery per
   * frame); TLS ones always through grpc-js. Off by default: measured 221 -> 176 µs router CPU per
   * call at 4 callers, but 2 replicas served a compute-bound load at only ~1.2x one replica
   * through it (grpc-js's link: ~1.5x), not yet understood.
   */
  private readonly raw: boolean;
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
    rawLink = false,
  ) {
    this.raw = rawLink && !credentials._isSecure();
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
    // A raw link leaves the grpc-js channel without calls: connect it anyway, its state is how
    // ReplicaTrust learns that TLS fails toward this replica (and what `GET /v2/replicas` shows).
    if (this.raw) this.client.getChannel().getConnectivityState(true);
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
    this.stream?.write(encodeRequestFrame(items));
  }

  /** One ResponseFrame from the replica. */
  private received(buf: Buffer): void {
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
  }

  private open(): void {
    if (this.closed) return;
    if (this.raw) return this.openRaw();
    const s = this.client.makeBidiStreamRequest(RAW_INFER.path, RAW_INFER.requestSerialize, RAW_INFER.responseDeserialize) as grpc.ClientDuplexStream<Buffer, Buffer>;
    // grpc-js frames each message itself: hand it the message without our prefix.
    const link: Link = { write: (framed) => s.write(framed.subarray(GRPC_PREFIX_BYTES)), cancel: () => s.cancel() };
    this.stream = link;
    s.on('data', (buf: Buffer) => this.received(buf));
    const broken = this.breaker(link);
    s.on('error', (e: grpc.ServiceError) => broken(`failed: ${grpc.status[e.code] ?? e.code}`));
    s.on('end', () => broken('ended'));
  }

  /**
   * The link as one HTTP/2 stream of our own, speaking gRPC's wire protocol
   * to the replica's Runtime.Infer (PROTOCOL-HTTP2.md): per frame one write
   * and one read, none of grpc-js's per-message promises and stream objects.
   */
  private openRaw(): void {
    const url = new URL(`http://${this.address}`);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = Number(url.port || 80);
    // No Nagle: a small frame must not wait for the peer's delayed ACK of the previous one.
    const session = http2.connect(url, {
      settings: { initialWindowSize: LINK_WINDOW_BYTES, maxHeaderListSize: 64 * 1024 },
      createConnection: () => net.connect({ host, port, noDelay: true }),
    });
    session.on('error', () => undefined);
    session.once('connect', () => {
      try {
        session.setLocalWindowSize(LINK_WINDOW_BYTES);
      } catch {
        // The session went away meanwhile: its stream's close says so.
      }
    });
    const req = session.request({ [HTTP2_HEADER_METHOD]: 'POST', [HTTP2_HEADER_PATH]: RAW_INFER.path, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', [HTTP2_HEADER_TE]: 'trailers' });
    const link: Link = {
      write: (framed) => {
        if (!req.destroyed) req.write(framed);
      },
      cancel: () => {
        req.close(http2.constants.NGHTTP2_CANCEL);
        session.close();
      },
    };
    this.stream = link;
    const reader = new MessageReader((msg) => this.received(msg));
    const broken = this.breaker(link);
    let status = '';
    req.on('response', (h) => {
      if (h[':status'] !== 200) status = `HTTP ${h[':status']}`;
      else if (h['grpc-status'] !== undefined) status = `failed: ${grpc.status[Number(h['grpc-status'])] ?? h['grpc-status']}`;
    });
    req.on('trailers', (h) => {
      const code = Number(h['grpc-status'] ?? 0);
      status = code === 0 ? 'ended' : `failed: ${grpc.status[code] ?? code}`;
    });
    req.on('data', (chunk: Buffer) => reader.push(chunk));
    req.on('error', (e: NodeJS.ErrnoException) => {
      status ||= `failed: ${e.code ?? 'UNAVAILABLE'}`;
    });
    req.on('close', () => {
      broken(status || 'failed: UNAVAILABLE');
      if (!session.closed) session.close();
    });
  }

  /** What happens when `link` breaks: everything in flight on it is answered UNAVAILABLE, and the link reopens after a backoff. */
  private breaker(link: Link): (why: string) => void {
    return (why: string) => {
      if (this.stream !== link) return;
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
