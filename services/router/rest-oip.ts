/**
 * The Open Inference Protocol's REST binding (KServe v2) over the router:
 * JSON infer bodies become one ModelInferRequest; answers carry flat data.
 * Inputs may come as binary tensor data (Triton's extension, triton-binary.ts).
 */
import { InvalidArgumentError } from '../../libs/errors/index.js';
import { oip, type TensorSpec } from '../../libs/proto/index.js';
import { elementCount } from '../../libs/tensor/index.js';
import { isObject, kindOf, type Json, type JsonObject, type Out } from './rest-json.js';
import type { ModelRef } from './rest-models.js';
import { datatypeOf, decodeOutputs, encodeLeaves, flatten } from './rest-tensor.js';
import { decodeBytesElements, encodeBytesElements } from './triton-binary.js';
import type { Route, RoutingTable } from './routing-table.js';

/**
 * Builds the ModelInferRequest for an OIP REST infer body (`data` nested or
 * flat, row-major; BYTES as strings), or with `binary` (the bytes after the
 * JSON: Inference-Header-Content-Length) inputs that name their
 * `binary_data_size` take their bytes from it, in order. Throws
 * INVALID_ARGUMENT naming the offending field; the replica checks names,
 * datatypes and shapes against the model.
 */
export function oipInferRequest(ref: ModelRef, body: JsonObject, binary: Uint8Array | null = null): Buffer {
  const id = body.id ?? '';
  if (typeof id !== 'string') throw new InvalidArgumentError('id', `must be a string, got ${kindOf(id)}`);
  const list = body.inputs;
  if (!Array.isArray(list) || list.length === 0) throw new InvalidArgumentError('inputs', `must be a non-empty list of tensors, got ${kindOf(list)}`);
  const inputs: oip.ModelInferRequest_InferInputTensor[] = [];
  const raw: Uint8Array[] = [];
  let offset = 0;
  for (let i = 0; i < list.length; i++) {
    const t = list[i]!;
    const f = `inputs[${i}]`;
    if (!isObject(t)) throw new InvalidArgumentError(f, `must be an object, got ${kindOf(t)}`);
    if (typeof t.name !== 'string' || t.name === '') throw new InvalidArgumentError(`${f}.name`, 'must be a non-empty string');
    // BYTES (Triton's strings) travel as length-prefixed elements; the replica says whether the model takes them.
    const bytes = t.datatype === 'BYTES';
    const dt = bytes ? null : datatypeOf(t.datatype, `${f}.datatype`);
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
      throw new InvalidArgumentError(`${f}.shape`, 'must be a list of non-negative integers');
    }
    const params = t.parameters === undefined ? {} : toParameters(t.parameters, `${f}.parameters`);
    const count = elementCount(shape as number[]);
    const size = params.binary_data_size;
    if (size !== undefined) {
      const field = `${f}.parameters.binary_data_size`;
      delete params.binary_data_size;
      if (size.parameterChoice?.$case !== 'int64Param' || size.parameterChoice.value < 0) throw new InvalidArgumentError(field, 'must be a whole number of bytes');
      if (t.data !== undefined) throw new InvalidArgumentError(`${f}.data`, 'must be absent when binary_data_size is given');
      const n = size.parameterChoice.value;
      if (!binary) throw new InvalidArgumentError(field, 'binary data needs the Inference-Header-Content-Length header');
      if (offset + n > binary.byteLength) throw new InvalidArgumentError(field, `${n} bytes from byte ${offset} run past the ${binary.byteLength} bytes of binary data`);
      const part = binary.subarray(offset, offset + n);
      offset += n;
      if (dt && n !== count * dt.bytes) throw new InvalidArgumentError(field, `${n} bytes; shape [${shape.join(',')}] of ${dt.oip} needs ${count * dt.bytes}`);
      if (!dt && decodeBytesElements(part)?.length !== count) throw new InvalidArgumentError(field, `the bytes are not ${count} length-prefixed BYTES elements (shape [${shape.join(',')}])`);
      raw.push(part);
    } else {
      if (t.data === undefined) throw new InvalidArgumentError(`${f}.data`, 'missing');
      const { leaves } = flatten(t.data, `${f}.data`);
      if (leaves.length !== count) throw new InvalidArgumentError(`${f}.data`, `holds ${leaves.length} values; shape [${shape.join(',')}] needs ${count}`);
      if (dt) raw.push(encodeLeaves(dt, leaves, `${f}.data`));
      else {
        const bad = leaves.findIndex((v) => typeof v !== 'string');
        if (bad >= 0) throw new InvalidArgumentError(`${f}.data`, `BYTES values must be strings (value ${bad} is not)`);
        raw.push(encodeBytesElements(leaves as string[]));
      }
    }
    inputs.push({ name: t.name, datatype: dt ? dt.oip : 'BYTES', shape: shape as number[], parameters: params, contents: undefined });
  }
  if (binary && offset !== binary.byteLength) {
    throw new InvalidArgumentError('Inference-Header-Content-Length', `${binary.byteLength - offset} bytes of binary data follow the JSON that no input's binary_data_size claims`);
  }
  const outputs: oip.ModelInferRequest_InferRequestedOutputTensor[] = [];
  if (body.outputs !== undefined) {
    if (!Array.isArray(body.outputs)) throw new InvalidArgumentError('outputs', `must be a list, got ${kindOf(body.outputs)}`);
    body.outputs.forEach((o, j) => {
      if (!isObject(o) || typeof o.name !== 'string' || o.name === '') throw new InvalidArgumentError(`outputs[${j}].name`, 'must be a non-empty string');
      const params = o.parameters === undefined ? {} : toParameters(o.parameters, `outputs[${j}].parameters`);
      // Read by the gateway (binaryWants), not the model.
      delete params.binary_data;
      outputs.push({ name: o.name, parameters: params });
    });
  }
  const parameters = body.parameters === undefined ? {} : toParameters(body.parameters, 'parameters');
  delete parameters.binary_data_output;
  const msg: oip.ModelInferRequest = { modelName: ref.name, modelVersion: ref.selector, id, parameters, inputs, outputs, rawInputContents: raw };
  const bytes = oip.ModelInferRequest.encode(msg).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function toParameters(v: Json, field: string): Record<string, oip.InferParameter> {
  if (!isObject(v)) throw new InvalidArgumentError(field, `must be an object, got ${kindOf(v)}`);
  const out: Record<string, oip.InferParameter> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x === 'boolean') out[k] = { parameterChoice: { $case: 'boolParam', value: x } };
    else if (typeof x === 'string') out[k] = { parameterChoice: { $case: 'stringParam', value: x } };
    else if (typeof x === 'number' && Number.isSafeInteger(x)) out[k] = { parameterChoice: { $case: 'int64Param', value: x } };
    else if (typeof x === 'number') out[k] = { parameterChoice: { $case: 'doubleParam', value: x } };
    else throw new InvalidArgumentError(`${field}.${k}`, `must be a boolean, number or string, got ${kindOf(x)}`);
  }
  return out;
}

