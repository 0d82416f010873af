/**
 * Types and codecs generated from proto/ (see proto/gen.sh). Code uses these,
 * never hand-written twins of the messages.
 */
export * as oip from './gen/inference/grpc_service.js';
/** Triton's ModelConfig messages (inference/model_config.proto), answered by the router's ModelConfig. */
export * as tritonConfig from './gen/inference/model_config.js';
export * as onnx from './gen/onnx/onnx.js';
export { TensorSpec, BatchingPolicy } from './gen/infermesh/v1/common.js';
export {
  VersionRecord,
  TrafficRecord,
  AliasHistory,
  ReplicaRecord,
  ReplicaStats,
  LoadedVersion,
  VersionState,
  ModelEvent,
  ModelEvent_Kind,
  SampleBatch,
  VersionTraffic,
  PredictionSample,
  Canary,
  Shadow,
  ShadowResult,
  ReferenceProfile,
  FeatureProfile,
  ProbeRecord,
  OutcomeBatch,
  Outcome,
  Alert,
  Alert_State,
  Lineage,
  VersionRef,
  GateResult,
  CostModel,
  RetrainRequest,
} from './gen/infermesh/v1/events.js';
export {
  RequestFrame,
  RequestItem,
  ResponseFrame,
  ResponseItem,
  LoadRequest,
  LoadResponse,
  UnloadRequest,
  UnloadResponse,
  StatusRequest,
  StatisticsRequest,
  StatisticsResponse,
  VersionStatistics,
  RuntimeService,
  RuntimeClient,
  type RuntimeServer,
} from './gen/infermesh/v1/runtime.js';
export {
  PushModelRequest,
  PushHeader,
  PushModelResponse,
  ListModelsRequest,
  ListModelsResponse,
  GetModelRequest,
  ModelInfo,
  SetAliasRequest,
  RollbackRequest,
  SetCanaryRequest,
  SetShadowRequest,
  SetModelServingRequest,
  GetHistoryRequest,
  GetHistoryResponse,
  GetReferenceRequest,
  SetProbeRequest,
  OptimizeModelRequest,
  OptimizeModelResponse,
  BenchPoint,
  ComposeModelRequest,
  ComposePartRef,
  SetTagsRequest,
  ArchiveVersionRequest,
  DeleteVersionRequest,
  DeleteVersionResponse,
  ApplyRetentionRequest,
  ApplyRetentionResponse,
  RetainedVersion,
  CollectGarbageRequest,
  CollectGarbageResponse,
  RegistryService,
  RegistryClient,
  type RegistryServer,
} from './gen/infermesh/v1/registry.js';
export {
  GetModelStatsRequest,
  GetModelStatsResponse,
  VersionStats,
  ShadowStats,
  GetSlowRequestsRequest,
  GetSlowRequestsResponse,
  SlowRequest,
  GetDriftRequest,
  GetDriftResponse,
  FeatureDrift,
  RecordOutcomesRequest,
  RecordOutcomesResponse,
  GetEvaluationRequest,
  GetEvaluationResponse,
  VersionEvaluation,
  ListAlertsRequest,
  ListAlertsResponse,
  WatchAlertsRequest,
  CompareVersionsRequest,
  CompareVersionsResponse,
  VersionEstimates,
  MetricEstimate,
  MetricDifference,
  ExportOutcomesRequest,
  ExportOutcomesChunk,
  ExportRow,
  MonitorService,
  MonitorClient,
  type MonitorServer,
} from './gen/infermesh/v1/monitor.js';

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Absolute path of the repository's proto/ folder (for reflection); works from libs/ and from dist/libs/. */
export const PROTO_DIR = [path.resolve(here, '../../proto'), path.resolve(here, '../../../proto')].find((d) =>
  existsSync(path.join(d, 'inference', 'grpc_service.proto')),
)!;
