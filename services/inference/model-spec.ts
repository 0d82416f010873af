import { datatype, type DatatypeInfo } from '../../libs/tensor/index.js';
import type { TensorSpec, VersionRecord } from '../../libs/proto/index.js';

/** What the hot path needs to know about one loaded model version, precomputed once. */
export interface ModelSpec {
  readonly key: string;
  readonly name: string;
  readonly version: number;
  readonly versionString: string;
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  readonly inputTypes: readonly DatatypeInfo[];
  readonly outputTypes: readonly DatatypeInfo[];
  readonly inputIndex: ReadonlyMap<string, number>;
  readonly outputIndex: ReadonlyMap<string, number>;
  readonly outputNames: readonly string[];
  readonly batchable: boolean;
  readonly maxBatchSize: number;
  readonly maxQueueDelayMicros: number;
  /** Response cache entries; 0 = no cache. */
  readonly cacheEntries: number;
}

/** The key of a model version in sessions and maps: `name:version`. */
export function versionKey(name: string, version: number): string {
  return `${name}:${version}`;
}

/** Precomputes a ModelSpec from a registry record; `defaultMaxBatch` applies when the record says 0. */
export function specOf(rec: VersionRecord, defaultMaxBatch: number): ModelSpec {
  const dt = (s: TensorSpec) => {
    const d = datatype(s.datatype);
    if (!d) throw new Error(`datatype ${s.datatype} of ${s.name} is not served`);
    return d;
  };
  const maxBatch = rec.batchable ? rec.batching?.maxBatchSize || defaultMaxBatch : 1;
  return {
    key: versionKey(rec.name, rec.version),
    name: rec.name,
    version: rec.version,
    versionString: String(rec.version),
    inputs: rec.inputs,
    outputs: rec.outputs,
    inputTypes: rec.inputs.map(dt),
    outputTypes: rec.outputs.map(dt),
    inputIndex: new Map(rec.inputs.map((s, i) => [s.name, i])),
    outputIndex: new Map(rec.outputs.map((s, i) => [s.name, i])),
    outputNames: rec.outputs.map((s) => s.name),
    batchable: rec.batchable && maxBatch > 1,
    maxBatchSize: Math.max(1, maxBatch),
    maxQueueDelayMicros: rec.batching?.maxQueueDelayMicros ?? 0,
    cacheEntries: rec.cacheEntries,
  };
}
