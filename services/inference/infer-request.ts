import { InvalidArgumentError } from '../../libs/errors/index.js';
import { elementCount, hasTypedContents, rawToTyped, typedContentsToBytes, type DatatypeInfo } from '../../libs/tensor/index.js';
import { oip } from '../../libs/proto/index.js';
import type { ModelSpec } from './model-spec.js';

/** A validated request, ready for the scheduler. Inputs are indexed like the model's inputs. */
export interface DecodedRequest {
  id: string;
  shapes: number[][];
  data: Uint8Array[];
  /** Indices of the model outputs to return, in the order asked. */
  outputs: number[];
  /** Leading dimension shared by every input (1 for models without a batch dimension). */
  rows: number;
}

/**
 * What a replica does with NaN or ±Infinity in floating-point inputs: `reject`
 * (default) answers INVALID_ARGUMENT naming the input, so a broken feature
 * pipeline cannot silently score; `allow` passes them to the model. Every
 * replica of a mesh should run with the same policy (set it in one place:
 * INFERMESH_NONFINITE_INPUTS).
 */
export type NonFinitePolicy = 'reject' | 'allow';

/** Index of the first NaN/±Inf value in a float tensor's bytes, or -1. */
function firstNonFinite(dt: DatatypeInfo, bytes: Uint8Array): number {
  if (dt.oip === 'FP16') {
    for (let i = 0; i + 1 < bytes.length; i += 2) if ((bytes[i + 1]! & 0x7c) === 0x7c) return i / 2;
    return -1;
  }
  const a = rawToTyped(dt, bytes) as Float32Array | Float64Array;
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
  return -1;
}

/**
 * Validates `req` against the model and returns its tensors as bytes.
 * Throws INVALID_ARGUMENT naming the offending field.
 */
export function decodeRequest(spec: ModelSpec, req: oip.ModelInferRequest, nonFinite: NonFinitePolicy = 'reject'): DecodedRequest {
  const n = req.inputs.length;
  if (n === 0) throw new InvalidArgumentError('inputs', 'no inputs');
  const raw = req.rawInputContents;
  if (raw.length > 0 && raw.length !== n) {
    throw new InvalidArgumentError('raw_input_contents', `has ${raw.length} entries for ${n} inputs`);
  }
  const shapes: number[][] = new Array(spec.inputs.length);
  const data: Uint8Array[] = new Array(spec.inputs.length);
  for (let i = 0; i < n; i++) {
    const t = req.inputs[i]!;
    const idx = spec.inputIndex.get(t.name);
    if (idx === undefined) {
      throw new InvalidArgumentError(`inputs[${i}].name`, `unknown input "${t.name}" (model inputs: ${spec.inputs.map((s) => s.name).join(', ')})`);
    }
    if (data[idx] !== undefined) throw new InvalidArgumentError(`inputs[${i}].name`, `input "${t.name}" given twice`);
    const s = spec.inputs[idx]!;
    const dt = spec.inputTypes[idx]!;
    if (t.datatype !== s.datatype) {
      throw new InvalidArgumentError(`inputs[${i}].datatype`, `input "${t.name}" is ${s.datatype}, not ${t.datatype || '(empty)'}`);
    }
    const shape = t.shape;
    let ok = shape.length === s.shape.length;
    for (let d = 0; ok && d < shape.length; d++) {
      const want = s.shape[d]!;
      ok = Number.isInteger(shape[d]) && shape[d]! >= 0 && (want === -1 || shape[d] === want);
    }
    if (!ok) {
      throw new InvalidArgumentError(`inputs[${i}].shape`, `input "${t.name}" has shape [${shape.join(',')}], model expects [${s.shape.join(',')}]`);
    }
    const count = elementCount(shape);
    const typed = hasTypedContents(t.contents);
    let bytes: Uint8Array | null;
    if (raw.length > 0) {
      if (typed) throw new InvalidArgumentError(`inputs[${i}].contents`, 'raw and typed contents given together');
      bytes = raw[i]!;
      if (bytes.byteLength !== count * dt.bytes) {
        throw new InvalidArgumentError(`raw_input_contents[${i}]`, `has ${bytes.byteLength} bytes; shape [${shape.join(',')}] of ${dt.oip} needs ${count * dt.bytes}`);
      }
    } else {
      if (!dt.contents) throw new InvalidArgumentError(`inputs[${i}].contents`, `${dt.oip} needs raw_input_contents`);
      bytes = typedContentsToBytes(dt, t.contents ?? oip.InferTensorContents.create(), count);
      if (!bytes) throw new InvalidArgumentError(`inputs[${i}].contents`, `${dt.contents.replace('Contents', '_contents')} must hold ${count} values for shape [${shape.join(',')}]`);
    }
    if (nonFinite === 'reject' && (dt.oip === 'FP32' || dt.oip === 'FP64' || dt.oip === 'FP16')) {
      const at = firstNonFinite(dt, bytes);
      if (at >= 0) throw new InvalidArgumentError(`inputs[${i}]`, `input "${t.name}" holds NaN or Infinity (element ${at}); this mesh rejects non-finite inputs`);
    }
    shapes[idx] = shape;
    data[idx] = bytes;
  }
  for (let k = 0; k < spec.inputs.length; k++) {
    if (data[k] === undefined) throw new InvalidArgumentError('inputs', `missing input "${spec.inputs[k]!.name}"`);
  }
  let outputs: number[];
  if (req.outputs.length === 0) outputs = spec.outputs.map((_, k) => k);
  else {
    outputs = new Array(req.outputs.length);
    for (let j = 0; j < req.outputs.length; j++) {
      const idx = spec.outputIndex.get(req.outputs[j]!.name);
      if (idx === undefined) {
        throw new InvalidArgumentError(`outputs[${j}].name`, `unknown output "${req.outputs[j]!.name}" (model outputs: ${spec.outputNames.join(', ')})`);
      }
      outputs[j] = idx;
    }
  }
  let rows = 1;
  if (spec.batchable) {
    rows = shapes[0]![0]!;
    for (let k = 1; k < shapes.length; k++) if (shapes[k]![0] !== rows) rows = -1;
  }
  return { id: req.id, shapes, data, outputs, rows };
}
