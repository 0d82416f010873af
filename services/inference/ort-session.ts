/**
 * One ONNX Runtime session, run synchronously. onnxruntime-node's public
 * `session.run()` wraps the same native call in a setImmediate and a promise
 * and re-wraps every output (onnxruntime #19611): for a model that runs in
 * 5 µs that wrapping costs more than the run. This calls the native session
 * of onnxruntime-node 1.30 (`dist/binding.js`) directly; its inputs and
 * outputs are the package's own Tensor objects. Used by the worker threads and,
 * for tiny models, on the event loop (see Scheduler).
 */
import { createRequire } from 'node:module';
import type * as ortTypes from 'onnxruntime-node';
import { datatypeOfOrt, type OrtType } from '../../libs/tensor/index.js';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node') as typeof ortTypes;

interface NativeSession {
  loadModel(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, options: object): void;
  run(feeds: Record<string, ortTypes.Tensor>, fetches: Record<string, null>, options: object): Record<string, ortTypes.Tensor>;
  dispose(): void;
  readonly inputMetadata: { name: string }[];
  readonly outputMetadata: { name: string }[];
}
const native = require('onnxruntime-node/dist/binding.js') as { binding: { InferenceSession: new () => NativeSession }; initOrt: () => void };

export interface SessionOptions {
  intraOpThreads: number;
  /** ONNX Runtime execution provider name: cpu or cuda. */
  provider: string;
}

/** A tensor as the hot path hands it around: type, dims and its bytes. */
export interface RunTensor {
  type: OrtType;
  dims: number[];
  data: Uint8Array;
}

const NO_OPTIONS = {};

export class OrtSession {
  private readonly s: NativeSession;
  private readonly inputNames: string[];
  private readonly outputNames: string[];
  private readonly fetches: Record<string, null>;

  /** Loads `bytes` (blocks the calling thread for the load). Throws ONNX Runtime's message. */
  constructor(bytes: Uint8Array, o: SessionOptions) {
    native.initOrt();
    this.s = new native.binding.InferenceSession();
    this.s.loadModel(bytes.buffer, bytes.byteOffset, bytes.byteLength, {
      intraOpNumThreads: o.intraOpThreads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      executionProviders: [o.provider],
    });
    this.inputNames = this.s.inputMetadata.map((m) => m.name);
    this.outputNames = this.s.outputMetadata.map((m) => m.name);
    this.fetches = Object.fromEntries(this.outputNames.map((n) => [n, null]));
  }

  /**
   * Runs the model on inputs given in the session's input order and returns
   * every output in its output order. Output bytes are views of the result
   * tensors (valid until the next run's results are dropped: copy to keep).
   */
  run(inputs: readonly RunTensor[]): RunTensor[] {
    const feeds: Record<string, ortTypes.Tensor> = {};
    for (let k = 0; k < inputs.length; k++) {
      const t = inputs[k]!;
      feeds[this.inputNames[k]!] = new ort.Tensor(t.type, typedView(t.type, t.data), t.dims);
    }
    const res = this.s.run(feeds, this.fetches, NO_OPTIONS);
    const out: RunTensor[] = new Array(this.outputNames.length);
    for (let k = 0; k < out.length; k++) {
      const t = res[this.outputNames[k]!]!;
      const d = t.data as unknown as ArrayBufferView;
      out[k] = { type: t.type as OrtType, dims: t.dims as number[], data: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) };
    }
    return out;
  }

  release(): void {
    this.s.dispose();
  }
}

/** The typed array ONNX Runtime expects over `bytes` (copied once when `bytes` is not aligned for the type). */
function typedView(type: OrtType, bytes: Uint8Array): ortTypes.Tensor.DataType {
  const dt = datatypeOfOrt(type)!;
  // A copy (a Buffer's slice() would be a view again).
  if (dt.bytes > 1 && bytes.byteOffset % dt.bytes !== 0) bytes = new Uint8Array(bytes);
  return new dt.array(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / dt.bytes) as ortTypes.Tensor.DataType;
}
