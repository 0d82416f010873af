/**
 * Triton's ModelConfig for a model version, filled from what the mesh knows
 * (the registry's version record, the replicas' heartbeats and the batching
 * a replica applies): platform and backend ONNX Runtime; max_batch_size and
 * dims without the batch dimension when the model batches (dims are the full
 * shape and max_batch_size 0 when it does not); TYPE_* data types;
 * dynamic_batching (max queue delay; two priority levels: real-time and bulk);
 * version_policy `specific` naming the versions ready on a replica now;
 * instance_group per device kind, counting the workers of the replicas that
 * serve the version (no replica ids); response_cache when the version caches.
 */
import { tritonConfig, VersionState, type TensorSpec, type VersionRecord } from '../../libs/proto/index.js';
import type { RoutingTable } from './routing-table.js';

/** What a replica applies to the version (Runtime.Statistics), when one answered. */
export interface AppliedBatching {
  maxBatchSize: number;
  maxQueueDelayMicros: number;
}

/** TYPE_* of an OIP datatype (BYTES is Triton's TYPE_STRING). */
export function tritonDataType(datatype: string): tritonConfig.DataType {
  if (datatype === 'BYTES') return tritonConfig.DataType.TYPE_STRING;
  const t = (tritonConfig.DataType as unknown as Record<string, number>)[`TYPE_${datatype}`];
  return t === undefined ? tritonConfig.DataType.TYPE_INVALID : t;
}

/**
 * The ModelConfig of `rec`. `applied`: the batching a replica serving it
 * applies (the registry's record says 0 for "the replica's default"); without
 * it the record's own value is used.
 */
export function modelConfig(table: RoutingTable, rec: VersionRecord, applied: AppliedBatching | null): tritonConfig.ModelConfig {
  const maxBatch = rec.batchable ? (applied?.maxBatchSize ?? rec.batching?.maxBatchSize ?? 0) : 0;
  // Triton's max_batch_size > 0 means "the first dimension is the batch, not listed in dims".
  const batching = maxBatch > 1;
  const dims = (s: TensorSpec) => (batching ? s.shape.slice(1) : s.shape);
  const delay = applied?.maxQueueDelayMicros ?? rec.batching?.maxQueueDelayMicros ?? 0;
  const ready = table
    .versionsOf(rec.name)
    .filter((v) => (table.model(rec.name)?.byVersion.get(v.version)?.replicas.length ?? 0) > 0)
    .map((v) => v.version)
    .sort((a, b) => a - b);
  const config = tritonConfig.ModelConfig.fromPartial({
    name: rec.name,
    platform: 'onnxruntime_onnx',
    backend: 'onnxruntime',
    versionPolicy: { policyChoice: { $case: 'specific', value: { versions: ready } } },
    maxBatchSize: batching ? maxBatch : 0,
    input: rec.inputs.map((s) => ({ name: s.name, dataType: tritonDataType(s.datatype), format: tritonConfig.ModelInput_Format.FORMAT_NONE, dims: dims(s) })),
    output: rec.outputs.map((s) => ({ name: s.name, dataType: tritonDataType(s.datatype), dims: dims(s) })),
    instanceGroup: instanceGroups(table, rec),
    defaultModelFilename: 'model.onnx',
    responseCache: { enable: rec.cacheEntries > 0 },
  });
  if (batching) {
    config.schedulingChoice = {
      $case: 'dynamicBatching',
      value: tritonConfig.ModelDynamicBatching.fromPartial({ maxQueueDelayMicroseconds: delay, priorityLevels: 2, defaultPriorityLevel: 1 }),
    };
  }
  return config;
}

/** One group per device kind over the replicas on which the version is ready: its count is their workers. */
function instanceGroups(table: RoutingTable, rec: VersionRecord): tritonConfig.ModelInstanceGroup[] {
  const counts = new Map<tritonConfig.ModelInstanceGroup_Kind, number>();
  for (const { rec: r } of table.replicaEntries()) {
    if (!r.accepting || !r.versions.some((v) => v.name === rec.name && v.version === rec.version && v.state === VersionState.VERSION_STATE_READY)) continue;
    const kind = r.device === 'cuda' ? tritonConfig.ModelInstanceGroup_Kind.KIND_GPU : tritonConfig.ModelInstanceGroup_Kind.KIND_CPU;
    counts.set(kind, (counts.get(kind) ?? 0) + Math.max(1, r.workers));
  }
  return [...counts].map(([kind, count]) =>
    tritonConfig.ModelInstanceGroup.fromPartial({ name: `${rec.name}_${kind === tritonConfig.ModelInstanceGroup_Kind.KIND_GPU ? 'gpu' : 'cpu'}`, kind, count }),
  );
}
