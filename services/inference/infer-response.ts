/**
 * A replica's ModelInferResponse, written by hand into one buffer sized
 * first (the generated encoder grows a writer chunk by chunk and joins the
 * forks: several allocations and copies per answer, on every request). The
 * same bytes as the generated encoder (test/inference/link-frames.test.ts);
 * an answer with output parameters or typed contents (never made here) or a
 * negative dimension goes through the generated encoder.
 */
import { oip } from '../../libs/proto/index.js';
import { putVarint, varintSize } from '../../libs/wire/index.js';
import type { CachedAnswer } from './response-cache.js';

const utf8 = (s: string) => (s.length === 0 ? 0 : Buffer.byteLength(s));

/** Bytes of a length-delimited field of `len` bytes with a one-byte tag. */
const field = (len: number) => 1 + varintSize(len) + len;

function handEncodable(a: CachedAnswer): boolean {
  for (const t of a.outputs) {
    if (t.contents !== undefined) return false;
    for (const _ in t.parameters) return false;
    for (const d of t.shape) if (!(d >= 0 && d <= Number.MAX_SAFE_INTEGER && Number.isInteger(d))) return false;
  }
  return true;
}

/** The encoded ModelInferResponse of one answer. */
export function encodeInferResponse(modelName: string, modelVersion: string, id: string, a: CachedAnswer): Uint8Array {
  if (!handEncodable(a)) {
    return oip.ModelInferResponse.encode({ modelName, modelVersion, id, parameters: {}, outputs: a.outputs, rawOutputContents: a.raw }).finish();
  }
  const nameLen = utf8(modelName);
  const versionLen = utf8(modelVersion);
  const idLen = utf8(id);
  let total = 0;
  if (nameLen) total += field(nameLen);
  if (versionLen) total += field(versionLen);
  if (idLen) total += field(idLen);
  const n = a.outputs.length;
  // Per output: its encoded size, its name's and datatype's UTF-8 lengths, its packed shape's length.
  const sizes = new Array<number>(4 * n);
  for (let o = 0; o < n; o++) {
    const t = a.outputs[o]!;
    const tn = utf8(t.name);
    const td = utf8(t.datatype);
    let shape = 0;
    for (const d of t.shape) shape += varintSize(d);
    let size = 0;
    if (tn) size += field(tn);
    if (td) size += field(td);
    if (t.shape.length) size += field(shape);
    sizes[4 * o] = size;
    sizes[4 * o + 1] = tn;
    sizes[4 * o + 2] = td;
    sizes[4 * o + 3] = shape;
    total += field(size);
  }
  for (const r of a.raw) total += field(r.byteLength);
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  if (nameLen) {
    out[at++] = 0x0a;
    at = putVarint(out, at, nameLen);
    at += out.write(modelName, at, nameLen, 'utf8');
  }
  if (versionLen) {
    out[at++] = 0x12;
    at = putVarint(out, at, versionLen);
    at += out.write(modelVersion, at, versionLen, 'utf8');
  }
  if (idLen) {
    out[at++] = 0x1a;
    at = putVarint(out, at, idLen);
    at += out.write(id, at, idLen, 'utf8');
  }
  for (let o = 0; o < n; o++) {
    const t = a.outputs[o]!;
    out[at++] = 0x2a;
    at = putVarint(out, at, sizes[4 * o]!);
    const tn = sizes[4 * o + 1]!;
    if (tn) {
      out[at++] = 0x0a;
      at = putVarint(out, at, tn);
      at += out.write(t.name, at, tn, 'utf8');
    }
    const td = sizes[4 * o + 2]!;
    if (td) {
      out[at++] = 0x12;
      at = putVarint(out, at, td);
      at += out.write(t.datatype, at, td, 'utf8');
    }
    if (t.shape.length) {
      out[at++] = 0x1a;
      at = putVarint(out, at, sizes[4 * o + 3]!);
      for (const d of t.shape) at = putVarint(out, at, d);
    }
  }
  for (const r of a.raw) {
    out[at++] = 0x32;
    at = putVarint(out, at, r.byteLength);
    out.set(r, at);
    at += r.byteLength;
  }
  return out;
}
