import http2 from 'node:http2';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { channelOptions, FrameCoalescer, GRPC_PREFIX_BYTES, linkMessageBytes } from '../../libs/grpc/index.js';
import type { Logger } from '../../libs/log/index.js';
import { RuntimeService, type RequestItem, type ResponseItem } from '../../libs/proto/index.js';
import { CancelledError, DeadlineExceededError, fromStatus, ResourceExhaustedError, UnavailableError, type MeshError } from '../../libs/errors/index.js';
import { LINK_DOWN } from './routing-core.js';
import { decodeResponseFrame, encodeRequestFrame, GrpcMessageReader, MalformedFrame } from '../../libs/wire/index.js';

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

/** Timeouts in a row after which a replica is ejected (outlier detection). */
const EJECT_AFTER = 3;
const EJECT_BASE_MS = 1_000;
const EJECT_MAX_MS = 30_000;
const EMPTY = new Uint8Array(0);
const EMPTY_BUF = Buffer.alloc(0);
/** Bytes of a RequestItem and its place in the frame beyond its strings and request (varints, tags). */
const ITEM_OVERHEAD_BYTES = 64;

/*
 * Link liveness (issue 18). A host cut off from the network drops packets
 * without a reset: a link to it looks open and its requests simply go
 * unanswered. So a link with requests pending that has heard nothing from
 * its replica for QUIET_MS (an idle one: IDLE_PROBE_MS) is probed (an HTTP/2 PING on the raw link, a
 * grpc.health.v1 Check on the grpc-js link's own connection); a probe
 * unanswered for PROBE_TIMEOUT_MS takes the replica out of rotation at once,
 * answers its pending requests UNAVAILABLE (the request path retries them on
 * another replica while their deadline allows: inference is idempotent), and
 * holds the other replicas on the same host out until they answer a probe of
 * their own. The old connection is dropped, not re-probed: after a heal its
 * TCP socket may sit in retransmission backoff for seconds. Fresh
 * connections are tried instead, each given CONNECT_TIMEOUT_MS to answer a
 * probe (a new SYN each time); the replica is back in rotation once one does
 * and its heartbeat is still present (the routing table closes the link of a
 * replica whose heartbeat record expired).
 */
/** One timer sweeps every link of the process (deadlines, probes, reconnects): one per link would be thousands of callbacks a second at 200 replicas. */
const SWEEP_MS = 25;
/** Requests pending and nothing heard from the replica for this long: the link is probed. */
const QUIET_MS = 200;
/**
 * Nothing pending and nothing heard for this long: a connected link is probed all the same. At low load the
 * router keeps calls on awake replicas (routing-core pickReplica), so some links sit idle; a host cut
 * off is then known before calls are sent to it, not by the first ones that go unanswered.
 */
const IDLE_PROBE_MS = 1_000;
/** A probe unanswered this long: the link is down. */
const PROBE_TIMEOUT_MS = 600;
/** A new connection that has not answered a probe after this long is dropped and another one tried. */
const CONNECT_TIMEOUT_MS = 1_000;
/** Pause between failed connection attempts: doubles from the first to the last. */
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 1_000;
/** A sweep this much later than due (the router's own event loop stalled): no verdict on probes this turn, their answers may be unread yet. */
const STALL_MS = 100;
const HEALTH_CHECK = '/grpc.health.v1.Health/Check';
const identity = (b: Buffer): Buffer => b;

/** Every open link of this process, swept by one timer. */
const links = new Set<ReplicaConn>();
let sweeper: NodeJS.Timeout | null = null;
let lastSweep = 0;

function track(conn: ReplicaConn): void {
  links.add(conn);
  if (sweeper) return;
  lastSweep = performance.now();
  sweeper = setInterval(sweepAll, SWEEP_MS);
  sweeper.unref();
}

function untrack(conn: ReplicaConn): void {
  links.delete(conn);
  if (links.size > 0 || !sweeper) return;
  clearInterval(sweeper);
  sweeper = null;
}

function sweepAll(): void {
  const now = performance.now();
  const stalled = now - lastSweep > SWEEP_MS + STALL_MS;
  lastSweep = now;
  for (const conn of links) conn.tick(now, stalled);
}

