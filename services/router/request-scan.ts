import { NAME_RE } from '../../libs/bus/index.js';
import { InvalidArgumentError } from '../../libs/errors/index.js';

/** The fields of a ModelInferRequest the router routes by. */
export interface RouteFields {
  modelName: string;
  modelVersion: string;
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

function malformed(): InvalidArgumentError {
  return new InvalidArgumentError('request', 'malformed ModelInferRequest');
}
