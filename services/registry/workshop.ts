/**
 * The parent side of the workshop child (workshop-child.ts): one
 * optimization or composition at a time per registry, each in a fresh child
 * process with a time limit, so ONNX Runtime's work never runs on the
 * registry's event loop and a crash costs only the child.
 */
import { fork } from 'node:child_process';
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError } from '../../libs/errors/index.js';
import type { TensorSpec } from '../../libs/proto/index.js';
import type { ReferenceRowSample } from './validate.js';

export type OptimizeMethod = 'graph' | 'fp16' | 'int8' | 'prune';

export interface ChildOptimizeRequest {
  bytes: Uint8Array;
  method: OptimizeMethod;
  sparsity: number;
  level: 'basic' | 'extended';
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  batchable: boolean;
  threshold: number;
  /** The version's reference sample, or `data` (one of them). */
  sample?: ReferenceRowSample;
  data?: { bytes: Uint8Array; format: 'csv' | 'jsonl' };
  skipBench: boolean;
  /** Measuring time per model and batch size. */
  benchMs: number;
}

export interface ChildGate {
  rows: number;
  maxAbsDiff: number;
  meanAbsDiff: number;
  agreement: number;
  decision: string;
  metric?: { name: string; original: number; candidate: number };
}

export interface ChildBenchPoint {
  batch: number;
  runs: number;
  p50Ms: number;
  p99Ms: number;
  rowsPerS: number;
}

export type ChildOptimizeResult =
  | {
      ok: true;
      bytes: Uint8Array;
      gate: ChildGate;
      originalBench: ChildBenchPoint[];
      candidateBench: ChildBenchPoint[];
      originalGzip: number;
      candidateGzip: number;
      notes: string[];
    }
  | { ok: false; field: string; reason: string; unfit?: boolean };

export type ComposeCombine = { kind: 'mean' } | { kind: 'max' } | { kind: 'weighted'; weights: number[] } | { kind: 'vote'; threshold: number };

export interface ChildComposeRequest {
  mode: 'pipeline' | 'ensemble';
  parts: { label: string; bytes: Uint8Array }[];
  combine: ComposeCombine;
  /** Pipeline: per step (index), input → previous output. */
  maps: (Record<string, string> | undefined)[];
}

type ChildComposeResult = { ok: true; bytes: Uint8Array } | { ok: false; field: string; reason: string };

/** One job at a time; a second caller is told to retry (RESOURCE_EXHAUSTED) rather than queued behind minutes of work. */
export class Workshop {
  private busy = false;

  constructor(private readonly timeoutMs: number) {}

  /** Optimizes and gates; throws INVALID_ARGUMENT / FAILED_PRECONDITION (method cannot apply) / DEADLINE_EXCEEDED. */
  async optimize(req: ChildOptimizeRequest): Promise<Extract<ChildOptimizeResult, { ok: true }>> {
    const r = await this.run<ChildOptimizeResult>({ optimize: req });
    if (!r.ok) {
      if (r.unfit) throw new FailedPreconditionError(r.reason.slice(0, 400));
      throw new InvalidArgumentError(r.field || 'model', cleanReason(r.reason));
    }
    return r;
  }

  /** Composes; throws INVALID_ARGUMENT naming the part that does not fit. */
  async compose(req: ChildComposeRequest): Promise<Uint8Array> {
    const r = await this.run<ChildComposeResult>({ compose: req });
    if (!r.ok) throw new InvalidArgumentError(r.field || 'parts', cleanReason(r.reason));
    return r.bytes;
  }

  private async run<T>(msg: object): Promise<T> {
    if (this.busy) throw new ResourceExhaustedError('another optimization or composition is running on this registry; retry when it is done');
    this.busy = true;
    try {
      return await askChild<T>(msg, this.timeoutMs);
    } finally {
      this.busy = false;
    }
  }
}

function askChild<T>(msg: object, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const child = fork(new URL('./workshop-child.js', import.meta.url), [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
    const done = (fn: () => void) => {
      clearTimeout(timer);
      child.removeAllListeners();
      child.kill('SIGKILL');
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new DeadlineExceededError(`the work ran past the registry's limit of ${timeoutMs} ms`))), timeoutMs);
    child.once('message', (m) => done(() => resolve(m as T)));
    child.once('exit', (code, signal) => done(() => reject(new InvalidArgumentError('model', `ONNX Runtime's process ended (${signal ?? code}) while working on it`))));
    child.once('error', () => done(() => reject(new InvalidArgumentError('model', 'the work process could not start'))));
    child.send(msg);
  });
}

/** ONNX Runtime's message without file paths, one line. */
function cleanReason(reason: string): string {
  return reason
    .replace(/\/[^\s:'"]+/g, '<path>')
    .split('\n')[0]!
    .slice(0, 400);
}
