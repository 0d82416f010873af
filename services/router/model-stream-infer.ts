/**
 * Triton's `ModelStreamInfer` front door: many ModelInferRequests on one
 * bidirectional gRPC stream, each through the router's one request path
 * (request-path.ts) as if it had come alone, each answered by one
 * ModelStreamInferResponse as it completes (in any order; the replica echoes
 * the request's `id` in `infer_response`).
 *
 * - A failed request is answered in the stream — `error_message`
 *   ("<CODE>: <message>", the codes ModelInfer would answer) with the
 *   request's `id` and model in `infer_response` — and the stream goes on.
 * - Deadline of each request: the stream's, narrowed by the request's
 *   `timeout` parameter (µs, as tritonclient's `async_stream_infer(...,
 *   timeout=)` sends it), capped by the router's default timeout.
 * - At most `maxInflight` requests of one stream are in flight: the excess
 *   request is answered RESOURCE_EXHAUSTED in the stream (the stream stays).
 *   When the caller stops reading answers, reading its requests pauses too
 *   (HTTP/2 flow control then holds the caller back).
 * - When the caller half-closes, the stream ends (OK) once every request is
 *   answered; when it cancels or the stream's deadline passes, requests
 *   still in flight are cancelled (the replicas drop those not started).
 *
 * Messages pass through as bytes: requests are not decoded (the path reads
 * only its route fields), answers are framed by hand around the replica's
 * encoded ModelInferResponse.
 */
import type * as grpc from '@grpc/grpc-js';
import { remainingMsOf } from '../../libs/call-meta/index.js';
import { codeName, MeshError, ResourceExhaustedError } from '../../libs/errors/index.js';
import type { RequestPath, RouterRequest } from './request-path.js';
import { scanRequestId } from './request-scan.js';
import { putVarint, varintSize } from '../../libs/wire/index.js';

export interface StreamOptions {
  /** Requests of one stream in flight at once; the excess is answered RESOURCE_EXHAUSTED in the stream. */
  maxInflight: number;
}

/** Longest `error_message`, in characters (messages are short already; this bounds what a stream answer holds). */
const MAX_ERROR_CHARS = 512;

/** ModelStreamInferResponse { infer_response (2) = response }, the response's bytes copied once. */
export function streamAnswer(response: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(1 + varintSize(response.byteLength) + response.byteLength);
  out[0] = 0x12;
  const at = putVarint(out, 1, response.byteLength);
  out.set(response, at);
  return out;
}

/** ModelStreamInferResponse { error_message (1), infer_response (2) = { model_name (1), id (3) } }. */
export function streamError(err: MeshError, id: string, model: string): Buffer {
  const msg = Buffer.from(`${codeName(err.code)}: ${err.message}`.slice(0, MAX_ERROR_CHARS), 'utf8');
  const name = Buffer.from(model, 'utf8');
  const ident = Buffer.from(id, 'utf8');
  const inner = (name.length ? 1 + varintSize(name.length) + name.length : 0) + (ident.length ? 1 + varintSize(ident.length) + ident.length : 0);
  const out = Buffer.allocUnsafe(1 + varintSize(msg.length) + msg.length + 1 + varintSize(inner) + inner);
  let at = 0;
  out[at++] = 0x0a;
  at = putVarint(out, at, msg.length);
  at += msg.copy(out, at);
  out[at++] = 0x12;
  at = putVarint(out, at, inner);
  if (name.length) {
    out[at++] = 0x0a;
    at = putVarint(out, at, name.length);
    at += name.copy(out, at);
  }
  if (ident.length) {
    out[at++] = 0x1a;
    at = putVarint(out, at, ident.length);
    at += ident.copy(out, at);
  }
  return out;
}

/** The model a request names, read only to label a stream's error answer. */
function modelOf(req: RouterRequest | null): string {
  return req ? req.target.name : '';
}

/** One ModelStreamInfer call: its requests in flight and how it ends. */
class StreamCall {
  private readonly inflight = new Set<RouterRequest>();
  /** Requests accepted and not yet answered (counted before `accept` returns, so a synchronous answer balances it). */
  private pending = 0;
  private halfClosed = false;
  private closed = false;

  constructor(
    private readonly call: grpc.ServerDuplexStream<Buffer, Buffer>,
    private readonly path: RequestPath,
    private readonly o: StreamOptions,
  ) {}

  /** One request from the caller. */
  request(bytes: Buffer): void {
    if (this.closed) return;
    if (this.pending >= this.o.maxInflight) {
      const id = scanRequestId(bytes);
      this.write(streamError(new ResourceExhaustedError(`this stream already has ${this.o.maxInflight} requests in flight; wait for answers before sending more`), id, ''));
      return;
    }
    this.pending++;
    let req: RouterRequest | null = null;
    let answered = false;
    req = this.path.accept(bytes, this.call.metadata, remainingMsOf(this.call.getDeadline()), (r) => {
      answered = true;
      this.pending--;
      if (req) this.inflight.delete(req);
      if (this.closed) return;
      this.write(r instanceof MeshError ? streamError(r, scanRequestId(bytes), modelOf(req)) : streamAnswer(r));
      this.maybeEnd();
    });
    if (req && !answered) this.inflight.add(req);
  }

  /** The caller sends no more: end once every request is answered. */
  end(): void {
    this.halfClosed = true;
    this.maybeEnd();
  }

  /** The call is over (cancelled by the caller, its deadline passed, or ended): cancel what is in flight. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const req of [...this.inflight]) req.cancel();
    this.inflight.clear();
  }

  private write(msg: Buffer): void {
    // Back-pressure: a caller that does not read its answers stops being read.
    if (!this.call.write(msg) && !this.call.isPaused()) {
      this.call.pause();
      this.call.once('drain', () => this.call.resume());
    }
  }

  private maybeEnd(): void {
    if (this.halfClosed && this.pending === 0 && !this.closed) {
      this.closed = true;
      this.call.end();
    }
  }
}

/** The ModelStreamInfer handler (requests and answers as bytes: see rawInferService). */
export function modelStreamInfer(path: RequestPath, o: StreamOptions): grpc.handleBidiStreamingCall<Buffer, Buffer> {
  return (call) => {
    const s = new StreamCall(call, path, o);
    call.on('data', (b: Buffer) => s.request(b));
    call.on('end', () => s.end());
    call.on('cancelled', () => s.close());
    call.on('error', () => s.close());
    call.on('close', () => s.close());
  };
}
