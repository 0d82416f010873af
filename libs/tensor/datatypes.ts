import type { oip } from '../proto/index.js';

/** ONNX Runtime tensor element types we serve (strings are not yet served). */
export type OrtType =
  | 'bool' | 'uint8' | 'int8' | 'uint16' | 'int16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'float16' | 'float32' | 'float64';

type TypedArrayCtor =
  | Uint8ArrayConstructor | Int8ArrayConstructor | Uint16ArrayConstructor | Int16ArrayConstructor
  | Int32ArrayConstructor | Uint32ArrayConstructor | BigInt64ArrayConstructor | BigUint64ArrayConstructor
  | Float32ArrayConstructor | Float64ArrayConstructor;

export type TypedArray = InstanceType<TypedArrayCtor>;

/** Which InferTensorContents field carries a datatype's typed values. */
export type ContentsField = keyof Pick<
  oip.InferTensorContents,
  'boolContents' | 'intContents' | 'int64Contents' | 'uintContents' | 'uint64Contents' | 'fp32Contents' | 'fp64Contents'
>;

export interface DatatypeInfo {
  /** OIP name, e.g. FP32. */
  readonly oip: string;
  readonly ort: OrtType;
  readonly bytes: number;
  readonly array: TypedArrayCtor;
  /** null: raw contents only (FP16). */
  readonly contents: ContentsField | null;
}

const TABLE: readonly DatatypeInfo[] = [
  { oip: 'BOOL', ort: 'bool', bytes: 1, array: Uint8Array, contents: 'boolContents' },
  { oip: 'UINT8', ort: 'uint8', bytes: 1, array: Uint8Array, contents: 'uintContents' },
  { oip: 'INT8', ort: 'int8', bytes: 1, array: Int8Array, contents: 'intContents' },
  { oip: 'UINT16', ort: 'uint16', bytes: 2, array: Uint16Array, contents: 'uintContents' },
  { oip: 'INT16', ort: 'int16', bytes: 2, array: Int16Array, contents: 'intContents' },
  { oip: 'INT32', ort: 'int32', bytes: 4, array: Int32Array, contents: 'intContents' },
  { oip: 'UINT32', ort: 'uint32', bytes: 4, array: Uint32Array, contents: 'uintContents' },
  { oip: 'INT64', ort: 'int64', bytes: 8, array: BigInt64Array, contents: 'int64Contents' },
  { oip: 'UINT64', ort: 'uint64', bytes: 8, array: BigUint64Array, contents: 'uint64Contents' },
  { oip: 'FP16', ort: 'float16', bytes: 2, array: Uint16Array, contents: null },
  { oip: 'FP32', ort: 'float32', bytes: 4, array: Float32Array, contents: 'fp32Contents' },
  { oip: 'FP64', ort: 'float64', bytes: 8, array: Float64Array, contents: 'fp64Contents' },
];

const byOip = new Map(TABLE.map((d) => [d.oip, d]));
const byOrt = new Map(TABLE.map((d) => [d.ort as string, d]));

/** The datatype named by an OIP datatype string; undefined when not served. */
export function datatype(oipName: string): DatatypeInfo | undefined {
  return byOip.get(oipName);
}

/** The datatype of an ONNX Runtime tensor type; undefined when not served. */
export function datatypeOfOrt(ortType: string): DatatypeInfo | undefined {
  return byOrt.get(ortType);
}

/** Product of the dimensions (1 for a scalar). */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (let i = 0; i < shape.length; i++) n *= shape[i]!;
  return n;
}

/** OIP datatype names, for error messages. */
export const DATATYPES = TABLE.map((d) => d.oip);
