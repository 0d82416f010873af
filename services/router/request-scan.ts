import { NAME_RE } from '../../libs/bus/index.js';
import { InvalidArgumentError } from '../../libs/errors/index.js';

/** The fields of a ModelInferRequest the router routes by. */
export interface RouteFields {
  modelName: string;
  modelVersion: string;
  /**
   * The request's `timeout` parameter (int64, microseconds: Triton's
   * per-request timeout, as tritonclient's `timeout=` sends it); -1 when absent.
   */
  timeoutMicros: number;
}

/**
 * Longest model_name or model_version read, in bytes: longer than any valid
 * `name@alias` (63 + 1 + 63), so a cut value is still invalid, and a huge
 * one costs no huge string.
 */
const MAX_ROUTE_FIELD_BYTES = 128;

/** A model version as callers name it: a positive integer of at most 16 digits. */
export const VERSION_RE = /^[1-9]\d{0,15}$/;

/**
 * Checks a version selector ('' = the default, digits = a version, else an
 * alias); throws INVALID_ARGUMENT naming `field`, without echoing the value.
 */
export function checkSelector(selector: string, field: string): void {
  if (selector === '') return;
  if (/^\d+$/.test(selector)) {
    if (!VERSION_RE.test(selector)) throw new InvalidArgumentError(field, 'a version must be a positive integer of at most 16 digits');
  } else if (!NAME_RE.test(selector)) throw new InvalidArgumentError(field, 'an alias must match [a-z0-9][a-z0-9_-]{0,62}');
}

/**
 * Reads model_name (field 1) and model_version (field 2) from a serialized
 * inference.ModelInferRequest without decoding the rest: tensors and their
 * bytes are skipped by length, never parsed or copied. Throws
 * INVALID_ARGUMENT when the top-level wire format is malformed.
 */
export function scanRouteFields(buf: Buffer, out: RouteFields): RouteFields {
  out.modelName = '';
  out.modelVersion = '';
  out.timeoutMicros = -1;
  const len = buf.length;
  let pos = 0;
  while (pos < len) {
    // Tag varint (field numbers here are small; tags beyond 5 bytes are malformed).
    let tag = 0;
    let shift = 0;
    let b: number;
    do {
      if (pos >= len || shift > 28) throw malformed();
      b = buf[pos++]!;
      tag |= (b & 0x7f) << shift;
      shift += 7;
    } while (b & 0x80);
    tag >>>= 0;
    const field = tag >>> 3;
    switch (tag & 7) {
      case 0: // varint
        for (let i = 0; ; i++) {
          if (pos >= len || i >= 10) throw malformed();
          if (!(buf[pos++]! & 0x80)) break;
        }
        break;
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2: {
        let n = 0;
        shift = 0;
        do {
          if (pos >= len || shift > 28) throw malformed();
          b = buf[pos++]!;
          n += (b & 0x7f) * 2 ** shift;
          shift += 7;
        } while (b & 0x80);
        if (pos + n > len) throw malformed();
        if (field === 1) out.modelName = buf.toString('utf8', pos, pos + Math.min(n, MAX_ROUTE_FIELD_BYTES));
        else if (field === 2) out.modelVersion = buf.toString('utf8', pos, pos + Math.min(n, MAX_ROUTE_FIELD_BYTES));
        else if (field === 4 && n > TIMEOUT_KEY.length + 2 && buf[pos] === 0x0a && buf[pos + 1] === TIMEOUT_KEY.length && buf.compare(TIMEOUT_KEY, 0, TIMEOUT_KEY.length, pos + 2, pos + 2 + TIMEOUT_KEY.length) === 0) {
          out.timeoutMicros = timeoutParam(buf, pos + 2 + TIMEOUT_KEY.length, pos + n);
        }
        pos += n;
        break;
      }
      default:
        throw malformed();
    }
    if (field === 0) throw malformed();
  }
  if (pos !== len) throw malformed();
  return out;
}

const TIMEOUT_KEY = Buffer.from('timeout');

/**
 * The value of a `parameters` entry whose key is `timeout`: the entry's
 * value (field 2, an InferParameter) holding int64_param (field 2) — or
 * uint64_param (5), as some clients send. Anything else there is INVALID_ARGUMENT.
 */
function timeoutParam(buf: Buffer, pos: number, end: number): number {
  const bad = () => new InvalidArgumentError('parameters.timeout', 'must be an integer number of microseconds');
  if (buf[pos] !== 0x12) throw bad();
  const len = buf[pos + 1]!;
  if (len > 0x7f || pos + 2 + len !== end) throw bad();
  const tag = buf[pos + 2];
  if (tag !== 0x10 && tag !== 0x28) throw bad();
  let v = 0;
  let mul = 1;
  for (let i = pos + 3; i < end; i++) {
    const b = buf[i]!;
    v += (b & 0x7f) * mul;
    mul *= 128;
    if (!(b & 0x80)) {
      if (i !== end - 1 || v > Number.MAX_SAFE_INTEGER) throw bad();
      return v;
    }
  }
  throw bad();
}

/** The request's `id` (field 3), read only to echo it in a stream's error answer ('' when absent). */
export function scanRequestId(buf: Buffer): string {
  const len = buf.length;
  let pos = 0;
  try {
    while (pos < len) {
      const tag = buf[pos++]!;
      if (tag & 0x80) return '';
      const wire = tag & 7;
      if (wire === 0) {
        while (pos < len && buf[pos++]! & 0x80);
      } else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) {
        let n = 0;
        let shift = 0;
        let b: number;
        do {
          if (pos >= len || shift > 28) return '';
          b = buf[pos++]!;
          n += (b & 0x7f) * 2 ** shift;
          shift += 7;
        } while (b & 0x80);
        if (tag >>> 3 === 3) return buf.toString('utf8', pos, Math.min(len, pos + Math.min(n, MAX_ROUTE_FIELD_BYTES)));
        pos += n;
      } else return '';
    }
  } catch {
    return '';
  }
  return '';
}

function malformed(): InvalidArgumentError {
  return new InvalidArgumentError('request', 'malformed ModelInferRequest');
}