/** The host part of `host:port` or `[v6]:port`. */
function hostOf(address: string): string {
  const colon = address.lastIndexOf(':');
  return colon < 0 ? address : address.slice(0, colon);
}


/** An upper bound of a RequestItem's encoded size, without encoding it (UTF-8: ≤ 3 bytes per UTF-16 unit). */
function itemBytes(item: RequestItem): number {
  return item.request.byteLength + 3 * (item.model.length + item.traceparent.length) + ITEM_OVERHEAD_BYTES;
}

/** The multiplexed stream under a ReplicaConn: writes gRPC messages (framed: GRPC_PREFIX_BYTES first), cancels. */
interface Link {
  write(framed: Buffer): void;
  cancel(): void;
}

const { HTTP2_HEADER_METHOD, HTTP2_HEADER_PATH, HTTP2_HEADER_CONTENT_TYPE, HTTP2_HEADER_TE } = http2.constants;
/** Flow-control window of the raw link (session and stream): frames are never held back on loopback or a LAN. */
const LINK_WINDOW_BYTES = 16 << 20;

/**
 * One inference replica as the router sees it: a long-lived multiplexed
 * bidirectional stream carrying many requests at once. Requests submitted in
 * one event-loop turn travel in one frame. A request is answered exactly
 * once: by the replica, by the sweeper when its deadline passes, or with
 * UNAVAILABLE when the stream breaks or the link is found down (the caller
 * may then retry elsewhere). Liveness: see QUIET_MS and the note above it.
 */
export class ReplicaConn {
  /** Requests sent and not yet answered (power-of-two-choices load signal). */
  outstanding = 0;
  /** performance.now() until which the router avoids this replica (0 = in rotation, Infinity = link down). */
  ejectedUntil = 0;
  private timeoutsInARow = 0;
  private ejections = 0;
  private client: grpc.Client;
  private stream: Link | null = null;
  /** The raw link's HTTP/2 session (PING), null on the grpc-js link. */
  private session: http2.ClientHttp2Session | null = null;
  /**
   * With `rawLink`, plaintext links go over node:http2 directly (no grpc-js call machinery per
   * frame); TLS ones always through grpc-js. The router's default (`--raw-link`): 238 -> 205 µs
   * router CPU per call at 4 callers, and 1 -> 2 replicas on a compute-bound load scaled the same
   * through either link on a quiet machine (x1.25 and x1.32 raw, x1.23 and x1.33 grpc-js); the
   * x1.2 against x1.5 seen once before was the machine's load, not the link.
   */
  private readonly raw: boolean;
  private readonly pending = new Map<number, Pending>();
  private readonly frames: FrameCoalescer<RequestItem>;
  /** The link's message limit: the client-facing one plus headroom for the frame around a request. */
  private readonly linkBytes: number;
  private readonly host: string;
  private nextId = 1;
  private closed = false;
  private backoffMs = 50;
  /** A frame arrived since the last sweep (the sweep turns it into heardAt: no clock read per frame). */
  private heard = false;
  private heardAt = 0;
  /** When requests became pending after none were. */
  private busySince = 0;
  /** When the probe in flight was sent (0: none). */
  private probeAt = 0;
  /** Held out of rotation until it answers a probe (a replica on its host was found down). */
  private held = false;
  /** The link is down: out of rotation, fresh connections tried (see QUIET_MS). */
  private down = false;
  private downAt = 0;
  /** When the connection attempt under way started (0: none), and when the next may start. */
  private attemptAt = 0;
  private retryAt = 0;
  private reconnectMs = RECONNECT_FIRST_MS;

  constructor(
    readonly id: string,
    readonly address: string,
    private readonly maxMessageBytes: number,
    private readonly log: Logger,
    private readonly credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
    private readonly serverName = '',
    rawLink = false,
  ) {
    this.raw = rawLink && !credentials._isSecure();
    this.linkBytes = linkMessageBytes(maxMessageBytes);
    this.host = hostOf(address);
    // Frames are split before they outgrow the link: one too large would break the stream and
    // every request on it. A request the link cannot carry at all fails alone (send).
    this.frames = new FrameCoalescer<RequestItem>((items) => this.sendFrame(items), itemBytes, this.linkBytes);
    this.client = this.newClient();
    this.open();
    track(this);
  }