function fromParameters(p: { [key: string]: oip.InferParameter }): { [key: string]: Out } | undefined {
  const entries = Object.entries(p);
  if (!entries.length) return undefined;
  return Object.fromEntries(entries.map(([k, v]) => [k, v.parameterChoice?.value ?? null]));
}

/** The OIP REST infer answer: `{model_name, model_version, id, outputs: [{name, shape, datatype, data}]}` with flat data. */
export function oipInferResponse(res: oip.ModelInferResponse): Out {
  return {
    model_name: res.modelName,
    model_version: res.modelVersion,
    id: res.id,
    parameters: fromParameters(res.parameters),
    outputs: decodeOutputs(res).map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape, data: o.data })),
  };
}

function tensorMetadata(s: TensorSpec): Out {
  return { name: s.name, datatype: s.datatype, shape: s.shape };
}

/** Model metadata as the gRPC ModelMetadata answers it (dynamic dimensions are -1). */
export function oipMetadata(table: RoutingTable, route: Route): Out {
  const rec = route.record;
  return {
    name: rec.name,
    versions: table.versionsOf(rec.name).map((v) => String(v.version)),
    platform: 'onnxruntime_onnx',
    inputs: rec.inputs.map(tensorMetadata),
    outputs: rec.outputs.map(tensorMetadata),
  };
}
