import { TensorProto, TensorProto_DataType as DataType } from '../proto/gen/onnx/onnx.js';

/** The values of a FLOAT tensor (raw_data or float_data); null for other types or external data. */
export function floatValues(t: TensorProto): Float32Array | null {
  if (t.dataType !== DataType.FLOAT || t.externalData.length > 0) return null;
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (t.rawData.byteLength > 0) {
    if (t.rawData.byteLength !== count * 4) return null;
    const view = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
    return out;
  }
  return t.floatData.length === count ? Float32Array.from(t.floatData) : null;
}

/** A FLOAT tensor named `name` with `values` as little-endian raw_data. */
export function floatTensor(name: string, dims: readonly number[], values: Float32Array): TensorProto {
  const raw = new Uint8Array(values.length * 4);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
  return TensorProto.fromPartial({ name, dims: [...dims], dataType: DataType.FLOAT, rawData: raw });
}

/** An INT8 tensor with raw_data. */
export function int8Tensor(name: string, dims: readonly number[], values: Int8Array): TensorProto {
  return TensorProto.fromPartial({ name, dims: [...dims], dataType: DataType.INT8, rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength).slice() });
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 half-precision bits of `value`, rounded to nearest even (overflow → ±Infinity). */
export function toHalfBits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  // A carry out of the mantissa steps the exponent up, which is what rounding up means (up to Infinity).
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** A FLOAT16 tensor of `values` (rounded to nearest even) with raw_data. */
export function float16Tensor(name: string, dims: readonly number[], values: Float32Array): TensorProto {
  const raw = new Uint8Array(values.length * 2);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < values.length; i++) view.setUint16(i * 2, toHalfBits(values[i]!), true);
  return TensorProto.fromPartial({ name, dims: [...dims], dataType: DataType.FLOAT16, rawData: raw });
}
