/**
 * Triton's ModelConfig as the router fills it, from a version record, the
 * replicas' heartbeats and the batching a replica applies: dims without the
 * batch dimension only when the model batches, TYPE_* names, instance groups
 * per device counting workers of the replicas that serve the version.
 */
import { describe, expect, it } from 'vitest';
import { ReplicaRecord, tritonConfig, VersionRecord, VersionState } from '../../libs/proto/index.js';
import type { RoutingTable } from '../../services/router/routing-table.js';
import { modelConfig, tritonDataType } from '../../services/router/triton-config.js';

const batchable = VersionRecord.fromPartial({
  name: 'm',
  version: 2,
  batchable: true,
  batching: { maxBatchSize: 0, maxQueueDelayMicros: 500 },
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 8] }, { name: 'ids', datatype: 'INT64', shape: [-1, 3] }],
  outputs: [{ name: 'y', datatype: 'FP16', shape: [-1, 1] }],
});
const fixed = VersionRecord.fromPartial({ name: 'm', version: 1, batchable: false, inputs: [{ name: 'img', datatype: 'UINT8', shape: [1, 28, 28] }], outputs: [{ name: 'p', datatype: 'FP32', shape: [1, 10] }] });

const replica = (device: string, workers: number, versions: [number, VersionState][], accepting = true) =>
  ReplicaRecord.fromPartial({ device, workers, accepting, versions: versions.map(([version, state]) => ({ name: 'm', version, state })) });

/** What modelConfig reads of the routing table. */
function table(replicas: ReplicaRecord[]): RoutingTable {
  const ready = (v: number) => replicas.filter((r) => r.accepting && r.versions.some((x) => x.version === v && x.state === VersionState.VERSION_STATE_READY));
  return {
    versionsOf: () => [batchable, fixed],
    model: () => ({ byVersion: new Map([1, 2].map((v) => [v, { replicas: ready(v) }])) }),
    replicaEntries: () => replicas.map((rec) => ({ rec })),
  } as unknown as RoutingTable;
}

describe("Triton's ModelConfig from what the mesh knows", () => {
  const t = table([
    replica('cpu', 2, [[2, VersionState.VERSION_STATE_READY], [1, VersionState.VERSION_STATE_READY]]),
    replica('cuda', 1, [[2, VersionState.VERSION_STATE_READY]]),
    replica('cpu', 4, [[2, VersionState.VERSION_STATE_LOADING]]),
    replica('cpu', 8, [[2, VersionState.VERSION_STATE_READY]], false),
  ]);

  it('a batching model: max_batch_size as a replica applies it, dims without the batch dimension, dynamic batching with the queue delay', () => {
    const c = modelConfig(t, batchable, { maxBatchSize: 32, maxQueueDelayMicros: 500 });
    expect(c.maxBatchSize).toBe(32);
    expect(c.input.map((i) => [i.name, tritonConfig.DataType[i.dataType], i.dims])).toEqual([['x', 'TYPE_FP32', [8]], ['ids', 'TYPE_INT64', [3]]]);
    expect(c.output.map((o) => [tritonConfig.DataType[o.dataType], o.dims])).toEqual([['TYPE_FP16', [1]]]);
    expect(c.schedulingChoice?.$case).toBe('dynamicBatching');
    expect(c.schedulingChoice?.value).toMatchObject({ maxQueueDelayMicroseconds: 500, priorityLevels: 2, defaultPriorityLevel: 1 });
    // Ready and accepting replicas only: 2 CPU workers and 1 GPU worker.
    expect(c.instanceGroup.map((g) => [g.name, tritonConfig.ModelInstanceGroup_Kind[g.kind], g.count]).sort()).toEqual([['m_cpu', 'KIND_CPU', 2], ['m_gpu', 'KIND_GPU', 1]]);
    expect(c.versionPolicy?.policyChoice).toEqual({ $case: 'specific', value: { versions: [1, 2] } });
    expect(c).toMatchObject({ name: 'm', platform: 'onnxruntime_onnx', backend: 'onnxruntime' });
  });

  it('without a replica to ask, the batch limit is the record\'s; 0 there means unknown: max_batch_size 0 and full shapes', () => {
    const c = modelConfig(t, batchable, null);
    expect(c.maxBatchSize).toBe(0);
    expect(c.input[0]!.dims).toEqual([-1, 8]);
    expect(c.schedulingChoice).toBeUndefined();
  });

  it('a model that does not batch: max_batch_size 0, dims are the full shape, no dynamic batching', () => {
    const c = modelConfig(t, fixed, { maxBatchSize: 1, maxQueueDelayMicros: 0 });
    expect(c.maxBatchSize).toBe(0);
    expect(c.input.map((i) => [tritonConfig.DataType[i.dataType], i.dims])).toEqual([['TYPE_UINT8', [1, 28, 28]]]);
    expect(c.schedulingChoice).toBeUndefined();
    expect(c.instanceGroup).toEqual([expect.objectContaining({ kind: tritonConfig.ModelInstanceGroup_Kind.KIND_CPU, count: 2 })]);
  });

  it('OIP datatypes map to TYPE_* (BYTES is TYPE_STRING)', () => {
    expect(['BOOL', 'UINT8', 'INT64', 'FP16', 'FP64', 'BYTES', 'BF16', 'NOPE'].map((d) => tritonConfig.DataType[tritonDataType(d)])).toEqual([
      'TYPE_BOOL', 'TYPE_UINT8', 'TYPE_INT64', 'TYPE_FP16', 'TYPE_FP64', 'TYPE_STRING', 'TYPE_BF16', 'TYPE_INVALID',
    ]);
  });
});
