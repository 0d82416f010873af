/**
 * The replica's one request: what every front door (the raw HTTP/2
 * ModelInfer path, grpc-js's ModelInfer handler, the router's Runtime
 * stream) turns its call into, with `inferRequest`, the one constructor.
 * The scheduler admits and runs it and answers it once through `answer`.
 */
import type { SpanContext } from '@opentelemetry/api';
import { checkName } from '../../libs/bus/index.js';
import { deadlineAfter, parsePriority } from '../../libs/call-meta/index.js';
import { InvalidArgumentError, MeshError, NotFoundError, UnavailableError } from '../../libs/errors/index.js';
import { elementCount, hasTypedContents, rawToTyped, typedContentsToBytes, type DatatypeInfo } from '../../libs/tensor/index.js';
import { oip, VersionState } from '../../libs/proto/index.js';
import { isSampled, parseTraceparent } from '../../libs/telemetry/index.js';
import type { ModelSpec } from './model-spec.js';

/**
 * The one way a request is answered, exactly once: the encoded
 * ModelInferResponse, or a typed error (its gRPC status is made at the door,
 * by libs/errors' one mapping). Times are microseconds spent queued and in
 * the model.
 */
export type Answer = (err: MeshError | null, response: Uint8Array | null, queueMicros: number, computeMicros: number) => void;

/** A request admitted to a replica. Times are `performance.now()` milliseconds (one monotonic clock, one unit). */
export interface InferRequest {
  readonly spec: ModelSpec;
  readonly req: DecodedRequest;
  readonly enqueuedAt: number;
  /** After it the answer is useless: refused early, expired in the queue, never run late. */
  readonly deadline: number;
  /** 0 = real-time (default), higher = bulk: runs only when no real-time work waits. */
  readonly priority: number;
  /** The caller's span when the request is sampled: the replica adds its spans under it. */
  readonly trace: SpanContext | null;
  readonly answer: Answer;
  /** The scheduler's: set once the request is in a batch that runs. */
  started: boolean;
  /** The scheduler's: waiting in a queue now (only then can it be cancelled). */
  queued: boolean;
  /** The scheduler's: the caller gave up before it started (answered CANCELLED, never run). */
  cancelled: boolean;
  /** The scheduler's: response-cache key, when the version caches. */
  cacheKey: string | null;
}

/** What a front door read off the wire, nothing interpreted yet. */
export interface Arrival {
  /** The serialized ModelInferRequest. */
  bytes: Uint8Array;
  /** Model and version the router already resolved (Runtime stream); absent for direct calls, which name them in the request. */
  route?: { model: string; version: number };
  /** Milliseconds the caller allows (Infinity: no deadline given). */
  remainingMs: number;
  /** `x-infermesh-priority` as sent, or the stream's field. */
  priority: string | Buffer | number | undefined;
  traceparent: string | Buffer | undefined;
}

/** What the constructor needs from the replica. */
export interface RequestContext {
  manager: {
    lookup(name: string, version: number): { spec: ModelSpec; state: VersionState } | undefined;
    resolve(name: string, version: string): { spec: ModelSpec; state: VersionState } | undefined;
  };
  /** False while draining: new requests are refused UNAVAILABLE. */
  accepting(): boolean;
  /** The longest deadline a request gets, and the one it gets when it names none. */
  defaultTimeoutMs: number;
  nonFinite: NonFinitePolicy;
}

/**
 * The one constructor of a replica's request, from any front door. Throws a
 * MeshError, before anything is queued: UNAVAILABLE while draining or for a
 * version the router named that is not ready here; INVALID_ARGUMENT for
 * bytes that are not a ModelInferRequest, a bad priority, a bad name or
 * inputs that do not fit the model; NOT_FOUND / UNAVAILABLE for a direct
 * call's unknown / unready model.
 */
export function inferRequest(ctx: RequestContext, a: Arrival, answer: Answer): InferRequest {
  if (!ctx.accepting()) throw new UnavailableError('replica is draining');
  const priority = parsePriority(a.priority);
  let msg: oip.ModelInferRequest;
  try {
    msg = oip.ModelInferRequest.decode(a.bytes);
  } catch (err) {
    throw new InvalidArgumentError('request', 'malformed ModelInferRequest', { cause: err });
  }
  let entry;
  if (a.route) {
    entry = ctx.manager.lookup(a.route.model, a.route.version);
    if (!entry || entry.state !== VersionState.VERSION_STATE_READY) throw new UnavailableError(`model ${a.route.model} version ${a.route.version} is not ready on this replica`);
  } else {
    checkName(msg.modelName, 'model_name');
    entry = ctx.manager.resolve(msg.modelName, msg.modelVersion);
    if (!entry || !entry.spec) throw new NotFoundError(msg.modelVersion ? `model ${msg.modelName} version ${msg.modelVersion} not found` : `model ${msg.modelName} not found`);
    if (entry.state !== VersionState.VERSION_STATE_READY) throw new UnavailableError(`model ${msg.modelName} is not ready`);
  }
  let req: DecodedRequest;
  try {
    req = decodeRequest(entry.spec, msg, ctx.nonFinite);
  } catch (err) {
    if (err instanceof MeshError) throw err;
    throw new InvalidArgumentError('request', 'inputs cannot be read', { cause: err });
  }
  const now = performance.now();
  return {
    spec: entry.spec,
    req,
    enqueuedAt: now,
    deadline: deadlineAfter(a.remainingMs, ctx.defaultTimeoutMs, now),
    priority,
    trace: a.traceparent ? sampledParent(a.traceparent) : null,
    answer,
    started: false,
    queued: false,
    cancelled: false,
    cacheKey: null,
  };
}

/** The caller's span context when its `traceparent` is sampled, else null (no spans here either). */
function sampledParent(traceparent: string | Buffer): SpanContext | null {
  const c = parseTraceparent(String(traceparent));
  return isSampled(c) ? c : null;
}

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
