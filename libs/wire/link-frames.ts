/**
 * The Runtime stream's frames (proto/infermesh/v1/runtime.proto), coded by
 * hand on both ends: the router writes RequestFrames and reads
 * ResponseFrames, the replica the other way round. A frame is read in one
 * pass into plain items whose bytes (`request`, `response`) are views of the
 * frame (no copy); a frame is written into one buffer that starts with the
 * gRPC message prefix, so the transport sends it as it is (the generic codec
 * grows a writer and copies every request or answer again; this is the hot
 * path). Same bytes as the generated codec (proto3: zero values left out),
 * checked by test/inference/link-frames.test.ts.
 */
import { GRPC_PREFIX_BYTES } from '../grpc/index.js';
import type { RequestItem, ResponseItem } from '../proto/index.js';
import { MalformedFrame, ProtoReader, putVarint, TWO_32, varintSize } from './varint.js';



/** Reads a RequestFrame: an array of its items, or throws MalformedFrame. */
export function decodeRequestFrame(buf: Buffer): RequestItem[] {
  return readFrame(buf, readItem);
}

/** The items (field 1, repeated) of a RequestFrame or ResponseFrame, each read by `readItem` between its bounds. */
function readFrame<T>(buf: Buffer, readItem: (buf: Buffer, start: number, end: number) => T): T[] {
  const items: T[] = [];
  const r = new ProtoReader(buf, 0, buf.length);
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
  const r = new ProtoReader(buf, start, end);
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
      case 50:
        it.request = r.bytes();
        break;
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

const EMPTY = new Uint8Array(0);

/** Encoded size of one ResponseItem, its message's UTF-8 length given. */
function responseItemSize(it: ResponseItem, message: number): number {
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
    const size = responseItemSize(it, message);
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

/** Encoded size of one RequestItem (proto3: zero values left out). */
function requestItemSize(it: RequestItem, model: number, tp: number): number {
  let n = 1 + varintSize(it.id);
  if (model) n += 1 + varintSize(model) + model;
  if (it.version) n += 1 + varintSize(it.version);
  if (it.timeoutMicros) n += 1 + varintSize(it.timeoutMicros);
  if (tp) n += 1 + varintSize(tp) + tp;
  if (it.request.byteLength) n += 1 + varintSize(it.request.byteLength) + it.request.byteLength;
  if (it.priority) n += 1 + varintSize(it.priority);
  if (it.cancel) n += 2;
  return n;
}

/**
 * A RequestFrame encoded by hand, GRPC_PREFIX_BYTES of gRPC message prefix
 * first: one allocation and one copy of each request's bytes (the generic
 * encoder grows a buffer and copies again; this is the hot path).
 */
export function encodeRequestFrame(items: readonly RequestItem[]): Buffer {
  let total = 0;
  const sizes = new Array<number>(items.length * 3);
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    const model = Buffer.byteLength(it.model);
    const tp = Buffer.byteLength(it.traceparent);
    const n = requestItemSize(it, model, tp);
    sizes[3 * i] = n;
    sizes[3 * i + 1] = model;
    sizes[3 * i + 2] = tp;
    total += 1 + varintSize(n) + n;
  }
  const out = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + total);
  out[0] = 0;
  out.writeUInt32BE(total, 1);
  let at = GRPC_PREFIX_BYTES;
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    out[at++] = 0x0a;
    at = putVarint(out, at, sizes[3 * i]!);
    out[at++] = 0x08;
    at = putVarint(out, at, it.id);
    const model = sizes[3 * i + 1]!;
    if (model) {
      out[at++] = 0x12;
      at = putVarint(out, at, model);
      at += out.write(it.model, at, 'utf8');
    }
    if (it.version) {
      out[at++] = 0x18;
      at = putVarint(out, at, it.version);
    }
    if (it.timeoutMicros) {
      out[at++] = 0x20;
      at = putVarint(out, at, it.timeoutMicros);
    }
    const tp = sizes[3 * i + 2]!;
    if (tp) {
      out[at++] = 0x2a;
      at = putVarint(out, at, tp);
      at += out.write(it.traceparent, at, 'utf8');
    }
    if (it.request.byteLength) {
      out[at++] = 0x32;
      at = putVarint(out, at, it.request.byteLength);
      out.set(it.request, at);
      at += it.request.byteLength;
    }
    if (it.priority) {
      out[at++] = 0x38;
      at = putVarint(out, at, it.priority);
    }
    if (it.cancel) {
      out[at++] = 0x40;
      out[at++] = 1;
    }
  }
  return out;
}


/** Reads a ResponseFrame: an array of its items (`response` a view of `buf`), or throws MalformedFrame. */
export function decodeResponseFrame(buf: Buffer): ResponseItem[] {
  return readFrame(buf, readResponseItem);
}

function readResponseItem(buf: Buffer, start: number, end: number): ResponseItem {
  const it: ResponseItem = { id: 0, code: 0, message: '', response: EMPTY, queueMicros: 0, computeMicros: 0 };
  const r = new ProtoReader(buf, start, end);
  while (r.at < end) {
    const tag = r.varint();
    switch (tag) {
      case 8:
        it.id = r.varint();
        break;
      case 16:
        it.code = r.varint() % TWO_32;
        break;
      case 26:
        it.message = r.string();
        break;
      case 34:
        it.response = r.bytes();
        break;
      case 40:
        it.queueMicros = r.varint() % TWO_32;
        break;
      case 48:
        it.computeMicros = r.varint() % TWO_32;
        break;
      default:
        r.skip(tag);
    }
  }
  return it;
}
