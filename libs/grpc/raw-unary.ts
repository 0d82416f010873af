/**
 * One unary method served straight off the HTTP/2 streams of a grpc-js
 * server's own listeners, for the data plane's hottest call.
 *
 * grpc-js builds, per call, a call object, an interceptor chain, metadata
 * maps, a deadline timer and several closures and stream objects. For a
 * method that only passes bytes through (the router's ModelInfer) that is
 * most of the router's CPU and allocation (FIELD-NOTES, BENCHMARKS.md). Here
 * the method's streams are taken before grpc-js sees them and answered with
 * the gRPC wire protocol (PROTOCOL-HTTP2.md) by hand: length-prefixed message
 * in, `grpc-timeout` read, response headers, one DATA frame, trailers.
 * Everything else about the listener stays grpc-js's: TLS, sessions,
 * keepalive, max concurrent streams, graceful shutdown, and every other
 * method (health, reflection, the rest of the service).
 */
import http2 from 'node:http2';
import zlib from 'node:zlib';
import type * as grpc from '@grpc/grpc-js';
import { Status } from '../errors/index.js';

/** Request headers as the handler reads them (same shape as grpc-js Metadata.get). */
export interface RawHeaders {
  get(key: string): (string | Buffer)[];
}

/**
 * The call's one terminal answer. For OK, `message` is the serialized
 * response already framed: 5 bytes of gRPC message prefix (see
 * `frameInPlace`) followed by the message. `extra` adds trailers (e.g.
 * `grpc-retry-pushback-ms`).
 */
export type RawReply = (code: number, details: string, framed: Buffer | null, extra?: Record<string, string>) => void;

/** Handles one call; returns a function to call if the caller goes away before the reply, or null. */
export type RawUnaryHandler = (request: Buffer, headers: RawHeaders, deadlineMs: number, reply: RawReply) => (() => void) | null;

export interface RawUnaryOptions {
  /** Largest request or response message (after inflating); larger ones are answered RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /**
   * Longest a call may take to deliver its body when it names no shorter
   * `grpc-timeout` (default 30 s); past it: DEADLINE_EXCEEDED.
   */
  maxReceiveMs?: number;
  /**
   * The handler's in-flight counts: calls still receiving count here too, and
   * a call whose headers arrive while `inflight + receiving ≥ maxInflight`
   * is refused at once with RESOURCE_EXHAUSTED and `shedTrailers`.
   */
  load?: { counters: RawLoad; maxInflight: number; shedTrailers?: Record<string, string> };
}

/** Bytes of the gRPC message prefix: compressed flag and big-endian length. */
export const GRPC_PREFIX_BYTES = 5;

/**
 * Writes the gRPC message prefix into the GRPC_PREFIX_BYTES just before
 * `message` (which its producer reserved in the same allocation) and returns
 * the framed bytes: no copy of the message.
 */
export function frameInPlace(message: Uint8Array): Buffer {
  if (message.byteOffset < GRPC_PREFIX_BYTES) throw new Error('frameInPlace: no room reserved before the message');
  const b = Buffer.from(message.buffer, message.byteOffset - GRPC_PREFIX_BYTES, message.byteLength + GRPC_PREFIX_BYTES);
  b[0] = 0;
  b.writeUInt32BE(message.byteLength, 1);
  return b;
}

/** `message` copied after a gRPC message prefix (for producers that reserved no room). */
export function frameCopy(message: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + message.byteLength);
  b[0] = 0;
  b.writeUInt32BE(message.byteLength, 1);
  b.set(message, GRPC_PREFIX_BYTES);
  return b;
}

const { HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE } = http2.constants;
const OK_HEADERS = { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', 'grpc-accept-encoding': 'identity,deflate,gzip' };
const OK_TRAILERS = { 'grpc-status': '0', 'grpc-message': 'OK' };
const NO_VALUES: string[] = [];

class IncomingHeaders implements RawHeaders {
  constructor(private readonly h: http2.IncomingHttpHeaders) {}
  get(key: string): string[] {
    const v = this.h[key];
    return v === undefined ? NO_VALUES : Array.isArray(v) ? v : [v];
  }
}

/** `grpc-timeout` (1–8 digits and a unit) in milliseconds; NaN when malformed. */
export function parseGrpcTimeout(v: string): number {
  const m = /^(\d{1,8})([HMSmun])$/.exec(v);
  if (!m) return NaN;
  const n = Number(m[1]);
  switch (m[2]) {
    case 'H':
      return n * 3_600_000;
    case 'M':
      return n * 60_000;
    case 'S':
      return n * 1000;
    case 'm':
      return n;
    case 'u':
      return n / 1000;
    default:
      return n / 1e6;
  }
}

/** grpc-message is percent-encoded outside printable ASCII (and '%' itself). */
export function encodeGrpcMessage(s: string): string {
  return /^[\x20-\x24\x26-\x7e]*$/.test(s) ? s : Buffer.from(s, 'utf8').reduce((out, b) => out + (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`), '');
}

function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  try {
    this.sendTrailers(OK_TRAILERS);
  } catch {
    // The stream went away after its message: nobody is left to tell.
  }
}

function ignore(): void {}

/** A trailers-only answer: status in the one HEADERS frame, no message. */
export function respondGrpcError(stream: http2.ServerHttp2Stream, code: number, details: string, extra?: Record<string, string>): void {
  if (stream.headersSent || stream.destroyed) return;
  try {
    stream.respond(
      { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details), ...extra },
      { endStream: true },
    );
  } catch {
    // The stream went away meanwhile: nobody is left to answer.
  }
}

/** Why a complete body (never longer than `expected`) holds no usable message; null when it does. */
function bodyError(body: Buffer, expected: number): { code: number; details: string } | null {
  if (body.length < GRPC_PREFIX_BYTES) return { code: Status.UNIMPLEMENTED, details: 'request: no message received for a unary call' };
  if (body.length < expected) return { code: Status.INTERNAL, details: 'request: message truncated' };
  if (body[0] !== 0 && body[0] !== 1) return { code: Status.INTERNAL, details: 'request: invalid message flag' };
  return null;
}

/** Bytes the inflater hands back per step: each step is one short turn of the event loop. */
const INFLATE_CHUNK_BYTES = 64 * 1024;
/** First capacity of a body that arrives in several chunks; it doubles up to the declared size. */
const FIRST_CAPACITY = 64 * 1024;
/** How often calls still receiving their body are checked against their deadline. */
const RECEIVE_SWEEP_MS = 50;
const { NGHTTP2_NO_ERROR } = http2.constants;

/** Longest caller-supplied text echoed back in a status message. */
const ECHO_CHARS = 32;

/**
 * Counts shared with the handler's own in-flight limit. A call counts in
 * `receiving` from its headers until its message is handed to the handler
 * (body arriving, or being inflated); the handler counts it in `inflight`
 * from then on.
 */
export interface RawLoad {
  inflight: number;
  receiving: number;
  shed: number;
}

/** Where one call stands: body arriving, being inflated, with the handler, or answered. */
const RECEIVING = 0;
const INFLATING = 1;
const HANDLED = 2;
const DONE = 3;

/** What every call of one serveRawUnary shares. */
interface Served {
  handler: RawUnaryHandler;
  max: number;
  maxReceiveMs: number;
  load: RawLoad | null;
  maxInflight: number;
  shedTrailers: Record<string, string> | undefined;
  /** Calls still receiving or inflating, checked by one sweeper against their deadline. */
  receiving: Set<RawCall>;
  /** Inflations running, and calls waiting for one (in arrival order). */
  inflating: number;
  waitingToInflate: RawCall[];
}

/** Inflations running at once per server (each on a thread-pool thread, each a core's worth of work). */
const MAX_INFLATING = 2;

/** Starts waiting inflations while there is room (skipping calls answered meanwhile, e.g. past their deadline). */
function startWaiting(s: Served): void {
  while (s.inflating < MAX_INFLATING && s.waitingToInflate.length > 0) {
    const c = s.waitingToInflate.shift()!;
    if (c.phase !== INFLATING) continue;
    try {
      c.inflate();
    } catch {
      c.failed();
    }
  }
}

const kCall = Symbol('infermesh.rawCall');
type CallStream = http2.ServerHttp2Stream & { [kCall]?: RawCall };

/**
 * One call from its headers to its answer. The body is bounded as it
 * arrives: the declared length is read from the first 5 bytes, a length over
 * the limit or a byte past the declared message ends the call at once (the
 * stream is then reset with NO_ERROR, so the peer stops sending); a body in
 * one DATA chunk is used as it is, a body in several is copied into one
 * buffer that grows by doubling (never more than twice what arrived, never
 * views that pin the session's read buffers); the call's deadline runs from
 * its headers.
 */
class RawCall {
  phase: number = RECEIVING;
  /** The body's first chunk while it is the only one. */
  first: Buffer | null = null;
  /** The body so far once it came in several chunks (`used` bytes of it). */
  buf: Buffer | null = null;
  used = 0;
  size = 0;
  /** GRPC_PREFIX_BYTES + the declared length, once the prefix is in; -1 before. */
  expected = -1;
  cancel: (() => void) | null = null;
  answered = false;
  /** The compressed message while it waits to be inflated. */
  compressed: Buffer | null = null;
  gzip = false;

  constructor(
    readonly stream: CallStream,
    readonly headers: http2.IncomingHttpHeaders,
    readonly s: Served,
    readonly deadlineMs: number,
    readonly receiveBy: number,
  ) {}

  data(chunk: Buffer): void {
    if (this.phase !== RECEIVING) return;
    const size = (this.size += chunk.length);
    if (this.expected >= 0 && size > this.expected) return this.tooMuch();
    if (this.first === null && this.buf === null) this.first = chunk;
    else this.append(chunk);
    if (this.expected < 0 && size >= GRPC_PREFIX_BYTES) {
      const len = (this.buf ?? this.first!).readUInt32BE(1);
      this.expected = GRPC_PREFIX_BYTES + len;
      if (len > this.s.max) return this.refuse(Status.RESOURCE_EXHAUSTED, `request: message of ${len} bytes is larger than the limit of ${this.s.max} bytes`);
      if (size > this.expected) return this.tooMuch();
    }
  }

  /** Copies `chunk` into the call's own buffer (a second chunk arrived). */
  private append(chunk: Buffer): void {
    const need = this.used + (this.first ? this.first.length : 0) + chunk.length;
    let buf = this.buf;
    if (buf === null || need > buf.length) {
      // Before the prefix is in, need < GRPC_PREFIX_BYTES; after it, size ≤ expected holds here.
      const cap = this.expected < 0 ? FIRST_CAPACITY : Math.min(this.expected, Math.max(FIRST_CAPACITY, 2 * need));
      const next = Buffer.allocUnsafe(Math.max(cap, need));
      if (buf !== null) buf.copy(next, 0, 0, this.used);
      this.buf = buf = next;
    }
    if (this.first !== null) {
      this.used = this.first.copy(buf, 0);
      this.first = null;
    }
    this.used += chunk.copy(buf, this.used);
  }

  private tooMuch(): void {
    this.refuse(Status.RESOURCE_EXHAUSTED, `request: more than the one message of ${this.expected - GRPC_PREFIX_BYTES} bytes a unary call carries`);
  }

  end(): void {
    if (this.phase !== RECEIVING) return;
    const body = this.buf !== null ? this.buf.subarray(0, this.used) : (this.first ?? EMPTY);
    this.first = this.buf = null;
    const bad = bodyError(body, this.expected);
    if (bad !== null) return this.refuse(bad.code, bad.details);
    const msg = body.subarray(GRPC_PREFIX_BYTES);
    // A single DATA chunk is a view into the session's read buffer (many streams' frames): a message
    // kept while its call is in flight would keep all of it alive, so a small one is copied out.
    if (body[0] === 0) return this.dispatch(msg.buffer.byteLength > 2 * msg.length + 1024 ? Buffer.from(msg) : msg);
    const enc = this.headers['grpc-encoding'];
    if (enc !== 'gzip' && enc !== 'deflate') return this.refuse(Status.UNIMPLEMENTED, `request: compressed with unsupported grpc-encoding ${JSON.stringify(String(enc ?? '').slice(0, ECHO_CHARS))}`);
    this.phase = INFLATING;
    this.compressed = msg;
    this.gzip = enc === 'gzip';
    const s = this.s;
    if (s.inflating < MAX_INFLATING) this.inflate();
    else s.waitingToInflate.push(this);
  }

  /**
   * Inflates on the thread pool, one bounded step at a time: a message that
   * inflates past the limit stops there, and other callers' requests run
   * between the steps. Few run at once (MAX_INFLATING), so a flood of
   * compressed requests leaves the cores to the event loop.
   */
  inflate(): void {
    const s = this.s;
    const msg = this.compressed!;
    this.compressed = null;
    s.inflating++;
    (this.gzip ? zlib.gunzip : zlib.inflate)(msg, { maxOutputLength: s.max, chunkSize: INFLATE_CHUNK_BYTES }, (err, out) => {
      s.inflating--;
      startWaiting(s);
      if (this.phase !== INFLATING) return;
      try {
        if (err === null) return this.dispatch(out);
        if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') this.refuse(Status.RESOURCE_EXHAUSTED, `request: decompressed message larger than the limit of ${s.max} bytes`);
        else this.refuse(Status.INTERNAL, 'request: message could not be decompressed');
      } catch {
        this.failed();
      }
    });
  }

  /** The call stops receiving: it no longer counts in `receiving` nor waits for the sweeper. */
  private leave(phase: number): void {
    this.phase = phase;
    this.first = this.buf = this.compressed = null;
    this.s.receiving.delete(this);
    if (this.s.load) this.s.load.receiving--;
  }

  private dispatch(msg: Buffer): void {
    this.leave(HANDLED);
    const stream = this.stream;
    const max = this.s.max;
    const cancel = this.s.handler(msg, new IncomingHeaders(this.headers), this.deadlineMs, (code, details, framed, extra) => {
      this.answered = true;
      if (stream.destroyed || stream.headersSent) return;
      if (code !== 0 || framed === null) return respondGrpcError(stream, code, details, extra);
      if (framed.length - GRPC_PREFIX_BYTES > max) return respondGrpcError(stream, Status.RESOURCE_EXHAUSTED, `response: message of ${framed.length - GRPC_PREFIX_BYTES} bytes is larger than the limit of ${max} bytes`);
      try {
        stream.respond(OK_HEADERS, { waitForTrailers: true });
        stream.once('wantTrailers', sendOkTrailers);
        stream.end(framed);
      } catch {
        // The caller went away between the check and the write.
      }
    });
    if (!this.answered) this.cancel = cancel;
  }

  /** Answers now, before the handler saw the call, and asks the peer to stop sending. */
  refuse(code: number, details: string, extra?: Record<string, string>): void {
    if (this.phase === RECEIVING || this.phase === INFLATING) this.leave(DONE);
    else this.phase = DONE;
    respondGrpcError(this.stream, code, details, extra);
    // A peer still sending gets RST_STREAM(NO_ERROR) after the complete answer: "stop sending,
    // nothing went wrong" (RFC 9113 §8.1); what it sent meanwhile is dropped unread.
    if (!this.stream.readableEnded && !this.stream.closed) this.stream.close(NGHTTP2_NO_ERROR);
  }

  /** Something threw while handling the call: answer INTERNAL (if nothing was sent yet) and reset the stream. */
  failed(): void {
    try {
      this.refuse(Status.INTERNAL, 'internal error');
    } catch {
      if (!this.stream.destroyed) this.stream.destroy();
    }
  }

  /** The stream closed (answered, reset by the peer, or the session went away). */
  closed(): void {
    if (this.phase === RECEIVING || this.phase === INFLATING) this.leave(DONE);
    else if (this.phase === HANDLED) {
      this.phase = DONE;
      if (!this.answered && this.cancel) this.cancel();
    }
  }
}

const EMPTY = Buffer.alloc(0);

// Shared listeners (no closures per call): the call rides on its stream. Each is guarded: a throw
// out of an event listener would end the process, so it ends only its own call instead.
function onData(this: CallStream, chunk: Buffer): void {
  const c = this[kCall]!;
  try {
    c.data(chunk);
  } catch {
    c.failed();
  }
}
function onEnd(this: CallStream): void {
  const c = this[kCall]!;
  try {
    c.end();
  } catch {
    c.failed();
  }
}
function onClose(this: CallStream): void {
  const c = this[kCall]!;
  try {
    c.closed();
  } catch {
    // Its cancel function threw: nothing is left to answer.
  }
}

/** Calls whose deadline passed while their body was still arriving (or inflating). */
function sweep(s: Served): void {
  if (s.receiving.size === 0) return;
  const now = Date.now();
  for (const c of s.receiving) {
    if (c.receiveBy > now) continue;
    try {
      c.refuse(Status.DEADLINE_EXCEEDED, c.deadlineMs <= now ? 'deadline exceeded while receiving the request' : `request not received within ${s.maxReceiveMs} ms`);
    } catch {
      c.failed();
    }
  }
}

function serve(stream: CallStream, headers: http2.IncomingHttpHeaders, s: Served): void {
  if (!acceptGrpcStream(stream, headers)) return;
  const now = Date.now();
  let deadlineMs = Infinity;
  const t = headers['grpc-timeout'];
  if (typeof t === 'string') {
    const ms = parseGrpcTimeout(t);
    if (Number.isNaN(ms)) return respondGrpcError(stream, Status.INTERNAL, `invalid grpc-timeout ${JSON.stringify(t.slice(0, 16))}`);
    deadlineMs = now + ms;
  }
  const load = s.load;
  if (load !== null) {
    if (load.inflight + load.receiving >= s.maxInflight) {
      load.shed++;
      respondGrpcError(stream, Status.RESOURCE_EXHAUSTED, `server overloaded (${s.maxInflight} requests in flight)`, s.shedTrailers);
      if (!stream.closed) stream.close(NGHTTP2_NO_ERROR);
      return;
    }
    load.receiving++;
  }
  const call = new RawCall(stream, headers, s, deadlineMs, Math.min(deadlineMs, now + s.maxReceiveMs));
  s.receiving.add(call);
  stream[kCall] = call;
  // `on`, not `once` (which wraps each listener per call): a stream ends and closes once anyway.
  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('close', onClose);
}

/**
 * Takes `path` (e.g. `/inference.GRPCInferenceService/ModelInfer`) off every
 * listener `server` has bound and serves it with `handler`; every other path
 * still reaches grpc-js. Call after bindAsync. Returns false, changing
 * nothing, when this grpc-js's internals are not the ones this was written
 * against (the method then stays with its grpc-js handler).
 */
export function serveRawUnary(server: grpc.Server, path: string, handler: RawUnaryHandler, o: RawUnaryOptions): boolean {
  const servers = listenersOf(server);
  if (servers === null) return false;
  const served: Served = {
    handler,
    max: o.maxMessageBytes,
    maxReceiveMs: o.maxReceiveMs ?? 30_000,
    load: o.load?.counters ?? null,
    maxInflight: o.load?.maxInflight ?? Infinity,
    shedTrailers: o.load?.shedTrailers,
    receiving: new Set(),
    inflating: 0,
    waitingToInflate: [],
  };
  const sweeper = setInterval(sweep, RECEIVE_SWEEP_MS, served);
  sweeper.unref();
  let open = servers.length;
  for (const s of servers) s.once('close', () => --open === 0 && clearInterval(sweeper));
  takePath(servers, path, (stream, headers) => serve(stream, headers, served));
  return true;
}

/**
 * The HTTP/2 servers under a grpc-js server's listeners, each with grpc-js's
 * one `stream` listener; null when this grpc-js's internals are not the ones
 * this was written against (or nothing is bound yet).
 */
function listenersOf(server: grpc.Server): http2.Http2Server[] | null {
  const listeners = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  if (!(listeners instanceof Map) || listeners.size === 0) return null;
  const servers = [...listeners.keys()];
  return servers.every((s) => typeof s?.listeners === 'function' && s.listeners('stream').length === 1) ? servers : null;
}

/**
 * Routes the POST streams of `path` on `servers` to `serve`; every other
 * stream goes on to the listener that had them before. A throw out of
 * `serve` resets only its stream: nothing a peer sends may end the process.
 */
function takePath(servers: http2.Http2Server[], path: string, serve: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void): void {
  for (const s of servers) {
    const next = s.listeners('stream')[0] as (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => void;
    s.removeAllListeners('stream');
    s.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
      if (headers[http2.constants.HTTP2_HEADER_PATH] === path && headers[http2.constants.HTTP2_HEADER_METHOD] === 'POST') {
        try {
          serve(stream, headers);
        } catch {
          if (!stream.destroyed) stream.destroy();
        }
      } else next.call(s, stream, headers, ...rest);
    });
  }
}

/**
 * Takes `path` off every listener of `server` (after bindAsync) for a
 * handler of raw HTTP/2 streams of its own, in front of whatever handled
 * them (grpc-js, or serveRawUnary for another path). Returns false, changing
 * nothing, when this grpc-js's internals are not the ones this was written
 * against (the method then stays with its grpc-js handler).
 */
export function serveRawPath(server: grpc.Server, path: string, serve: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void): boolean {
  const servers = listenersOf(server);
  if (servers === null) return false;
  takePath(servers, path, serve);
  return true;
}

/**
 * The start of every raw gRPC stream: errors on it are its own (an error
 * listener, so none ends the process), and one that is not gRPC
 * (content-type) is answered HTTP 415 and ended. False when it was.
 */
export function acceptGrpcStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean {
  stream.on('error', ignore);
  const ct = headers[HTTP2_HEADER_CONTENT_TYPE];
  if (typeof ct === 'string' && ct.startsWith('application/grpc')) return true;
  try {
    stream.respond({ [HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
  } catch {
    // gone
  }
  return false;
}
