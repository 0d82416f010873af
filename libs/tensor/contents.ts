import type { oip } from '../proto/index.js';
import type { DatatypeInfo, TypedArray } from './datatypes.js';

/**
 * Copies typed contents (e.g. fp32_contents) into little-endian bytes of
 * `count` elements. Returns null when the contents hold a different number
 * of values than `count` (the caller names the field in its error).
 */
export function typedContentsToBytes(dt: DatatypeInfo, contents: oip.InferTensorContents, count: number): Uint8Array | null {
  if (!dt.contents) return null;
  const values = contents[dt.contents] as ArrayLike<number | boolean>;
  if (values.length !== count) return null;
  const out = new dt.array(count);
  if (out instanceof BigInt64Array || out instanceof BigUint64Array) {
    for (let i = 0; i < count; i++) out[i] = BigInt(values[i] as number);
  } else {
    for (let i = 0; i < count; i++) (out as Exclude<TypedArray, BigInt64Array | BigUint64Array>)[i] = Number(values[i]);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** The number of values held in the typed-contents field of `dt`. */
export function typedContentsLength(dt: DatatypeInfo, contents: oip.InferTensorContents | undefined): number {
  if (!contents || !dt.contents) return 0;
  return (contents[dt.contents] as ArrayLike<unknown>).length;
}

/** True when any typed-contents field of `contents` holds values. */
export function hasTypedContents(contents: oip.InferTensorContents | undefined): boolean {
  if (!contents) return false;
  return (
    contents.boolContents.length + contents.intContents.length + contents.int64Contents.length +
    contents.uintContents.length + contents.uint64Contents.length + contents.fp32Contents.length +
    contents.fp64Contents.length + contents.bytesContents.length > 0
  );
}

/** Views little-endian raw bytes as a typed array (copies only when unaligned). */
export function rawToTyped(dt: DatatypeInfo, raw: Uint8Array): TypedArray {
  const n = raw.byteLength / dt.bytes;
  if (raw.byteOffset % dt.bytes === 0) return new dt.array(raw.buffer as ArrayBuffer, raw.byteOffset, n);
  const copy = new Uint8Array(raw.byteLength);
  copy.set(raw);
  return new dt.array(copy.buffer, 0, n);
}

/** Plain JS values of a typed array (bigint becomes number; bool becomes boolean). */
export function toPlain(dt: DatatypeInfo, a: TypedArray): (number | boolean)[] {
  const out: (number | boolean)[] = new Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const v = a[i]!;
    out[i] = dt.oip === 'BOOL' ? v !== 0 : Number(v);
  }
  return out;
}

/** Builds typed contents for `values` of datatype `dt` (clients and the CLI). */
export function toTypedContents(dt: DatatypeInfo, values: readonly (number | boolean)[]): Partial<oip.InferTensorContents> {
  if (!dt.contents) throw new Error(`${dt.oip} has no typed contents; send raw contents`);
  if (dt.oip === 'BOOL') return { boolContents: values.map(Boolean) };
  return { [dt.contents]: values.map(Number) };
}

/** Little-endian bytes of `values` in datatype `dt` (clients and the CLI). */
export function toRaw(dt: DatatypeInfo, values: readonly (number | boolean)[]): Uint8Array {
  const a = new dt.array(values.length);
  if (a instanceof BigInt64Array || a instanceof BigUint64Array) values.forEach((v, i) => (a[i] = BigInt(Number(v))));
  else values.forEach((v, i) => ((a as Float64Array)[i] = Number(v)));
  return new Uint8Array(a.buffer);
}
