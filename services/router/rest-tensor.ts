/**
 * JSON values <-> OIP tensor bytes for the REST gateway: nested lists are
 * checked to be rectangular, each value is checked against the tensor's
 * datatype (naming the field), and 64-bit integers beyond 2^53 come back exact.
 */
import { InvalidArgumentError } from '../../libs/errors/index.js';
import type { oip, TensorSpec } from '../../libs/proto/index.js';
import { DATATYPES, datatype, elementCount, rawToTyped, type DatatypeInfo } from '../../libs/tensor/index.js';
import type { Json } from './rest-json.js';

/** One value of a decoded tensor. */
export type Leaf = number | boolean | bigint;

/** A tensor as JSON callers see it: flat row-major values. */
export interface PlainTensor {
  name: string;
  datatype: string;
  shape: number[];
  data: Leaf[];
}

/** Deepest nesting accepted (ONNX Runtime itself refuses more dimensions long before). */
const MAX_RANK = 32;

/**
 * The shape and row-major leaves of a nested JSON list (a scalar has shape []).
 * Throws INVALID_ARGUMENT naming `field` when the list is ragged.
 */
export function flatten(value: Json, field: string): { shape: number[]; leaves: Json[] } {
  const shape: number[] = [];
  for (let v = value; Array.isArray(v); v = v[0]!) {
    if (shape.length === MAX_RANK) throw new InvalidArgumentError(field, `nested lists go deeper than ${MAX_RANK} levels`);
    shape.push(v.length);
    if (v.length === 0) break;
  }
  const leaves: Json[] = [];
  const walk = (v: Json, d: number): void => {
    if (d === shape.length) {
      if (Array.isArray(v)) throw ragged(field, shape);
      leaves.push(v);
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[d]) throw ragged(field, shape);
    for (let i = 0; i < v.length; i++) walk(v[i]!, d + 1);
  };
  walk(value, 0);
  return { shape, leaves };
}

function ragged(field: string, shape: number[]): InvalidArgumentError {
  return new InvalidArgumentError(field, `nested lists are ragged (the first elements give shape [${shape.join(',')}])`);
}

/** The served datatype named `name`; INVALID_ARGUMENT naming `field` otherwise. */
export function datatypeOf(name: Json | undefined, field: string): DatatypeInfo {
  const dt = typeof name === 'string' ? datatype(name) : undefined;
  if (!dt) throw new InvalidArgumentError(field, `${JSON.stringify(name ?? null)} is not a served datatype (${DATATYPES.join(', ')})`);
  return dt;
}

const INT_RANGE: Record<string, [number, number]> = {
  UINT8: [0, 0xff],
  INT8: [-0x80, 0x7f],
  UINT16: [0, 0xffff],
  INT16: [-0x8000, 0x7fff],
  INT32: [-0x80000000, 0x7fffffff],
  UINT32: [0, 0xffffffff],
};
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;
const INTEGER_TEXT = /^-?\d{1,20}$/;

/**
 * Little-endian bytes of `leaves` as datatype `dt`. Booleans accept true/false
 * (and 0/1); integers must be whole and in range (64-bit ones may also be
 * decimal strings, to carry values beyond 2^53 exactly); floats must be numbers.
 * Throws INVALID_ARGUMENT naming `field` (or `field(index)` of the bad value).
 */
