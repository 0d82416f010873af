import { fork } from 'node:child_process';
import { onnx, TensorSpec } from '../../libs/proto/index.js';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import { datatypeOfOrt } from '../../libs/tensor/index.js';

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

/**
 * Checks that `bytes` is an ONNX model infermesh can serve: it parses, uses
 * no external data and no custom-op domain, and loads in ONNX Runtime (in a
 * disposable child process). Returns its signature.
 * Throws INVALID_ARGUMENT (field `model`) with the reason otherwise.
 */
export async function validateModel(bytes: Uint8Array, o: ValidateOptions): Promise<ModelSignature> {
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
  const r = await loadInChild(bytes, o.timeoutMs);
  if (!r.ok) throw new InvalidArgumentError('model', `ONNX Runtime cannot load it: ${cleanReason(r.reason)}`);
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

function loadInChild(bytes: Uint8Array, timeoutMs: number): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = fork(new URL('./validate-child.js', import.meta.url), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    });
    let settled = false;
    const done = (r: ChildResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, reason: 'validation timed out' }), timeoutMs);
    child.on('message', (m) => done(m as ChildResult));
    child.on('exit', (code, signal) => done({ ok: false, reason: `validator exited (${signal ?? code})` }));
    child.on('error', () => done({ ok: false, reason: 'validator could not start' }));
    child.send({ bytes });
  });
}