  /**
   * A channel of its own (local subchannel pool): a new client is a new TCP
   * connection, never the shared one of a link found down. A raw link leaves
   * the channel without calls: it is connected anyway, its state is how
   * ReplicaTrust learns that TLS fails toward this replica (and what
   * `GET /v2/replicas` shows).
   */
  private newClient(): grpc.Client {
    // TLS is set up once per connection here; the frames on the stream cost the same either way.
    const client = new grpc.Client(this.address, this.credentials, {
      ...channelOptions(this.linkBytes),
      'grpc.max_concurrent_streams': 100,
      'grpc.use_local_subchannel_pool': 1,
      ...(this.serverName ? { 'grpc.ssl_target_name_override': this.serverName } : {}),
    } as grpc.ChannelOptions);
    if (this.raw) client.getChannel().getConnectivityState(true);
    return client;
  }

  /**
   * Queues one request for the next frame. `timeoutMicros` is also the
   * replica's budget. Returns the request's id on this stream (for cancel), 0
   * when it was answered at once (UNAVAILABLE while the link is down).
   */
  send(model: string, version: number, timeoutMicros: number, traceparent: string, request: Uint8Array, priority: number, caller: LinkCaller): number {
    if (this.closed || this.down) {
      caller.replied(new UnavailableError(this.closed ? 'replica is gone' : 'replica unreachable'), 0, 0);
      return 0;
    }
    const item: RequestItem = { id: this.nextId++, model, version, timeoutMicros, traceparent, request, priority, cancel: false };
    if (request.byteLength > this.maxMessageBytes || itemBytes(item) > this.linkBytes) {
      caller.replied(new ResourceExhaustedError(`request: message of ${request.byteLength} bytes is larger than the limit of ${this.maxMessageBytes} bytes`), 0, 0);
      return 0;
    }
    const now = performance.now();
    if (this.pending.size === 0) this.busySince = now;
    this.pending.set(item.id, { caller, deadline: now + timeoutMicros / 1000 });
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
    // Down: what was queued was answered UNAVAILABLE already; the connection attempts carry no requests.
    if (this.down) return;
    if (!this.stream) this.open();
    this.stream?.write(encodeRequestFrame(items));
  }

  /** One ResponseFrame from the replica. */
  private received(buf: Buffer): void {
    this.backoffMs = 50;
    this.heard = true;
    // It answers again: back in rotation.
    if (this.ejectedUntil && !this.down) {
      this.ejectedUntil = 0;
      this.ejections = 0;
      this.held = false;
    }
    let items: ResponseItem[];
    try {
      items = decodeResponseFrame(buf);
    } catch (err) {
      if (!(err instanceof MalformedFrame)) throw err;
      this.log.warn({ replica: this.id }, 'malformed response frame');
      return;
    }
    for (const it of items) this.answer(it.id, it.code === 0 ? it.response : fromStatus(it.code, it.message), it.queueMicros, it.computeMicros);
  }

