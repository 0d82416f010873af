/**
 * TensorFlow Serving's REST API over the router: `:predict` bodies in row
 * (`instances`) or columnar (`inputs`) format become one OIP
 * ModelInferRequest; model status and metadata come from the routing table.
 * Datatypes and per-row shapes come from the version record, dynamic
 * dimensions from the data.
 */
import { InvalidArgumentError, NotFoundError } from '../../libs/errors/index.js';
import { oip, type TensorSpec, type VersionRecord } from '../../libs/proto/index.js';
import { datatype, elementCount } from '../../libs/tensor/index.js';
import { isObject, kindOf, type Json, type JsonObject, type Out } from './rest-json.js';
import { isReady, resolveRoute, type ModelRef } from './rest-models.js';
import { checkShape, decodeOutputs, encodeLeaves, flatten, nest, type PlainTensor } from './rest-tensor.js';
import type { RoutingTable } from './routing-table.js';

/** A predict call turned into OIP: the serialized request and how to shape its answer. */
export interface TfPredict {
  request: Buffer;
  /** Columnar (`inputs`) answers `outputs`; row format answers `predictions`. */
  columnar: boolean;
  /** Number of instances (row format). */
  rows: number;
}

interface Column {
  spec: TensorSpec;
  shape: number[];
  leaves: Json[];
  /** Field named in errors about this input. */
  field: string;
}

/**
 * Builds the ModelInferRequest for a `:predict` body against the model's
 * signature `rec`. Throws INVALID_ARGUMENT naming the offending field.
 */
export function tfPredictRequest(rec: VersionRecord, ref: ModelRef, body: JsonObject): TfPredict {
  const hasRows = body.instances !== undefined;
  if (hasRows === (body.inputs !== undefined)) {
    throw new InvalidArgumentError(hasRows ? 'inputs' : 'instances', hasRows ? 'give "instances" or "inputs", not both' : 'the body needs "instances" (row format) or "inputs" (columnar format)');
  }
  const columns = hasRows ? rowColumns(rec.inputs, body.instances!) : namedColumns(rec.inputs, body.inputs!);
  const rows = hasRows ? (body.instances as Json[]).length : 0;
  const inputs: oip.ModelInferRequest_InferInputTensor[] = [];
  const raw: Uint8Array[] = [];
  for (const c of columns) {
    checkShape(c.spec, c.shape, c.field);
    const dt = datatype(c.spec.datatype);
    if (!dt) throw new InvalidArgumentError(c.field, `input "${c.spec.name}" has datatype ${c.spec.datatype}, which the REST API does not serve`);
    const rowSize = hasRows ? elementCount(c.shape.slice(1)) : 0;
    raw.push(encodeLeaves(dt, c.leaves, hasRows && rowSize > 0 ? (i) => c.field.replace('[0]', `[${Math.floor(i / rowSize)}]`) : c.field));
    inputs.push({ name: c.spec.name, datatype: c.spec.datatype, shape: c.shape, parameters: {}, contents: undefined });
  }
  const msg: oip.ModelInferRequest = { modelName: ref.name, modelVersion: ref.selector, id: '', parameters: {}, inputs, outputs: [], rawInputContents: raw };
  const bytes = oip.ModelInferRequest.encode(msg).finish();
  return { request: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), columnar: !hasRows, rows };
}

function inputNames(specs: readonly TensorSpec[]): string {
  return specs.map((s) => s.name).join(', ');
}

/** Row format: one entry per instance, each a value (single input) or an object naming every input. */
function rowColumns(specs: readonly TensorSpec[], instances: Json): Column[] {
  if (!Array.isArray(instances)) throw new InvalidArgumentError('instances', `must be a list of instances, got ${kindOf(instances)}`);
  if (instances.length === 0) throw new InvalidArgumentError('instances', 'must hold at least one instance');
  const byName = new Map(specs.map((s, k) => [s.name, k]));
  const cols: Column[] = specs.map((spec) => ({ spec, shape: [], leaves: [], field: '' }));
  const add = (k: number, v: Json, i: number, field: string) => {
    const { shape, leaves } = flatten(v, field);
    const c = cols[k]!;
    if (i === 0) {
      c.shape = [instances.length, ...shape];
      c.field = field;
    } else if (shape.length !== c.shape.length - 1 || shape.some((d, j) => d !== c.shape[j + 1])) {
      throw new InvalidArgumentError(field, `shape [${shape.join(',')}] differs from the first instance's [${c.shape.slice(1).join(',')}]`);
    }
    for (let j = 0; j < leaves.length; j++) c.leaves.push(leaves[j]!);
  };
  for (let i = 0; i < instances.length; i++) {
    const x = instances[i]!;
    if (isObject(x)) {
      for (const key of Object.keys(x)) {
        if (!byName.has(key)) throw new InvalidArgumentError(`instances[${i}].${key}`, `unknown input (model inputs: ${inputNames(specs)})`);
      }
      for (let k = 0; k < specs.length; k++) {
        const name = specs[k]!.name;
        if (x[name] === undefined) throw new InvalidArgumentError(`instances[${i}].${name}`, 'missing input');
        add(k, x[name]!, i, `instances[${i}].${name}`);
      }
    } else {
      if (specs.length !== 1) {
        throw new InvalidArgumentError(`instances[${i}]`, `the model has inputs ${inputNames(specs)}: each instance must be an object naming them`);
      }
      add(0, x, i, `instances[${i}]`);
    }
  }
  return cols;
}

