/**
 * The Open Inference Protocol's REST binding (KServe v2) over the router:
 * JSON infer bodies become one ModelInferRequest; answers carry flat data.
 * The binary-data extension is not served.
 */
import { InvalidArgumentError } from '../../libs/errors/index.js';
import { oip, type TensorSpec } from '../../libs/proto/index.js';
import { elementCount } from '../../libs/tensor/index.js';
import { isObject, kindOf, type Json, type JsonObject, type Out } from './rest-json.js';
import type { ModelRef } from './rest-models.js';
import { datatypeOf, decodeOutputs, encodeLeaves, flatten } from './rest-tensor.js';
import type { Route, RoutingTable } from './routing-table.js';

/**
 * Builds the ModelInferRequest for an OIP REST infer body (`data` nested or
 * flat, row-major). Throws INVALID_ARGUMENT naming the offending field; the
 * replica checks names, datatypes and shapes against the model.
 */
export function oipInferRequest(ref: ModelRef, body: JsonObject): Buffer {
  const id = body.id ?? '';
  if (typeof id !== 'string') throw new InvalidArgumentError('id', `must be a string, got ${kindOf(id)}`);
  const list = body.inputs;
  if (!Array.isArray(list) || list.length === 0) throw new InvalidArgumentError('inputs', `must be a non-empty list of tensors, got ${kindOf(list)}`);
  const inputs: oip.ModelInferRequest_InferInputTensor[] = [];
  const raw: Uint8Array[] = [];
  for (let i = 0; i < list.length; i++) {
    const t = list[i]!;
    const f = `inputs[${i}]`;
    if (!isObject(t)) throw new InvalidArgumentError(f, `must be an object, got ${kindOf(t)}`);
    if (typeof t.name !== 'string' || t.name === '') throw new InvalidArgumentError(`${f}.name`, 'must be a non-empty string');
    const dt = datatypeOf(t.datatype, `${f}.datatype`);
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
      throw new InvalidArgumentError(`${f}.shape`, 'must be a list of non-negative integers');
    }
    const params = t.parameters === undefined ? {} : toParameters(t.parameters, `${f}.parameters`);
    if ('binary_data_size' in params) throw new InvalidArgumentError(`${f}.parameters.binary_data_size`, 'the binary data extension is not served; send "data"');
    if (t.data === undefined) throw new InvalidArgumentError(`${f}.data`, 'missing');
    const { leaves } = flatten(t.data, `${f}.data`);
    const count = elementCount(shape as number[]);
    if (leaves.length !== count) throw new InvalidArgumentError(`${f}.data`, `holds ${leaves.length} values; shape [${shape.join(',')}] needs ${count}`);
    raw.push(encodeLeaves(dt, leaves, `${f}.data`));
    inputs.push({ name: t.name, datatype: dt.oip, shape: shape as number[], parameters: params, contents: undefined });
  }
  const outputs: oip.ModelInferRequest_InferRequestedOutputTensor[] = [];
  if (body.outputs !== undefined) {
    if (!Array.isArray(body.outputs)) throw new InvalidArgumentError('outputs', `must be a list, got ${kindOf(body.outputs)}`);
    body.outputs.forEach((o, j) => {
      if (!isObject(o) || typeof o.name !== 'string' || o.name === '') throw new InvalidArgumentError(`outputs[${j}].name`, 'must be a non-empty string');
      const params = o.parameters === undefined ? {} : toParameters(o.parameters, `outputs[${j}].parameters`);
      // Answers are always JSON: binary_data is accepted and ignored.
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
