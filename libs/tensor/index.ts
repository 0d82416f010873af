/** OIP tensors <-> ONNX Runtime tensors: datatypes, raw and typed contents. */
export { datatype, datatypeOfOrt, elementCount, DATATYPES, type DatatypeInfo, type OrtType, type TypedArray, type ContentsField } from './datatypes.js';
export { typedContentsToBytes, typedContentsLength, hasTypedContents, rawToTyped, toPlain, toTypedContents, toRaw } from './contents.js';
