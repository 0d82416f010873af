import { TensorProto_DataType } from '../proto/gen/onnx/onnx.js';

/**
 * ONNX tensor element types (TensorProto.DataType): FLOAT=1, UINT8=2, INT8=3,
 * UINT16=4, INT16=5, INT32=6, INT64=7, STRING=8, BOOL=9, FLOAT16=10,
 * DOUBLE=11, UINT32=12, UINT64=13. Re-exported from the generated proto so
 * there is one definition of the numbers.
 */
export const ElemType = TensorProto_DataType;
/** One ONNX tensor element type number. */
export type ElemType = TensorProto_DataType;

/** Typed arrays the builder can turn into tensor raw_data. BOOL takes a Uint8Array of 0/1. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

interface ElemInfo {
  readonly ort: string;
  readonly bytes: number;
  readonly array: new (n: number) => TensorData;
  readonly write: (view: DataView, offset: number, value: number | bigint) => void;
}

// DataView setters with littleEndian=true: ONNX raw_data is little-endian
// whatever the host's byte order.
const ELEM_INFO: ReadonlyMap<ElemType, ElemInfo> = new Map<ElemType, ElemInfo>([
  [ElemType.FLOAT, { ort: 'float32', bytes: 4, array: Float32Array, write: (v, o, x) => v.setFloat32(o, Number(x), true) }],
  [ElemType.DOUBLE, { ort: 'float64', bytes: 8, array: Float64Array, write: (v, o, x) => v.setFloat64(o, Number(x), true) }],
  [ElemType.INT8, { ort: 'int8', bytes: 1, array: Int8Array, write: (v, o, x) => v.setInt8(o, Number(x)) }],
  [ElemType.UINT8, { ort: 'uint8', bytes: 1, array: Uint8Array, write: (v, o, x) => v.setUint8(o, Number(x)) }],
  [ElemType.BOOL, { ort: 'bool', bytes: 1, array: Uint8Array, write: (v, o, x) => v.setUint8(o, Number(x) ? 1 : 0) }],
  [ElemType.INT16, { ort: 'int16', bytes: 2, array: Int16Array, write: (v, o, x) => v.setInt16(o, Number(x), true) }],
  [ElemType.UINT16, { ort: 'uint16', bytes: 2, array: Uint16Array, write: (v, o, x) => v.setUint16(o, Number(x), true) }],
  [ElemType.INT32, { ort: 'int32', bytes: 4, array: Int32Array, write: (v, o, x) => v.setInt32(o, Number(x), true) }],
  [ElemType.UINT32, { ort: 'uint32', bytes: 4, array: Uint32Array, write: (v, o, x) => v.setUint32(o, Number(x), true) }],
  [ElemType.INT64, { ort: 'int64', bytes: 8, array: BigInt64Array, write: (v, o, x) => v.setBigInt64(o, BigInt(x), true) }],
  [ElemType.UINT64, { ort: 'uint64', bytes: 8, array: BigUint64Array, write: (v, o, x) => v.setBigUint64(o, BigInt(x), true) }],
]);

function infoOf(elemType: ElemType): ElemInfo {
  const info = ELEM_INFO.get(elemType);
  if (!info) throw new RangeError(`onnx-builder: element type ${elemType} has no raw_data encoding here`);
  return info;
}

/**
 * The onnxruntime-node tensor type name for an ONNX element type
 * ('float32', 'int64', 'bool', ...). Throws RangeError for types without one here.
 */
export function ortTypeOf(elemType: ElemType): string {
  return infoOf(elemType).ort;
}

/**
 * Encodes `data` as little-endian raw_data for a tensor of `elemType`.
 * Throws TypeError when the array kind does not fit the element type.
 */
export function toRawData(elemType: ElemType, data: TensorData): Uint8Array {
  const info = infoOf(elemType);
  if (!(data instanceof info.array)) {
    throw new TypeError(
      `onnx-builder: ${ElemType[elemType]} data must be a ${info.array.name}, got ${data.constructor.name}`,
    );
  }
  const out = new Uint8Array(data.length * info.bytes);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) info.write(view, i * info.bytes, data[i]!);
  return out;
}