/** Columnar format: the whole tensor (single input) or an object naming every input. */
function namedColumns(specs: readonly TensorSpec[], inputs: Json): Column[] {
  if (!isObject(inputs)) {
    if (specs.length !== 1) throw new InvalidArgumentError('inputs', `the model has inputs ${inputNames(specs)}: "inputs" must be an object naming them`);
    return [{ spec: specs[0]!, field: 'inputs', ...flatten(inputs, 'inputs') }];
  }
  const byName = new Set(specs.map((s) => s.name));
  for (const key of Object.keys(inputs)) {
    if (!byName.has(key)) throw new InvalidArgumentError(`inputs.${key}`, `unknown input (model inputs: ${inputNames(specs)})`);
  }
  return specs.map((spec) => {
    const v = inputs[spec.name];
    if (v === undefined) throw new InvalidArgumentError(`inputs.${spec.name}`, 'missing input');
    return { spec, field: `inputs.${spec.name}`, ...flatten(v, `inputs.${spec.name}`) };
  });
}

/**
 * The `:predict` answer: `{"outputs": …}` for columnar requests (the nested
 * tensor for one output, an object for several), `{"predictions": […]}` for
 * row requests (one entry per instance; an object per instance for several
 * outputs). Row format needs every output to lead with the batch dimension.
 */
export function tfPredictResponse(res: oip.ModelInferResponse, p: TfPredict): Out {
  const outs = decodeOutputs(res);
  if (p.columnar) {
    return { outputs: outs.length === 1 ? (nest(outs[0]!.data, outs[0]!.shape) as Out) : Object.fromEntries(outs.map((o) => [o.name, nest(o.data, o.shape) as Out])) };
  }
  const rowsOf = (o: PlainTensor) => {
    if (o.shape.length === 0 || o.shape[0] !== p.rows) {
      throw new InvalidArgumentError('instances', `output "${o.name}" has shape [${o.shape.join(',')}], not one row per instance; use the columnar "inputs" format`);
    }
    const rowShape = o.shape.slice(1);
    const stride = elementCount(rowShape);
    return Array.from({ length: p.rows }, (_, i) => nest(o.data, rowShape, i * stride) as Out);
  };
  if (outs.length === 1) return { predictions: rowsOf(outs[0]!) };
  const cols = outs.map(rowsOf);
  return { predictions: Array.from({ length: p.rows }, (_, i) => Object.fromEntries(outs.map((o, k) => [o.name, cols[k]![i]!]))) };
}

/**
 * TF Serving's model status: every known version (`/v1/models/<m>`) or the
 * one selected by version or label. AVAILABLE when ready on a replica; END
 * when it will not serve until someone acts (the model unloaded through
 * Triton's repository API, or the version archived), as TF Serving says of
 * a version it unloaded; LOADING otherwise. Throws NOT_FOUND.
 */
export function tfStatus(table: RoutingTable, ref: ModelRef): Out {
  let records: VersionRecord[];
  if (ref.selector === '') {
    if (!table.model(ref.name)) throw new NotFoundError(`model ${ref.name} not found`);
    records = table.versionsOf(ref.name);
  } else records = [resolveRoute(table, ref).record];
  return {
    model_version_status: records.map((r) => ({
      version: String(r.version),
      state: isReady(table, r.name, r.version) ? 'AVAILABLE' : r.archived || table.model(r.name)?.unloaded === true ? 'END' : 'LOADING',
      status: { error_code: 'OK', error_message: '' },
    })),
  };
}

const TF_DTYPE: Record<string, string> = {
  BOOL: 'DT_BOOL',
  UINT8: 'DT_UINT8',
  INT8: 'DT_INT8',
  UINT16: 'DT_UINT16',
  INT16: 'DT_INT16',
  INT32: 'DT_INT32',
  UINT32: 'DT_UINT32',
  INT64: 'DT_INT64',
  UINT64: 'DT_UINT64',
  FP16: 'DT_HALF',
  FP32: 'DT_FLOAT',
  FP64: 'DT_DOUBLE',
};

function tensorInfo(s: TensorSpec): Out {
  return {
    dtype: TF_DTYPE[s.datatype] ?? 'DT_INVALID',
    tensor_shape: { dim: s.shape.map((d) => ({ size: String(d < 0 ? -1 : d), name: '' })), unknown_rank: false },
    name: s.name,
  };
}

/** TF Serving's GetModelMetadata answer: the version's `serving_default` signature. */
export function tfMetadata(rec: VersionRecord): Out {
  return {
    model_spec: { name: rec.name, signature_name: '', version: String(rec.version) },
    metadata: {
      signature_def: {
        signature_def: {
          serving_default: {
            inputs: Object.fromEntries(rec.inputs.map((s) => [s.name, tensorInfo(s)])),
            outputs: Object.fromEntries(rec.outputs.map((s) => [s.name, tensorInfo(s)])),
            method_name: 'tensorflow/serving/predict',
          },
        },
      },
    },
  };
}
