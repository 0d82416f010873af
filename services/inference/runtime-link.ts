/**
 * The Runtime stream (router → replica) served straight off the HTTP/2
 * streams of the replica's grpc-js listeners, like the direct ModelInfer
 * (libs/grpc/raw-unary.ts). grpc-js's ServerDuplexStream pays per message an
 * object-mode Readable push, a decoder pass, promise turns and a Writable
 * write with its own framing copy; a long-lived stream carrying one request
 * per frame at a few callers pays all of it per request. Here a stream's DATA
 * chunks are split into gRPC messages by hand and each is handed to its
 * RuntimeStream; answers leave as one write of a frame already prefixed.
 *
 * The wire is gRPC's (PROTOCOL-HTTP2.md), so grpc-js routers and the raw
 * link of the router (services/router/replica-conn.ts) work unchanged:
 * response headers at once, length-prefixed messages both ways, and trailers
 * with grpc-status at the end. What grpc-js did for the stream is done here:
 * the peer check under mutual TLS (PERMISSION_DENIED for a certificate that is
 * not a service's, before anything is read), the message limit (a larger
 * declared length ends the stream RESOURCE_EXHAUSTED before its body is
 * buffered), `grpc-timeout`, a malformed frame (INVALID_ARGUMENT), the peer
 * half-closing (OK), draining (`end()`: OK). Compressed messages are not
 * taken (no router compresses the link): UNIMPLEMENTED. The listener itself
 * (TLS, sessions, keepalive, max concurrent streams, shutdown) stays grpc-js's.
 */
import http2 from 'node:http2';
import tls from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import type { AuthContext } from '@grpc/grpc-js/build/src/auth-context.js';
import { Status, toStatus } from '../../libs/errors/index.js';
import { acceptGrpcStream, encodeGrpcMessage, parseGrpcTimeout, respondGrpcError, serveRawPath, type PeerCheck } from '../../libs/grpc/index.js';
import { GrpcMessageReader, MalformedFrame, type MessageSink } from '../../libs/wire/index.js';
import type { LinkSink } from './runtime-handler.js';

/** What one raw stream drives: frames in (throws MalformedFrame for one that is not a frame), close when it ends. */
export interface LinkHandler {
  frame(msg: Buffer): void;
  close(): void;
}

export interface RuntimeLinkOptions {
  /** Largest message either way (the link's limit: linkMessageBytes of the client limit). */
  maxMessageBytes: number;
  /** Who may open the stream (mutual TLS: services only); absent = anyone. */
  peer?: PeerCheck;
  /** Opens the handler of a new stream. */
  open(sink: LinkSink): LinkHandler;
  /** Open streams (what a draining replica ends). */
  streams: Set<{ end(): void }>;
}

const { HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE, NGHTTP2_NO_ERROR } = http2.constants;
const OK_HEADERS = { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', 'grpc-accept-encoding': 'identity' };
const OK_TRAILERS = { 'grpc-status': '0' };
/**
 * Answers the peer has not read yet, beyond which the stream ends
 * RESOURCE_EXHAUSTED: a router that stops reading must not make the replica
 * buffer without bound (each answer is at most the link's message limit).
 */
const UNREAD_BYTES = 64 * 1024 * 1024;

/** The peer's identity as grpc-js's own call reports it (getAuthContext): the verified certificate under TLS. */
function authContextOf(stream: http2.ServerHttp2Stream): AuthContext {
  const socket = stream.session?.socket;
  if (!(socket instanceof tls.TLSSocket) || !socket.authorized) return {};
  const cert = socket.getPeerCertificate();
  return { transportSecurityType: 'ssl', sslPeerCertificate: cert.raw ? cert : undefined };
}

/** RST_STREAM(NO_ERROR) after a complete answer: "stop sending, nothing went wrong" (RFC 9113 §8.1). */
function stopSending(s: http2.ServerHttp2Stream): void {
  if (!s.closed && !s.readableEnded) s.close(NGHTTP2_NO_ERROR);
}

/** A trailers-only answer (nothing else was sent on the stream), then "stop sending". */
function refuse(stream: http2.ServerHttp2Stream, code: number, details: string): void {
  respondGrpcError(stream, code, details);
  setImmediate(stopSending, stream);
}

/** One Runtime stream on the wire: reads gRPC messages, writes answers, ends once with trailers. */
class RawLink implements LinkSink, MessageSink {
  private readonly handler: LinkHandler;
  private readonly reader = new GrpcMessageReader(this);
  private ended = false;
  private trailers: Record<string, string> = OK_TRAILERS;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly o: RuntimeLinkOptions,
    timeoutMs: number,
  ) {
    stream.respond(OK_HEADERS, { waitForTrailers: true });
    this.handler = o.open(this);
    o.streams.add(this);
    if (timeoutMs < Infinity) {
      this.timer = setTimeout(() => this.finish(Status.DEADLINE_EXCEEDED, 'Deadline exceeded'), timeoutMs);
      this.timer.unref();
    }
  }

  write(framed: Buffer): void {
    const s = this.stream;
    if (this.ended || s.destroyed) return;
    if (s.writableLength > UNREAD_BYTES) return this.finish(Status.RESOURCE_EXHAUSTED, 'runtime stream: answers not read by the peer');
    s.write(framed);
  }

  /** Ends the stream OK (draining, or the peer half-closed). */
  end(): void {
    this.finish(Status.OK, '');
  }

  /** The stream's bytes: split into messages by the reader, which asks `declared` before keeping any body. */
  data(chunk: Buffer): void {
    this.reader.push(chunk);
  }

  get stopped(): boolean {
    return this.ended;
  }

  /** Checks a message's prefix before its body is read: false (the stream ended) for a compressed or oversized one. */
  declared(flag: number, n: number): boolean {
    if (flag !== 0) {
      this.finish(Status.UNIMPLEMENTED, 'runtime stream: compressed messages are not accepted');
      return false;
    }
    if (n > this.o.maxMessageBytes) {
      this.finish(Status.RESOURCE_EXHAUSTED, `runtime stream: message of ${n} bytes is larger than the limit of ${this.o.maxMessageBytes} bytes`);
      return false;
    }
    return true;
  }

  message(msg: Buffer): void {
    try {
      this.handler.frame(msg);
    } catch (err) {
      if (err instanceof MalformedFrame) this.finish(Status.INVALID_ARGUMENT, 'frame: malformed RequestFrame');
      else this.finish(Status.INTERNAL, 'internal error');
    }
  }

  /** Ends the stream once with `code` in its trailers; a peer still sending is told to stop (RST_STREAM NO_ERROR after the trailers). */
  finish(code: number, details: string): void {
    if (this.ended) return;
    this.closed();
    if (code !== Status.OK) this.trailers = { 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details) };
    const s = this.stream;
    if (s.destroyed) return;
    try {
      s.end();
    } catch {
      s.destroy();
    }
  }

  /** Sends the trailers (the stream's 'wantTrailers'). */
  sendTrailers(): void {
    const s = this.stream;
    try {
      s.sendTrailers(this.trailers);
      // A turn later: RST_STREAM submitted at once can overtake the trailers inside nghttp2.
      if (!s.readableEnded) setImmediate(stopSending, s);
    } catch {
      // The peer went away meanwhile: nobody is left to tell.
    }
  }

  /** No more frames are handled nor answers sent (ended here, by the peer, or the session went away). */
  closed(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.timer) clearTimeout(this.timer);
    this.o.streams.delete(this);
    this.handler.close();
  }
}

const kLink = Symbol('infermesh.runtimeLink');
type LinkStream = http2.ServerHttp2Stream & { [kLink]?: RawLink };

// Shared listeners (no closures per stream); each is guarded: a throw out of an event listener would end the process.
function onData(this: LinkStream, chunk: Buffer): void {
  const l = this[kLink]!;
  try {
    l.data(chunk);
  } catch {
    l.finish(Status.INTERNAL, 'internal error');
  }
}
function onEnd(this: LinkStream): void {
  // The peer half-closed: as grpc-js's handler did, the stream ends OK (answers still due are dropped).
  this[kLink]!.end();
}
function onWantTrailers(this: LinkStream): void {
  this[kLink]!.sendTrailers();
}
function onClose(this: LinkStream): void {
  this[kLink]!.closed();
}

function serve(stream: LinkStream, headers: http2.IncomingHttpHeaders, o: RuntimeLinkOptions): void {
  if (!acceptGrpcStream(stream, headers)) return;
  if (o.peer) {
    try {
      o.peer({ getAuthContext: () => authContextOf(stream) });
    } catch (err) {
      const st = toStatus(err);
      return refuse(stream, st.code, st.details);
    }
  }
  let timeoutMs = Infinity;
  const t = headers['grpc-timeout'];
  if (typeof t === 'string') {
    timeoutMs = parseGrpcTimeout(t);
    if (Number.isNaN(timeoutMs)) return refuse(stream, Status.INTERNAL, `invalid grpc-timeout ${JSON.stringify(t.slice(0, 16))}`);
  }
  const link = new RawLink(stream, o, timeoutMs);
  stream[kLink] = link;
  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('wantTrailers', onWantTrailers);
  stream.on('close', onClose);
}

/**
 * Takes `path` (`/infermesh.v1.Runtime/Infer`) off every listener `server`
 * has bound; every other path goes on to whoever handled the listener's
 * streams before (grpc-js, or serveRawUnary in front of it). Call after
 * bindAsync. Returns false, changing nothing, when this grpc-js's internals
 * are not the ones this was written against (the stream then stays with its
 * grpc-js handler).
 */
export function serveRuntimeLink(server: grpc.Server, path: string, o: RuntimeLinkOptions): boolean {
  return serveRawPath(server, path, (stream, headers) => serve(stream, headers, o));
}
