/**
 * The HTTP binary tensor extension (Triton's `binary_tensor_data`, which
 * tritonclient.http uses by default) and HTTP compression on OIP REST infer:
 *
 * - A request with `Inference-Header-Content-Length: N` is N bytes of JSON
 *   followed by the inputs' bytes, in input order: an input with
 *   `parameters.binary_data_size: k` takes the next k bytes (little-endian
 *   values; BYTES as 4-byte little-endian lengths each followed by the
 *   bytes), the others carry `data` as JSON. The bytes become the gRPC
 *   request's raw contents as they are (no re-encoding).
 * - Outputs come back binary when asked (`parameters.binary_data: true` on
 *   an output, or `binary_data_output: true` on the request for every
 *   output without its own): the JSON names their `binary_data_size`, the
 *   bytes follow it in output order, and `Inference-Header-Content-Length`
 *   gives the JSON's length.
 * - `Content-Encoding: gzip|deflate` on the request is inflated on the thread
 *   pool, never past the body limit (413); `Accept-Encoding: gzip|deflate`
 *   compresses the answer the same way.
 */
import type http from 'node:http';
import zlib from 'node:zlib';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import type { oip } from '../../libs/proto/index.js';
import { HttpError, isObject, parseJsonObject, readBody, stringify, type JsonObject, type Out } from './rest-json.js';
import { decodeOutputs } from './rest-tensor.js';

export const HEADER_LENGTH = 'inference-header-content-length';

/** An answer already encoded (binary tensors, compression): written as it is. */
export class EncodedAnswer {
  constructor(
    readonly body: Buffer,
    readonly headers: Record<string, string>,
  ) {}
}

/**
 * (De)compressions running at once on libuv's thread pool (4 threads by
 * default): a flood of compressed requests waits here instead of taking
 * every thread from the rest of the process (DNS, files, other zlib work).
 */
const MAX_ZLIB_AT_ONCE = 2;
let zlibRunning = 0;
const zlibWaiting: (() => void)[] = [];

async function zlibSlot<T>(work: () => Promise<T>): Promise<T> {
  if (zlibRunning < MAX_ZLIB_AT_ONCE) zlibRunning++;
  else await new Promise<void>((resolve) => zlibWaiting.push(resolve));
  try {
    return await work();
  } finally {
    // The slot passes straight to the next waiter, so none can slip in between.
    const next = zlibWaiting.shift();
    if (next) next();
    else zlibRunning--;
  }
}

/** Inflates a gzip or deflate (zlib) body on the thread pool, at most `maxBytes` out (413 beyond). */
export function inflateBody(body: Buffer, encoding: string, maxBytes: number): Promise<Buffer> {
  const fn = encoding === 'gzip' || encoding === 'x-gzip' ? zlib.gunzip : encoding === 'deflate' ? zlib.inflate : null;
  if (!fn) return Promise.reject(new HttpError(415, `content-encoding: ${JSON.stringify(encoding.slice(0, 32))} is not served (gzip, deflate)`, { 'accept-encoding': 'gzip, deflate' }));
  return zlibSlot(
    () =>
      new Promise<Buffer>((resolve, reject) =>
        fn(body, { maxOutputLength: maxBytes }, (err, out) => {
          if (!err) return resolve(out);
          if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') reject(new HttpError(413, `request body inflates past ${maxBytes} bytes`));
          else reject(new InvalidArgumentError('body', `cannot be inflated as ${encoding}`));
        }),
      ),
  );
}

/**
 * Reads an OIP infer body: inflated when it says so, then split at
 * `Inference-Header-Content-Length` into the JSON and the binary tensor
 * bytes (null when the header is absent). 400 naming the header when it
 * does not fit the body.
 */
export async function readInferBody(req: http.IncomingMessage, maxBytes: number): Promise<{ json: JsonObject; binary: Buffer | null }> {
  let body = await readBody(req, maxBytes);
  const enc = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
  if (enc && enc !== 'identity') body = await inflateBody(body, enc, maxBytes);
  const h = req.headers[HEADER_LENGTH];
  if (h === undefined) return { json: parseJsonObject(body), binary: null };
  const n = Number(Array.isArray(h) ? h[0] : h);
  if (!Number.isSafeInteger(n) || n < 0 || n > body.length) {
    throw new InvalidArgumentError('Inference-Header-Content-Length', `must be a whole number of bytes within the body (${body.length} bytes)`);
  }
  return { json: parseJsonObject(body.subarray(0, n)), binary: body.subarray(n) };
}

