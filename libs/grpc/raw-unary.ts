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
  /** Largest request or response message; larger ones are answered RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
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
function encodeMessage(s: string): string {
  return /^[\x20-\x24\x26-\x7e]*$/.test(s) ? s : Buffer.from(s, 'utf8').reduce((out, b) => out + (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`), '');
}

function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function ignore(): void {}

/** A trailers-only answer: status in the one HEADERS frame, no message. */
function respondError(stream: http2.ServerHttp2Stream, code: number, details: string, extra?: Record<string, string>): void {
  if (stream.headersSent || stream.destroyed) return;
  try {
    stream.respond(
      { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', 'grpc-status': String(code), 'grpc-message': encodeMessage(details), ...extra },
      { endStream: true },
    );
  } catch {
    // The stream went away meanwhile: nobody is left to answer.
  }
}

/** The message of a complete request body, or an error status for it. */
function messageOf(body: Buffer, encoding: string | undefined, max: number): Buffer | { code: number; details: string } {
  if (body.length < GRPC_PREFIX_BYTES) return { code: Status.UNIMPLEMENTED, details: 'request: no message received for a unary call' };
  const len = body.readUInt32BE(1);
  if (body.length !== GRPC_PREFIX_BYTES + len) {
    return body.length < GRPC_PREFIX_BYTES + len
      ? { code: Status.INTERNAL, details: 'request: message truncated' }
      : { code: Status.UNIMPLEMENTED, details: 'request: more than one message for a unary call' };
  }
  // HTTP/2 DATA chunks are views into the session's read buffer (many streams' frames): a message
  // kept while its call is in flight would keep all of it alive, so a small one is copied out.
  const msg = body.subarray(GRPC_PREFIX_BYTES);
  if (body[0] === 0) return msg.buffer.byteLength > 2 * msg.length + 1024 ? Buffer.from(msg) : msg;
  if (body[0] !== 1) return { code: Status.INTERNAL, details: 'request: invalid message flag' };
  try {
    if (encoding === 'gzip') return zlib.gunzipSync(msg, { maxOutputLength: max });
    if (encoding === 'deflate') return zlib.inflateSync(msg, { maxOutputLength: max });
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE'
      ? { code: Status.RESOURCE_EXHAUSTED, details: `request: decompressed message larger than max (${max})` }
      : { code: Status.INTERNAL, details: 'request: message could not be decompressed' };
  }
  return { code: Status.UNIMPLEMENTED, details: `request: compressed with unsupported grpc-encoding ${JSON.stringify(encoding ?? '')}` };
}

function serve(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, handler: RawUnaryHandler, max: number): void {
  stream.on('error', ignore);
  const ct = headers[HTTP2_HEADER_CONTENT_TYPE];
  if (typeof ct !== 'string' || !ct.startsWith('application/grpc')) {
    try {
      stream.respond({ [HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
    } catch {
      // gone
    }
    return;
  }
  let deadlineMs = Infinity;
  const t = headers['grpc-timeout'];
  if (typeof t === 'string') {
    const ms = parseGrpcTimeout(t);
    if (Number.isNaN(ms)) return respondError(stream, Status.INTERNAL, `invalid grpc-timeout ${JSON.stringify(t.slice(0, 16))}`);
    deadlineMs = Date.now() + ms;
  }
  let first: Buffer | null = null;
  let more: Buffer[] | null = null;
  let size = 0;
  let refused = false;
  let checked = false;
  stream.on('data', (chunk: Buffer) => {
    if (refused) return;
    size += chunk.length;
    if (first === null) first = chunk;
    else (more ??= [first]).push(chunk);
    if (!checked && size >= GRPC_PREFIX_BYTES) {
      checked = true;
      const head = first.length >= GRPC_PREFIX_BYTES ? first : Buffer.concat(more!);
      const len = head.readUInt32BE(1);
      if (len > max) {
        // Refused as soon as the prefix says so; the rest is read and dropped.
        refused = true;
        first = more = null;
        respondError(stream, Status.RESOURCE_EXHAUSTED, `request: message of ${len} bytes is larger than the limit of ${max} bytes`);
      }
    }
  });
  stream.once('end', () => {
    if (refused) return;
    const body = more ? Buffer.concat(more) : (first ?? Buffer.alloc(0));
    first = more = null;
    const msg = messageOf(body, headers['grpc-encoding'] as string | undefined, max);
    if (!Buffer.isBuffer(msg)) return respondError(stream, msg.code, msg.details);
    let answered = false;
    const cancel = handler(msg, new IncomingHeaders(headers), deadlineMs, (code, details, framed, extra) => {
      answered = true;
      if (stream.destroyed || stream.headersSent) return;
      if (code !== 0 || framed === null) return respondError(stream, code, details, extra);
      if (framed.length - GRPC_PREFIX_BYTES > max) return respondError(stream, Status.RESOURCE_EXHAUSTED, `response: message of ${framed.length - GRPC_PREFIX_BYTES} bytes is larger than the limit of ${max} bytes`);
      try {
        stream.respond(OK_HEADERS, { waitForTrailers: true });
        stream.once('wantTrailers', sendOkTrailers);
        stream.end(framed);
      } catch {
        // The caller went away between the check and the write.
      }
    });
    if (cancel && !answered) stream.once('close', () => answered || cancel());
  });
}

/**
 * Takes `path` (e.g. `/inference.GRPCInferenceService/ModelInfer`) off every
 * listener `server` has bound and serves it with `handler`; every other path
 * still reaches grpc-js. Call after bindAsync. Returns false, changing
 * nothing, when this grpc-js's internals are not the ones this was written
 * against (the method then stays with its grpc-js handler).
 */
export function serveRawUnary(server: grpc.Server, path: string, handler: RawUnaryHandler, o: RawUnaryOptions): boolean {
  const listeners = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  if (!(listeners instanceof Map) || listeners.size === 0) return false;
  const servers = [...listeners.keys()];
  if (!servers.every((s) => typeof s?.listeners === 'function' && s.listeners('stream').length === 1)) return false;
  for (const s of servers) {
    const grpcJs = s.listeners('stream')[0] as (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => void;
    s.removeAllListeners('stream');
    s.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
      if (headers[http2.constants.HTTP2_HEADER_PATH] === path && headers[http2.constants.HTTP2_HEADER_METHOD] === 'POST') serve(stream, headers, handler, o.maxMessageBytes);
      else grpcJs.call(s, stream, headers, ...rest);
    });
  }
  return true;
}
