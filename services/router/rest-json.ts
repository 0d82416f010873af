/**
 * HTTP plumbing of the REST gateway: bounded JSON bodies, JSON answers (with
 * exact 64-bit integers), and the one mapping from errors to HTTP statuses.
 */
import type http from 'node:http';
import { httpStatusOf, InvalidArgumentError, Status, toStatus } from '../../libs/errors/index.js';

/** A JSON value as `JSON.parse` returns it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** A value the gateway writes: JSON plus bigint (64-bit integers beyond 2^53, written exactly). */
export type Out = null | boolean | number | bigint | string | readonly Out[] | { readonly [key: string]: Out | undefined };

/**
 * An answer decided by HTTP alone (unknown path, wrong method, body too
 * large), with no gRPC status behind it. Everything else is a MeshError.
 */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/**
 * The HTTP status and caller-facing message of any error: an HttpError keeps
 * its own; a MeshError maps by its gRPC code (libs/errors httpStatusOf: INVALID_ARGUMENT and
 * FAILED_PRECONDITION 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
 * NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, DEADLINE_EXCEEDED
 * 504, others 500); anything else is 500 "internal error" (`internal` true),
 * so no stack or payload leaks.
 */
export function httpErrorOf(err: unknown): { status: number; message: string; headers: Record<string, string>; internal: boolean } {
  if (err instanceof HttpError) return { status: err.status, message: err.message, headers: err.headers, internal: false };
  const st = toStatus(err);
  return { status: httpStatusOf(st.code), message: st.details, headers: {}, internal: st.code === Status.INTERNAL };
}

/**
 * Reads the request body, refusing more than `limit` bytes with 413. A
 * refused body is read to its end and discarded before the answer goes out,
 * so that clients that send the whole body before reading (Python's
 * http.client) see the 413 rather than a broken pipe; past 16× the limit the
 * answer goes out at once and the connection is closed.
 */
export function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const refuse = () =>
      void discard(req, 16 * limit).then((complete) =>
        reject(new HttpError(413, `request body exceeds ${limit} bytes`, complete ? {} : { connection: 'close' })),
      );
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) return refuse();
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      cleanup();
      chunks.length = 0;
      refuse();
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = () => {
      cleanup();
      reject(new HttpError(400, 'request body could not be read'));
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/** Reads and drops the rest of a body; resolves true at its end, false past `cap` bytes or when the client goes away. */
function discard(req: http.IncomingMessage, cap: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (req.complete) return resolve(true);
    let more = 0;
    const stop = (complete: boolean) => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      if (!complete) req.on('data', () => undefined);
      resolve(complete);
    };
    const onData = (chunk: Buffer) => {
      more += chunk.length;
      if (more > cap) stop(false);
    };
    const onEnd = () => stop(true);
    const onClose = () => stop(req.complete);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('close', onClose);
    req.on('error', () => undefined);
    req.resume();
  });
}

/** Parses a body that must be one JSON object; 400 with the parser's reason otherwise. */
export function parseJsonObject(body: Buffer): JsonObject {
  if (body.length === 0) throw new InvalidArgumentError('body', 'must be a JSON object, got an empty body');
  let v: Json;
  try {
    v = JSON.parse(body.toString('utf8')) as Json;
  } catch (err) {
    throw new InvalidArgumentError('body', `malformed JSON: ${(err as Error).message}`);
  }
  if (!isObject(v)) throw new InvalidArgumentError('body', `must be a JSON object, got ${kindOf(v)}`);
  return v;
}

export function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** "an array", "a string" … for error messages. */
export function kindOf(v: Json | undefined): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

/** JSON text of `v`; bigints are written as exact integers, non-finite numbers as null. */
export function stringify(v: Out): string {
  const parts: string[] = [];
  write(v, parts);
  return parts.join('');
}

function write(v: Out | undefined, parts: string[]): void {
  if (typeof v === 'number') parts.push(Number.isFinite(v) ? String(v) : 'null');
  else if (typeof v === 'bigint') parts.push(v.toString());
  else if (Array.isArray(v)) {
    parts.push('[');
    for (let i = 0; i < v.length; i++) {
      if (i) parts.push(',');
      write(v[i], parts);
    }
    parts.push(']');
  } else if (typeof v === 'object' && v !== null) {
    parts.push('{');
    let first = true;
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue;
      if (!first) parts.push(',');
      first = false;
      parts.push(JSON.stringify(k), ':');
      write(x, parts);
    }
    parts.push('}');
  } else parts.push(JSON.stringify(v ?? null));
}

/** Writes a JSON answer (no-op when the client is gone). */
export function sendJson(res: http.ServerResponse, status: number, body: Out, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}
