/**
 * Triton's extensions on the router, over gRPC (handlers added to
 * inference.GRPCInferenceService) and REST (answers in Triton's JSON, field
 * names as its protos spell them): ModelConfig, ModelStatistics,
 * RepositoryIndex, RepositoryModelLoad/Unload. See triton-config.ts,
 * triton-stats.ts and triton-repository.ts for what each answers.
 */
import * as grpc from '@grpc/grpc-js';
import { unary } from '../../libs/grpc/index.js';
import { oip, type RegistryClient, tritonConfig } from '../../libs/proto/index.js';
import type { Out } from './rest-json.js';
import { oipModelRef, resolveRoute, signatureOf } from './rest-models.js';
import type { RoutingTable } from './routing-table.js';
import { modelConfig, type AppliedBatching } from './triton-config.js';
import { repositoryIndex, repositoryLoad, repositoryUnload } from './triton-repository.js';
import { askReplica, modelStatistics } from './triton-stats.js';

/**
 * ServerMetadata.extensions: exactly the Triton extensions the router
 * serves (`model_repository`: index and load; unload is refused, see
 * triton-repository.ts). Replicas list none.
 */
export const TRITON_EXTENSIONS: readonly string[] = Object.freeze(['binary_tensor_data', 'model_configuration', 'model_repository', 'statistics']);

export interface TritonDeps {
  table: RoutingTable;
  /** Where RepositoryModelLoad moves aliases and Unload sets the `unloaded` flag; null = no registry configured (both answer UNAVAILABLE). */
  registry: RegistryClient | null;
}

/** How long ModelConfig waits for a replica to say which batching it applies. */
const CONFIG_ASK_MS = 1_000;

/** ModelConfig of `name` at `version` ('' = what the router serves by default, digits or an alias). */
export async function configOf(table: RoutingTable, name: string, version: string, deadlineMs: number): Promise<tritonConfig.ModelConfig> {
  const route = resolveRoute(table, oipModelRef(name, version));
  const rec = signatureOf(route);
  let applied: AppliedBatching | null = null;
  const replica = route.replicas[0];
  if (replica && rec.batchable) {
    const res = await askReplica(replica, rec.name, Math.min(deadlineMs, Date.now() + CONFIG_ASK_MS)).catch(() => null);
    const v = res?.versions.find((x) => x.stats?.name === rec.name && x.stats.version === String(rec.version));
    if (v) applied = { maxBatchSize: v.maxBatchSize, maxQueueDelayMicros: v.maxQueueDelayMicros };
  }
  return modelConfig(table, rec, applied);
}

/** The gRPC handlers of Triton's extensions. */
export function tritonHandlers(d: TritonDeps) {
  return {
    modelConfig: unary<oip.ModelConfigRequest, oip.ModelConfigResponse>(async (req, ctx) => ({ config: await configOf(d.table, req.name, req.version, ctx.deadline) })),
    modelStatistics: unary<oip.ModelStatisticsRequest, oip.ModelStatisticsResponse>(async (req, ctx) => modelStatistics(d.table, req.name, req.version, ctx.deadline)),
    repositoryIndex: unary<oip.RepositoryIndexRequest, oip.RepositoryIndexResponse>(async (req) => repositoryIndex(d.table, req)),
    repositoryModelLoad: unary<oip.RepositoryModelLoadRequest, oip.RepositoryModelLoadResponse>(async (req, ctx) => {
      await repositoryLoad(d.table, d.registry, req, ctx.metadata, ctx.deadline);
      return {};
    }),
    repositoryModelUnload: unary<oip.RepositoryModelUnloadRequest, oip.RepositoryModelUnloadResponse>(async (req, ctx) => {
      await repositoryUnload(d.table, d.registry, req, ctx.metadata, ctx.deadline);
      return {};
    }),
  };
}

// ---- Triton's JSON (its HTTP API): proto field names, enum names, numbers as numbers.

function durationJson(s: oip.StatisticDuration | undefined): Out {
  return { count: s?.count ?? 0, ns: s?.ns ?? 0 };
}

/** GET …/stats: `{"model_stats": [...]}` as Triton's HTTP API answers it. */
export function statisticsJson(res: oip.ModelStatisticsResponse): Out {
  return {
    model_stats: res.modelStats.map((s) => ({
      name: s.name,
      version: s.version,
      last_inference: s.lastInference,
      inference_count: s.inferenceCount,
      execution_count: s.executionCount,
      inference_stats: {
        success: durationJson(s.inferenceStats?.success),
        fail: durationJson(s.inferenceStats?.fail),
        queue: durationJson(s.inferenceStats?.queue),
        compute_input: durationJson(s.inferenceStats?.computeInput),
        compute_infer: durationJson(s.inferenceStats?.computeInfer),
        compute_output: durationJson(s.inferenceStats?.computeOutput),
        cache_hit: durationJson(s.inferenceStats?.cacheHit),
        cache_miss: durationJson(s.inferenceStats?.cacheMiss),
      },
      batch_stats: s.batchStats.map((b) => ({ batch_size: b.batchSize, compute_input: durationJson(b.computeInput), compute_infer: durationJson(b.computeInfer), compute_output: durationJson(b.computeOutput) })),
      memory_usage: [],
      response_stats: {},
    })),
  };
}

/** GET …/config: the ModelConfig as Triton's HTTP API answers it (the fields the mesh fills). */
export function configJson(c: tritonConfig.ModelConfig): Out {
  const vp = c.versionPolicy?.policyChoice;
  const out: { [key: string]: Out } = {
    name: c.name,
    platform: c.platform,
    backend: c.backend,
    version_policy: vp?.$case === 'specific' ? { specific: { versions: vp.value.versions } } : vp?.$case === 'latest' ? { latest: { num_versions: vp.value.numVersions } } : { all: {} },
    max_batch_size: c.maxBatchSize,
    input: c.input.map((i) => ({ name: i.name, data_type: tritonConfig.DataType[i.dataType], format: tritonConfig.ModelInput_Format[i.format], dims: i.dims })),
    output: c.output.map((o) => ({ name: o.name, data_type: tritonConfig.DataType[o.dataType], dims: o.dims })),
    instance_group: c.instanceGroup.map((g) => ({ name: g.name, kind: tritonConfig.ModelInstanceGroup_Kind[g.kind], count: g.count })),
    default_model_filename: c.defaultModelFilename,
    response_cache: { enable: c.responseCache?.enable ?? false },
  };
  const sc = c.schedulingChoice;
  if (sc?.$case === 'dynamicBatching') {
    out.dynamic_batching = {
      preferred_batch_size: sc.value.preferredBatchSize,
      max_queue_delay_microseconds: sc.value.maxQueueDelayMicroseconds,
      priority_levels: sc.value.priorityLevels,
      default_priority_level: sc.value.defaultPriorityLevel,
    };
  }
  return out;
}

/** POST /v2/repository/index: Triton answers a JSON list. */
export function indexJson(res: oip.RepositoryIndexResponse): Out {
  return res.models.map((m) => ({ name: m.name, version: m.version, state: m.state, reason: m.reason }));
}

/** The caller's HTTP `Authorization` as gRPC metadata (RepositoryModelLoad and Unload forward it to the registry). */
export function authorizationOf(header: string | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (header) md.set('authorization', header);
  return md;
}
