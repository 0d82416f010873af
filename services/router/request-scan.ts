import { InvalidArgumentError } from '../../libs/errors/index.js';

/** The fields of a ModelInferRequest the router routes by. */
export interface RouteFields {
  modelName: string;
  modelVersion: string;
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
        if (field === 1) out.modelName = buf.toString('utf8', pos, pos + n);
        else if (field === 2) out.modelVersion = buf.toString('utf8', pos, pos + n);
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
