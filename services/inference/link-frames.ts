/**
 * The Runtime stream's frames (proto/infermesh/v1/runtime.proto), coded by
 * hand on the replica: a RequestFrame is read in one pass into plain items
 * whose `request` is a view of the frame (no copy), and a ResponseFrame is
 * written into one buffer that starts with the gRPC message prefix, so the
 * transport sends it as it is. The generic codec grows a writer and copies
 * every answer again; this is the hot path. Same bytes as the generated
 * codec (proto3: zero values left out), checked by test/inference/link-frames.test.ts.
 */
import { GRPC_PREFIX_BYTES } from '../../libs/grpc/index.js';
import type { RequestItem, ResponseItem } from '../../libs/proto/index.js';

/** A frame that is not a RequestFrame: the stream ends INVALID_ARGUMENT (as the generated decoder's throw did). */
export class MalformedFrame extends Error {}

const TWO_32 = 2 ** 32;

/** Reads a RequestFrame: an array of its items, or throws MalformedFrame. */
export function decodeRequestFrame(buf: Buffer): RequestItem[] {
  const items: RequestItem[] = [];
  const r = new Reader(buf, 0, buf.length);
  while (r.at < r.end) {
    const tag = r.varint();
    if (tag === 10) {
      const len = r.varint();
      items.push(readItem(buf, r.at, r.skipBytes(len)));
    } else r.skip(tag);
  }
  return items;
}

function readItem(buf: Buffer, start: number, end: number): RequestItem {
  const it: RequestItem = { id: 0, model: '', version: 0, timeoutMicros: 0, traceparent: '', request: EMPTY, priority: 0, cancel: false };
  const r = new Reader(buf, start, end);
  while (r.at < end) {
    const tag = r.varint();
    switch (tag) {
      case 8:
        it.id = r.varint();
        break;
      case 18:
        it.model = r.string();
        break;
      case 24:
        it.version = r.varint();
        break;
      case 32:
        it.timeoutMicros = r.varint() % TWO_32;
        break;
      case 42:
        it.traceparent = r.string();
        break;
      case 50: {
        const len = r.varint();
        const at = r.at;
        it.request = buf.subarray(at, r.skipBytes(len));
        break;
      }
      case 56:
        it.priority = r.varint() % TWO_32;
        break;
      case 64:
        it.cancel = r.varint() !== 0;
        break;
      default:
        r.skip(tag);
    }
  }
  return it;
}

class Reader {
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

const EMPTY = new Uint8Array(0);

/** Bytes of `n` (a non-negative integer below 2^53) as a varint. */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Writes `n` as a varint at `at`; returns the offset after it. */
function putVarint(out: Buffer, at: number, n: number): number {
  while (n >= 128) {
    out[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  return at;
}

/** Encoded size of one ResponseItem, its message's UTF-8 length given. */
function itemSize(it: ResponseItem, message: number): number {
  let n = 1 + varintSize(it.id);
  if (it.code) n += 1 + varintSize(it.code >>> 0);
  if (message) n += 1 + varintSize(message) + message;
  if (it.response.byteLength) n += 1 + varintSize(it.response.byteLength) + it.response.byteLength;
  if (it.queueMicros) n += 1 + varintSize(it.queueMicros >>> 0);
  if (it.computeMicros) n += 1 + varintSize(it.computeMicros >>> 0);
  return n;
}

/**
 * A ResponseFrame of `items`, GRPC_PREFIX_BYTES of gRPC message prefix
 * first: one allocation and one copy of each answer.
 */
export function encodeResponseFrame(items: readonly ResponseItem[]): Buffer {
  const n = items.length;
  // Per item: its size and its message's UTF-8 length (messages are empty on success).
  const sizes = new Array<number>(2 * n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const it = items[i]!;
    const message = it.message.length === 0 ? 0 : Buffer.byteLength(it.message);
    const size = itemSize(it, message);
    sizes[2 * i] = size;
    sizes[2 * i + 1] = message;
    total += 1 + varintSize(size) + size;
  }
  const out = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + total);
  out[0] = 0;
  out.writeUInt32BE(total, 1);
  let at = GRPC_PREFIX_BYTES;
  for (let i = 0; i < n; i++) {
    const it = items[i]!;
    out[at++] = 0x0a;
    at = putVarint(out, at, sizes[2 * i]!);
    out[at++] = 0x08;
    at = putVarint(out, at, it.id);
    if (it.code) {
      out[at++] = 0x10;
      at = putVarint(out, at, it.code >>> 0);
    }
    const message = sizes[2 * i + 1]!;
    if (message) {
      out[at++] = 0x1a;
      at = putVarint(out, at, message);
      at += out.write(it.message, at, message, 'utf8');
    }
    const len = it.response.byteLength;
    if (len) {
      out[at++] = 0x22;
      at = putVarint(out, at, len);
      out.set(it.response, at);
      at += len;
    }
    if (it.queueMicros) {
      out[at++] = 0x28;
      at = putVarint(out, at, it.queueMicros >>> 0);
    }
    if (it.computeMicros) {
      out[at++] = 0x30;
      at = putVarint(out, at, it.computeMicros >>> 0);
    }
  }
  return out;
}
