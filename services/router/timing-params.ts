/**
 * Appends the timing breakdown to an encoded ModelInferResponse as
 * `parameters` map entries (field 4), written by hand: protobuf merges
 * repeated map entries, so the replica's bytes are copied once, untouched,
 * and nothing is decoded or re-encoded. Values are int64 microseconds
 * (`InferParameter.int64_param`), the trace id a `string_param`. The copy
 * leaves GRPC_PREFIX_BYTES free in front, where the gRPC front writes the
 * message prefix (frameInPlace) instead of copying the answer again.
 */
import { GRPC_PREFIX_BYTES } from '../../libs/grpc/raw-unary.js';
import { putVarint, varintSize } from '../../libs/wire/index.js';

const KEYS = ['infermesh.total_us', 'infermesh.router_us', 'infermesh.network_us', 'infermesh.queue_us', 'infermesh.compute_us'].map((k) => Buffer.from(k));
const TRACE_KEY = Buffer.from('infermesh.trace_id');
/** Enough for five int64 entries and a 32-character trace id. */
const MAX_EXTRA = 5 * (2 + 2 + 21 + 2 + 1 + 10) + (2 + 2 + 18 + 2 + 2 + 32);

/**
 * `response` followed by the timing parameters (values in µs, non-negative
 * integers), with GRPC_PREFIX_BYTES of the same allocation free before it.
 */
export function appendTiming(response: Uint8Array, values: readonly [number, number, number, number, number], traceId: string): Buffer {
  const out = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + response.byteLength + MAX_EXTRA);
  out.set(response, GRPC_PREFIX_BYTES);
  let at = GRPC_PREFIX_BYTES + response.byteLength;
  for (let i = 0; i < 5; i++) {
    const key = KEYS[i]!;
    const v = Math.max(0, Math.round(values[i]!));
    const param = 1 + varintSize(v); // InferParameter { int64_param (2) = v }
    const entry = 2 + key.length + 2 + param; // { key (1), value (2) }
    out[at++] = 0x22; // field 4, length-delimited
    at = putVarint(out, at, entry);
    out[at++] = 0x0a;
    out[at++] = key.length;
    at += key.copy(out, at);
    out[at++] = 0x12;
    out[at++] = param;
    out[at++] = 0x10;
    at = putVarint(out, at, v);
  }
  if (traceId.length === 32) {
    const param = 2 + 32; // InferParameter { string_param (3) = traceId }
    out[at++] = 0x22;
    at = putVarint(out, at, 2 + TRACE_KEY.length + 2 + param);
    out[at++] = 0x0a;
    out[at++] = TRACE_KEY.length;
    at += TRACE_KEY.copy(out, at);
    out[at++] = 0x12;
    out[at++] = param;
    out[at++] = 0x1a;
    out[at++] = 32;
    at += out.write(traceId, at, 'latin1');
  }
  return out.subarray(GRPC_PREFIX_BYTES, at);
}
