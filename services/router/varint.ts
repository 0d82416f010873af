/**
 * Protobuf varints written by hand, for the router's answers and link frames
 * that are encoded without building a message object (timing parameters,
 * ModelStreamInfer answers, RequestFrame items).
 */

/** Writes `v` (a non-negative integer up to 2^53) as a varint at `at`; returns the offset after it. */
export function putVarint(out: Buffer, at: number, v: number): number {
  while (v > 0x7f) {
    out[at++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  out[at++] = v;
  return at;
}

/** Bytes `putVarint` writes for `v`. */
export function varintSize(v: number): number {
  let n = 1;
  while (v > 0x7f) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}
