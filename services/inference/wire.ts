/**
 * What crosses the thread boundary to the ONNX Runtime workers. Loads and
 * unloads are rare plain messages. A run, and its result, is ONE
 * ArrayBuffer, transferred (never cloned): a small Int32 header (op, slot,
 * tensor types, dims and byte lengths) followed by the tensors' bytes, each
 * 8-byte aligned so the other side makes typed arrays over them in place.
 * No per-request object graph is serialized.
 */
import type { OrtType } from '../../libs/tensor/index.js';
import type { RunTensor } from './ort-session.js';

export type ToWorker =
  | { op: 'load'; id: number; slot: number; bytes: Uint8Array; intraOpThreads: number; provider: string }
  | { op: 'unload'; id: number; slot: number }
  /** A run (see encodeRun). */
  | ArrayBuffer;

export type FromWorker =
  | { op: 'loaded'; id: number }
  | { op: 'unloaded'; id: number }
  | { op: 'error'; id: number; message: string }
  /** A run's result or failure (see decodeResult). */
  | ArrayBuffer;

const TYPES: readonly OrtType[] = ['bool', 'uint8', 'int8', 'uint16', 'int16', 'int32', 'uint32', 'int64', 'uint64', 'float16', 'float32', 'float64'];
const TYPE_CODE = new Map(TYPES.map((t, i) => [t, i]));

/** Header words of a message: [word count, slot or status, computeMicros, tensor count], then per tensor [type, byte length, ndims, ...dims]. */
const FIXED_WORDS = 4;
const STATUS_OK = 0;
const STATUS_ERROR = 1;

const align8 = (n: number) => (n + 7) & ~7;

/** One tensor of a run to send: its bytes given as the parts to concatenate (a batch's requests). */
export interface OutTensor {
  type: OrtType;
  dims: number[];
  parts: readonly Uint8Array[];
  byteLength: number;
}

function headerWords(tensors: readonly { dims: number[] }[]): number {
  let words = FIXED_WORDS;
  for (const t of tensors) words += 3 + t.dims.length;
  return words;
}

function write(tensors: readonly OutTensor[], word1: number, word2: number): ArrayBuffer {
  const words = headerWords(tensors);
  let size = align8(words * 4);
  for (const t of tensors) size += align8(t.byteLength);
  const buf = new ArrayBuffer(size);
  const h = new Int32Array(buf, 0, words);
  const bytes = new Uint8Array(buf);
  h[0] = words;
  h[1] = word1;
  h[2] = word2;
  h[3] = tensors.length;
  let w = FIXED_WORDS;
  let off = align8(words * 4);
  for (const t of tensors) {
    h[w++] = TYPE_CODE.get(t.type)!;
    h[w++] = t.byteLength;
    h[w++] = t.dims.length;
    for (const d of t.dims) h[w++] = d;
    for (const p of t.parts) {
      bytes.set(p, off);
      off += p.byteLength;
    }
    off = align8(off);
  }
  return buf;
}

function read(buf: ArrayBuffer): { word1: number; word2: number; tensors: RunTensor[] } {
  const words = new Int32Array(buf, 0, 1)[0]!;
  const h = new Int32Array(buf, 0, words);
  const n = h[3]!;
  const tensors: RunTensor[] = new Array(n);
  let w = FIXED_WORDS;
  let off = align8(words * 4);
  for (let i = 0; i < n; i++) {
    const type = TYPES[h[w++]!]!;
    const byteLength = h[w++]!;
    const nd = h[w++]!;
    const dims: number[] = new Array(nd);
    for (let d = 0; d < nd; d++) dims[d] = h[w++]!;
    tensors[i] = { type, dims, data: new Uint8Array(buf, off, byteLength) };
    off = align8(off + byteLength);
  }
  return { word1: h[1]!, word2: h[2]!, tensors };
}

/** A run of the session in `slot` on these inputs (in the model's input order). */
export function encodeRun(slot: number, inputs: readonly OutTensor[]): ArrayBuffer {
  return write(inputs, slot, 0);
}

export function decodeRun(buf: ArrayBuffer): { slot: number; inputs: RunTensor[] } {
  const r = read(buf);
  return { slot: r.word1, inputs: r.tensors };
}

/** A successful run's outputs (copied once from ONNX Runtime's memory into the message). */
export function encodeResult(outputs: readonly RunTensor[], computeMicros: number): ArrayBuffer {
  return write(outputs.map((t) => ({ type: t.type, dims: t.dims, parts: [t.data], byteLength: t.data.byteLength })), STATUS_OK, computeMicros);
}

/** A failed run: its message as the bytes of one uint8 tensor. */
export function encodeFailure(message: string): ArrayBuffer {
  const m = new TextEncoder().encode(message.slice(0, 1000));
  return write([{ type: 'uint8', dims: [m.length], parts: [m], byteLength: m.length }], STATUS_ERROR, 0);
}

/** A run's outputs (views into `buf`) and compute time, or its failure message. */
export function decodeResult(buf: ArrayBuffer): { outputs: RunTensor[]; computeMicros: number } | { error: string } {
  const r = read(buf);
  if (r.word1 !== STATUS_OK) return { error: new TextDecoder().decode(r.tensors[0]!.data) };
  return { outputs: r.tensors, computeMicros: r.word2 };
}