  private open(): void {
    if (this.closed) return;
    if (this.raw) return this.openRaw();
    const s = this.client.makeBidiStreamRequest(RAW_INFER.path, RAW_INFER.requestSerialize, RAW_INFER.responseDeserialize) as grpc.ClientDuplexStream<Buffer, Buffer>;
    // grpc-js frames each message itself: hand it the message without our prefix.
    const link: Link = { write: (framed) => s.write(framed.subarray(GRPC_PREFIX_BYTES)), cancel: () => s.cancel() };
    this.stream = link;
    // A dropped link's late frames are not this link's any more (their requests were answered).
    s.on('data', (buf: Buffer) => this.stream === link && this.received(buf));
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
        session.destroy();
      },
    };
    this.stream = link;
    this.session = session;
    const broken = this.breaker(link);
    let status = '';
    // A replica's message is bounded like a caller's: a prefix past the link's limit (or compressed:
    // replicas never compress) breaks the link before anything is allocated for it.
    const limit = this.linkBytes;
    const reader = new GrpcMessageReader({
      get stopped() {
        return req.destroyed;
      },
      declared: (flag, n) => {
        if (flag === 0 && n <= limit) return true;
        status = flag === 0 ? `sent a message of ${n} bytes, over the link's limit` : 'sent a compressed message';
        req.close(http2.constants.NGHTTP2_CANCEL);
        return false;
      },
      message: (msg) => this.stream === link && this.received(msg),
    });
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
      if (this.closed) return;
      // A connection attempt that broke: the next one after a pause (nothing was in flight on it).
      if (this.down) return this.attemptFailed(performance.now());
      // Everything in flight on this stream is lost: answer UNAVAILABLE so callers can retry. The
      // callers' message names no replica (internal); the log does.
      this.log.warn({ replica: this.id, pending: this.pending.size }, `replica stream ${why}`);
      const lost = new UnavailableError(`replica stream ${why}`);
      for (const id of [...this.pending.keys()]) this.answer(id, lost);
      const wait = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 2000);
      setTimeout(() => {
        if (!this.stream && !this.closed && !this.down) this.open();
      }, wait).unref();
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

  /** The channel to the replica (its connectivity shows TLS failures: ReplicaTrust). A link found down gets a new one. */
  get channel(): ReturnType<grpc.Client['getChannel']> {
    return this.client.getChannel();
  }

  /** True once close() ran. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** True while the link is down (a probe went unanswered) and fresh connections are being tried. */
  get unreachable(): boolean {
    return this.down;
  }

  /** True while held out of rotation until it answers a probe (a replica on its host was found unreachable): a moment, not an ejection. */
  get heldForProbe(): boolean {
    return this.held;
  }

  /** True while out of rotation: ejected for timing out repeatedly, held for a probe, or its link down. */
  ejected(now: number): boolean {
    return this.ejectedUntil > now;
  }

  /**
   * @internal The shared sweep (every SWEEP_MS): deadlines, then the link's
   * liveness. `stalled`: this sweep came late, so no probe is judged now.
   */
  tick(now: number, stalled: boolean): void {
    if (this.heard) {
      this.heard = false;
      this.heardAt = now;
    }
    if (this.pending.size > 0) this.expire(now);
    if (stalled) return;
    if (this.down) {
      if (this.attemptAt === 0) {
        if (now >= this.retryAt) this.attempt(now);
      } else if (now - this.attemptAt > CONNECT_TIMEOUT_MS) this.attemptFailed(now);
      return;
    }
    if (this.probeAt) {
      // Frames arrived after the probe went out: the link lives, whatever the probe's fate.
      if (this.heardAt >= this.probeAt) this.probeAt = 0;
      else if (now - this.probeAt > PROBE_TIMEOUT_MS) this.markDown(now, `did not answer a probe in ${PROBE_TIMEOUT_MS} ms`);
      return;
    }
    if (this.pending.size > 0) {
      if (now - (this.heardAt > this.busySince ? this.heardAt : this.busySince) > QUIET_MS) this.probe(now);
    } else if (this.stream && now - this.heardAt > IDLE_PROBE_MS && this.connected) this.probe(now);
  }

  /** The link's connection is established (a silent cut leaves it so); one that never connected, or failed TLS, is not probed idle. */
  private get connected(): boolean {
    if (this.raw) return this.session !== null && !this.session.connecting && !this.session.destroyed;
    return this.client.getChannel().getConnectivityState(false) === grpc.connectivityState.READY;
  }

  private expire(now: number): void {
    let expired = 0;
    for (const [id, p] of this.pending) {
      if (p.deadline <= now) {
        expired++;
        this.answer(id, new DeadlineExceededError('deadline exceeded waiting for the replica'));
      }
    }
    if (expired > 0) this.noteTimeouts(expired, now);
  }

  /** Asks the replica to answer on this link's connection: an HTTP/2 PING (raw link) or a health Check (grpc-js link). */
  private probe(now: number): void {
    this.probeAt = now;
    if (this.raw) {
      const session = this.session;
      if (!session || session.destroyed) return;
      const ping = () => {
        try {
          if (!session.ping((err) => this.probed(session, !err))) this.probed(session, false);
        } catch {
          this.probed(session, false);
        }
      };
      if (session.connecting) session.once('connect', ping);
      else ping();
      return;
    }
    const client = this.client;
    // Any answer from the replica's server proves the connection (UNIMPLEMENTED too); only the channel's own failures do not.
    client.makeUnaryRequest(HEALTH_CHECK, identity, identity, EMPTY_BUF, { deadline: Date.now() + 2 * CONNECT_TIMEOUT_MS }, (err) =>
      this.probed(client, !err || (err.code !== grpc.status.UNAVAILABLE && err.code !== grpc.status.DEADLINE_EXCEEDED && err.code !== grpc.status.CANCELLED)),
    );
  }

  /** A probe's outcome on `via` (the session or client it went out on; a dropped one's is ignored). */
  private probed(via: unknown, answered: boolean): void {
    if (this.closed || this.probeAt === 0 || (via !== this.session && via !== this.client)) return;
    this.probeAt = 0;
    const now = performance.now();
    if (!answered) {
      if (this.down) this.attemptFailed(now);
      else this.markDown(now, 'failed a probe');
      return;
    }
    this.heard = true;
    if (this.down) return this.linkUp(now);
    if (this.held) {
      this.held = false;
      this.ejectedUntil = 0;
    }
  }

  /**
   * The link is down: out of rotation now; the host's other replicas held
   * until they answer a probe (so retries avoid them); what was pending
   * answered UNAVAILABLE (the request path retries it elsewhere); the
   * connection dropped and fresh ones tried from the next sweep.
   */
  private markDown(now: number, why: string): void {
    this.down = true;
    this.downAt = now;
    this.ejectedUntil = LINK_DOWN;
    this.held = false;
    this.probeAt = 0;
    this.retryAt = now;
    this.reconnectMs = RECONNECT_FIRST_MS;
    this.log.warn({ replica: this.id, address: this.address, pending: this.pending.size }, `replica link ${why}: out of rotation, reconnecting`);
    for (const other of links) if (other !== this && other.host === this.host) other.suspect(now);
    this.dropConnection();
    if (this.pending.size === 0) return;
    const lost = new UnavailableError('replica unreachable');
    for (const id of [...this.pending.keys()]) this.answer(id, lost);
  }

  /** A replica on this one's host was found down: out of rotation until this one answers a probe. */
  private suspect(now: number): void {
    if (this.down || this.closed) return;
    const until = now + PROBE_TIMEOUT_MS + 2 * SWEEP_MS;
    if (this.ejectedUntil < until) {
      this.ejectedUntil = until;
      this.held = true;
    }
    if (!this.probeAt) this.probe(now);
  }

  /** Drops the link and its connection; the next attempt gets a new channel (ReplicaTrust follows it). */
  private dropConnection(): void {
    const link = this.stream;
    this.stream = null;
    this.session = null;
    link?.cancel();
    this.client.close();
    this.client = this.newClient();
  }

  /** One connection attempt while down: the link's stream on the new channel, and a probe on it. */
  private attempt(now: number): void {
    this.attemptAt = now;
    this.open();
    this.probe(now);
  }

  private attemptFailed(now: number): void {
    this.attemptAt = 0;
    this.probeAt = 0;
    this.dropConnection();
    this.retryAt = now + this.reconnectMs;
    this.reconnectMs = Math.min(this.reconnectMs * 2, RECONNECT_MAX_MS);
  }

  /** A new connection answered: back in rotation (its heartbeat is present, else the routing table would have closed this link). */
  private linkUp(now: number): void {
    this.down = false;
    this.attemptAt = 0;
    this.ejectedUntil = 0;
    this.ejections = 0;
    this.timeoutsInARow = 0;
    this.backoffMs = 50;
    this.log.info({ replica: this.id, address: this.address, downMs: Math.round(now - this.downAt) }, 'replica link back on a new connection: in rotation again');
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
    untrack(this);
    const left = new UnavailableError('replica left');
    for (const id of [...this.pending.keys()]) this.answer(id, left);
    this.stream?.cancel();
    this.client.close();
  }
}
