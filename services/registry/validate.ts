import { fork, type ChildProcess } from 'node:child_process';
import { onnx, TensorSpec, type FeatureProfile } from '../../libs/proto/index.js';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import { datatypeOfOrt } from '../../libs/tensor/index.js';
import type { ReferenceFormat } from './reference-parse.js';

/** What a valid model looks like from outside. */
export interface ModelSignature {
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** Every input and output has a dynamic leading (batch) dimension. */
  batchable: boolean;
}

export interface ValidateOptions {
  /** Operator domains a model may use; others are custom ops and refused. */
  allowedDomains: readonly string[];
  timeoutMs: number;
}

export const DEFAULT_DOMAINS = ['', 'ai.onnx', 'ai.onnx.ml', 'com.microsoft'];

/** Reference data sent with a push (`reference` parts). */
export interface ReferenceData {
  data: Uint8Array;
  format: ReferenceFormat;
}

/** A reference's profile as computed at push (the registry adds name, version and time). */
export interface ReferenceBody {
  rows: number;
  features: FeatureProfile[];
  outputs: FeatureProfile[];
  /** A uniform sample of full rows (row-major float64), kept for optimization gates; absent when rows are narrower than the model's inputs. */
  sample?: ReferenceRowSample;
}

/** Rows of a reference sample: `rows` × `width` float64 values, row-major. */
export interface ReferenceRowSample {
  rows: number;
  width: number;
  values: Float64Array;
}

/** What the parent asks the validation child to profile once the model has loaded. */
export interface ChildReferenceRequest {
  data: Uint8Array;
  format: ReferenceFormat;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  batchable: boolean;
}
export type ChildReferenceResult = ({ ok: true } & ReferenceBody) | { ok: false; field: string; reason: string; runtime?: boolean };

/**
 * Checks that `bytes` is an ONNX model infermesh can serve: it parses, uses
 * no external data and no custom-op domain, and loads in ONNX Runtime (in a
 * disposable child process). Returns its signature and, when `reference`
 * data is given, its profile: the rows are parsed and checked against the
 * model's inputs and run through the model in the same child (see
 * validate-child.ts). Throws INVALID_ARGUMENT naming the field (`model`,
 * `reference`) with the reason otherwise.
 */
export async function validateModel(bytes: Uint8Array, o: ValidateOptions, reference?: ReferenceData): Promise<ModelSignature & { reference?: ReferenceBody }> {
  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch {
    throw new InvalidArgumentError('model', 'not an ONNX model (protobuf parse failed)');
  }
  if (!model.graph || model.graph.node.length === 0 || model.opsetImport.length === 0) {
    throw new InvalidArgumentError('model', 'not an ONNX model (no graph, nodes or opset)');
  }
  for (const op of model.opsetImport) {
    if (!o.allowedDomains.includes(op.domain)) throw new InvalidArgumentError('model', `operator domain "${op.domain}" is not allowed`);
  }
  for (const node of model.graph.node) {
    if (!o.allowedDomains.includes(node.domain)) throw new InvalidArgumentError('model', `operator domain "${node.domain}" is not allowed`);
  }
  for (const t of model.graph.initializer) {
    if (t.dataLocation === onnx.TensorProto_DataLocation.EXTERNAL || t.externalData.length > 0) {
      throw new InvalidArgumentError('model', `initializer "${t.name}" uses external data, which is not accepted`);
    }
  }
  const child = new ValidatorChild(o.timeoutMs);
  try {
    const r = await child.ask<ChildResult>({ bytes }, 'validation timed out', (why) => ({ ok: false, reason: why }));
    if (!r.ok) throw new InvalidArgumentError('model', `ONNX Runtime cannot load it: ${cleanReason(r.reason)}`);
    const sig = signatureOf(r);
    if (!reference) return sig;
    const req: ChildReferenceRequest = { data: reference.data, format: reference.format, inputs: sig.inputs, outputs: sig.outputs, batchable: sig.batchable };
    const p = await child.ask<ChildReferenceResult>({ reference: req }, 'profiling the reference timed out', (why) => ({ ok: false, field: 'reference', reason: why, runtime: true }));
    if (!p.ok) throw new InvalidArgumentError(p.field, p.runtime ? cleanReason(p.reason) : p.reason);
    return { ...sig, reference: { rows: p.rows, features: p.features, outputs: p.outputs, ...(p.sample ? { sample: p.sample } : {}) } };
  } finally {
    child.kill();
  }
}

function signatureOf(r: { inputs: ChildSpec[]; outputs: ChildSpec[] }): ModelSignature {
  const toSpec = (v: ChildSpec, field: string): TensorSpec => {
    const dt = v.isTensor ? datatypeOfOrt(v.type) : undefined;
    if (!dt) throw new InvalidArgumentError('model', `${field} "${v.name}" has a type infermesh does not serve (${v.type || 'non-tensor'})`);
    return { name: v.name, datatype: dt.oip, shape: v.shape.map((d) => (typeof d === 'number' && d > 0 ? d : -1)) };
  };
  const inputs = r.inputs.map((v) => toSpec(v, 'input'));
  const outputs = r.outputs.map((v) => toSpec(v, 'output'));
  const batchable = [...inputs, ...outputs].every((s) => s.shape.length > 0 && s.shape[0] === -1);
  return { inputs, outputs, batchable };
}

interface ChildSpec {
  name: string;
  type: string;
  shape: (number | string)[];
  isTensor: boolean;
}
type ChildResult = { ok: true; inputs: ChildSpec[]; outputs: ChildSpec[] } | { ok: false; reason: string };

/** ONNX Runtime's message, without file paths or stack frames. */
function cleanReason(reason: string): string {
  return reason
    .replace(/\/[^\s:'"]+/g, '<path>')
    .split('\n')[0]!
    .slice(0, 300);
}

/**
 * The validation child: one question at a time, all within one time limit
 * counted from its start. An answer that never comes (timeout, crash) is
 * turned into a refusal by `failed`.
 */
class ValidatorChild {
  private readonly child: ChildProcess;
  private readonly deadline: number;
  private exited: string | null = null;
  private pending: ((m: unknown) => void) | null = null;

  constructor(timeoutMs: number) {
    this.deadline = Date.now() + timeoutMs;
    this.child = fork(new URL('./validate-child.js', import.meta.url), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    });
    this.child.on('message', (m) => {
      const p = this.pending;
      this.pending = null;
      p?.(m);
    });
    this.child.on('exit', (code, signal) => this.end(`validator exited (${signal ?? code})`));
    this.child.on('error', () => this.end('validator could not start'));
  }

  ask<T>(msg: unknown, timeoutReason: string, failed: (why: string) => T): Promise<T> {
    if (this.exited) return Promise.resolve(failed(this.exited));
    return new Promise<T>((resolve) => {
      const timer = setTimeout(() => {
        this.pending = null;
        resolve(failed(timeoutReason));
      }, Math.max(0, this.deadline - Date.now()));
      this.pending = (m) => {
        clearTimeout(timer);
        resolve(m === null ? failed(this.exited ?? 'validator exited') : (m as T));
      };
      this.child.send(msg as object);
    });
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }

  private end(why: string): void {
    this.exited ??= why;
    const p = this.pending;
    this.pending = null;
    p?.(null);
  }
}
