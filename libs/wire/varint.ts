/**
 * Protobuf wire format by hand, for the messages the data plane codes
 * without building message objects: the Runtime link's frames (both ways),
 * the router's timing parameters and ModelStreamInfer answers, the replica's
 * ModelInferResponse. Varints up to 2^53 (ids, versions, lengths).
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

/** Bytes that are not the message they should be: the reader's caller answers INVALID_ARGUMENT (or drops the frame). */
export class MalformedFrame extends Error {}

export const TWO_32 = 2 ** 32;

/** Reads protobuf fields from `buf` between `at` and `end`; throws MalformedFrame past the end or on a bad tag. */
export class ProtoReader {
  constructor(
    readonly buf: Buffer,
    public at: number,
    readonly end: number,
  ) {}

  /** A varint of up to 53 bits (ids, versions, lengths); larger is malformed here (the generated decoder threw too). */
  varint(): number {
    const b = this.buf;
    let at = this.at;
    let x = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (at >= this.end) throw new MalformedFrame('truncated varint');
      const c = b[at++]!;
      x += (c & 0x7f) * mul;
      if (c < 0x80) {
        if (x > Number.MAX_SAFE_INTEGER) throw new MalformedFrame('varint out of range');
        this.at = at;
        return x;
      }
      mul *= 128;
    }
    throw new MalformedFrame('varint too long');
  }

  /** Moves past `len` bytes; returns where they end. */
  skipBytes(len: number): number {
    const end = this.at + len;
    if (end > this.end) throw new MalformedFrame('truncated field');
    this.at = end;
    return end;
  }

  /** A length-delimited field's bytes, as a view of the buffer (no copy). */
  bytes(): Buffer {
    const len = this.varint();
    const at = this.at;
    return this.buf.subarray(at, this.skipBytes(len));
  }

  string(): string {
    const len = this.varint();
    const at = this.at;
    const end = this.skipBytes(len);
    return len === 0 ? '' : this.buf.toString('utf8', at, end);
  }

  /** Skips a field this reader does not use (an unknown field, or a known one of another wire type). */
  skip(tag: number): void {
    if (tag < 8 || tag >= TWO_32) throw new MalformedFrame('bad field number');
    const wireType = tag % 8;
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.skipBytes(8);
        return;
      case 2:
        this.skipBytes(this.varint());
        return;
      case 5:
        this.skipBytes(4);
        return;
      default:
        throw new MalformedFrame(`wire type ${wireType}`);
    }
  }
}