export function encodeLeaves(dt: DatatypeInfo, leaves: readonly Json[], field: string | ((index: number) => string)): Uint8Array {
  const n = leaves.length;
  let i = 0;
  const bad = (v: Json) => new InvalidArgumentError(typeof field === 'string' ? field : field(i), `${JSON.stringify(v)} is not a valid ${dt.oip} value`);
  const out = new dt.array(n);
  switch (dt.oip) {
    case 'BOOL': {
      const a = out as Uint8Array;
      for (i = 0; i < n; i++) {
        const v = leaves[i]!;
        if (v === true || v === 1) a[i] = 1;
        else if (v !== false && v !== 0) throw bad(v);
      }
      break;
    }
    case 'INT64':
    case 'UINT64': {
      const a = out as BigInt64Array | BigUint64Array;
      const lo = dt.oip === 'INT64' ? INT64_MIN : 0n;
      const hi = dt.oip === 'INT64' ? INT64_MAX : UINT64_MAX;
      for (i = 0; i < n; i++) {
        const v = leaves[i]!;
        let b: bigint;
        if (typeof v === 'number' && Number.isInteger(v)) b = BigInt(v);
        else if (typeof v === 'string' && INTEGER_TEXT.test(v)) b = BigInt(v);
        else throw bad(v);
        if (b < lo || b > hi) throw bad(v);
        a[i] = b;
      }
      break;
    }
    case 'FP16': {
      const a = out as Uint16Array;
      for (i = 0; i < n; i++) {
        const v = leaves[i]!;
        if (typeof v !== 'number') throw bad(v);
        a[i] = toHalf(v);
      }
      break;
    }
    case 'FP32':
    case 'FP64': {
      const a = out as Float32Array | Float64Array;
      for (i = 0; i < n; i++) {
        const v = leaves[i]!;
        if (typeof v !== 'number') throw bad(v);
        a[i] = v;
      }
      break;
    }
    default: {
      const [lo, hi] = INT_RANGE[dt.oip]!;
      const a = out as Exclude<typeof out, BigInt64Array | BigUint64Array>;
      for (i = 0; i < n; i++) {
        const v = leaves[i]!;
        if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw bad(v);
        a[i] = v;
      }
    }
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Checks a JSON tensor's shape against the model's TensorSpec (-1 = any
 * size); throws INVALID_ARGUMENT naming `field`.
 */
export function checkShape(spec: TensorSpec, shape: readonly number[], field: string): void {
  const want = spec.shape;
  let ok = want.length === shape.length;
  for (let d = 0; ok && d < shape.length; d++) ok = want[d]! < 0 || want[d] === shape[d];
  if (!ok) {
    throw new InvalidArgumentError(field, `shape [${shape.join(',')}] does not match input "${spec.name}" of shape [${want.map((d) => (d < 0 ? -1 : d)).join(',')}]`);
  }
}

/**
 * The outputs of a ModelInferResponse (raw or typed contents) as plain
 * values: FP32 and FP16 values as their shortest decimal, 64-bit integers as
 * numbers when exact and bigints otherwise. An output whose datatype is not
 * served comes back with no data.
 */
export function decodeOutputs(res: oip.ModelInferResponse): PlainTensor[] {
  return res.outputs.map((t, i) => {
    const dt = datatype(t.datatype);
    const out: PlainTensor = { name: t.name, datatype: t.datatype, shape: t.shape, data: [] };
    if (!dt) return out;
    const raw = res.rawOutputContents[i];
    if (raw) out.data = plain(dt, rawToTyped(dt, raw));
    else if (t.contents && dt.contents) {
      const vals = t.contents[dt.contents] as ArrayLike<number | boolean>;
      out.data = Array.from(vals, (v) => (dt.oip === 'BOOL' ? Boolean(v) : dt.oip === 'FP32' ? shortFloat32(Number(v)) : Number(v)));
    }
    return out;
  });
}

function plain(dt: DatatypeInfo, a: ArrayLike<number | bigint>): Leaf[] {
  const n = a.length;
  const out: Leaf[] = new Array(n);
  switch (dt.oip) {
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = a[i] !== 0;
      break;
    case 'FP32':
      for (let i = 0; i < n; i++) out[i] = shortFloat32(a[i] as number);
      break;
    case 'FP16':
      for (let i = 0; i < n; i++) out[i] = shortHalf(a[i] as number);
      break;
    case 'INT64':
    case 'UINT64':
      for (let i = 0; i < n; i++) {
        const b = a[i] as bigint;
        const x = Number(b);
        out[i] = Number.isSafeInteger(x) ? x : b;
      }
      break;
    default:
      for (let i = 0; i < n; i++) out[i] = a[i] as number;
  }
  return out;
}

/**
 * Nests `count(shape)` values of `data` from `offset` into lists of `shape`
 * (a scalar for shape []).
 */
export function nest(data: readonly Leaf[], shape: readonly number[], offset = 0): Leaf | Leaf[] | unknown[] {
  if (shape.length === 0) return data[offset]!;
  const build = (d: number, off: number): unknown[] => {
    const n = shape[d]!;
    const out: unknown[] = new Array(n);
    if (d === shape.length - 1) {
      for (let i = 0; i < n; i++) out[i] = data[off + i];
      return out;
    }
    const stride = elementCount(shape.slice(d + 1));
    for (let i = 0; i < n; i++) out[i] = build(d + 1, off + i * stride);
    return out;
  };
  return build(0, offset);
}

/** The shortest decimal that reads back as the same float32 (0.1, not 0.10000000149011612). */
function shortFloat32(v: number): number {
  if (!Number.isFinite(v) || v === 0) return v;
  for (let p = 6; p < 9; p++) {
    const x = Number(v.toPrecision(p));
    if (Math.fround(x) === v) return x;
  }
  return Number(v.toPrecision(9));
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half bits of `v`, rounded to nearest even. */
export function toHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** The number whose IEEE half bits are `h`. */
export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

function shortHalf(h: number): number {
  const v = fromHalf(h);
  if (!Number.isFinite(v) || v === 0) return v;
  for (let p = 3; p < 5; p++) {
    const x = Number(v.toPrecision(p));
    if (toHalf(x) === h) return x;
  }
  return Number(v.toPrecision(5));
}