/** Triton's BYTES raw form: each element as a 4-byte little-endian length and its bytes. */
export function encodeBytesElements(values: readonly string[]): Uint8Array {
  const parts = values.map((v) => Buffer.from(v, 'utf8'));
  const out = Buffer.allocUnsafe(parts.reduce((n, p) => n + 4 + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.writeUInt32LE(p.length, off);
    p.copy(out, off + 4);
    off += 4 + p.length;
  }
  return out;
}

/** The elements of a BYTES raw form; null when it is not exactly whole elements. */
export function decodeBytesElements(raw: Uint8Array): Buffer[] | null {
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const out: Buffer[] = [];
  let off = 0;
  while (off < b.length) {
    if (off + 4 > b.length) return null;
    const n = b.readUInt32LE(off);
    if (off + 4 + n > b.length) return null;
    out.push(b.subarray(off + 4, off + 4 + n));
    off += 4 + n;
  }
  return out;
}

/** Which outputs of an infer body the caller wants as binary (by name), and the default for the others. */
export interface BinaryWants {
  all: boolean;
  byName: Map<string, boolean>;
}

/** Reads `binary_data_output` and each output's `binary_data` (booleans; anything else is 400 naming it). */
export function binaryWants(body: JsonObject): BinaryWants {
  const flag = (v: unknown, field: string): boolean | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw new InvalidArgumentError(field, 'must be a boolean');
    return v;
  };
  const p = isObject(body.parameters) ? body.parameters : {};
  const wants: BinaryWants = { all: flag(p.binary_data_output, 'parameters.binary_data_output') ?? false, byName: new Map() };
  if (Array.isArray(body.outputs)) {
    body.outputs.forEach((o, j) => {
      if (!isObject(o) || typeof o.name !== 'string' || !isObject(o.parameters)) return;
      const b = flag(o.parameters.binary_data, `outputs[${j}].parameters.binary_data`);
      if (b !== undefined) wants.byName.set(o.name, b);
    });
  }
  return wants;
}

/** The response encodings a caller accepts, first choice first (gzip, then deflate; q=0 refuses). */
function acceptedEncoding(req: http.IncomingMessage): 'gzip' | 'deflate' | null {
  const h = req.headers['accept-encoding'];
  if (!h) return null;
  const offered = new Map<string, number>();
  for (const part of String(h).split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((x) => x.trim()).find((x) => x.startsWith('q='));
    offered.set(name!, q ? Number(q.slice(2)) : 1);
  }
  if ((offered.get('gzip') ?? 0) > 0) return 'gzip';
  if ((offered.get('deflate') ?? 0) > 0) return 'deflate';
  return null;
}

function compress(body: Buffer, encoding: 'gzip' | 'deflate'): Promise<Buffer> {
  const fn = encoding === 'gzip' ? zlib.gzip : zlib.deflate;
  return zlibSlot(() => new Promise<Buffer>((resolve, reject) => fn(body, (err, out) => (err ? reject(err) : resolve(out)))));
}

/**
 * The OIP REST infer answer for `res`: JSON with flat `data`, outputs the
 * caller asked for as binary after the JSON (with the header giving the
 * JSON's length), compressed as the caller accepts.
 */
export async function inferAnswer(req: http.IncomingMessage, res: oip.ModelInferResponse, wants: BinaryWants): Promise<EncodedAnswer> {
  const plain = decodeOutputs(res);
  const parts: Uint8Array[] = [];
  const outputs: Out[] = res.outputs.map((t, i) => {
    const binary = wants.byName.get(t.name) ?? wants.all;
    const raw = res.rawOutputContents[i];
    if (binary && raw) {
      parts.push(raw);
      return { name: t.name, datatype: t.datatype, shape: t.shape, parameters: { binary_data_size: raw.byteLength } };
    }
    if (t.datatype === 'BYTES' && raw) {
      const els = decodeBytesElements(raw) ?? [];
      return { name: t.name, datatype: t.datatype, shape: t.shape, data: els.map((e) => e.toString('utf8')) };
    }
    return { name: t.name, datatype: t.datatype, shape: t.shape, data: plain[i]!.data };
  });
  const params = Object.entries(res.parameters);
  const json = Buffer.from(
    stringify({
      model_name: res.modelName,
      model_version: res.modelVersion,
      id: res.id,
      parameters: params.length ? Object.fromEntries(params.map(([k, v]) => [k, v.parameterChoice?.value ?? null])) : undefined,
      outputs,
    }),
    'utf8',
  );
  const headers: Record<string, string> = {};
  let body: Buffer;
  if (parts.length) {
    body = Buffer.concat([json, ...parts]);
    headers['content-type'] = 'application/octet-stream';
    headers[HEADER_LENGTH] = String(json.length);
  } else {
    body = json;
    headers['content-type'] = 'application/json';
  }
  const enc = acceptedEncoding(req);
  if (enc) {
    body = await compress(body, enc);
    headers['content-encoding'] = enc;
  }
  headers.vary = 'Accept-Encoding';
  return new EncodedAnswer(body, headers);
}
