/** The Monitor gRPC service: GetModelStats over the stats store, GetSlowRequests over the slow-request window. */
import type {
  GetModelStatsRequest,
  GetModelStatsResponse,
  GetSlowRequestsRequest,
  GetSlowRequestsResponse,
  MonitorServer,
} from '../../libs/proto/index.js';
import { MonitorService } from '../../libs/proto/index.js';
import { AccessPolicy, unary } from '../../libs/grpc/index.js';
import { checkName } from '../../libs/bus/index.js';
import { NotFoundError } from '../../libs/errors/index.js';
import type { StatsStore } from './stats-store.js';
import { MAX_SLOW_REQUESTS, type SlowRequests } from './slow-requests.js';

/** Requests GetSlowRequests returns when the request leaves `limit` at 0. */
export const DEFAULT_SLOW_LIMIT = 20;

/**
 * Statistics per model version, sorted by name then version, and per shadow
 * (version, production version) pair, sorted by name, version, production
 * version. Empty `name` means every model. Throws INVALID_ARGUMENT for a
 * malformed name and NOT_FOUND for a model with no traffic, shadow results
 * or events.
 */
export async function getModelStats(store: StatsStore, req: GetModelStatsRequest): Promise<GetModelStatsResponse> {
  if (req.name === '') return { versions: store.stats(), shadows: store.shadowStats() };
  const name = checkName(req.name, 'name');
  if (!store.has(name)) throw new NotFoundError(`model ${name} has no traffic, shadow results or events yet`);
  return { versions: store.stats(name), shadows: store.shadowStats(name) };
}

/**
 * The slowest requests of a model within the retention window, slowest
 * first: `limit` of them (0 = 20; more than 100 is taken as 100). An empty
 * list when the model has traffic but none of it is in the window. Throws
 * INVALID_ARGUMENT for a malformed (or empty) name and NOT_FOUND for a model
 * with no traffic yet.
 */
export async function getSlowRequests(store: StatsStore, slow: SlowRequests, req: GetSlowRequestsRequest): Promise<GetSlowRequestsResponse> {
  const name = checkName(req.name, 'name');
  if (!slow.has(name) && !store.hasTraffic(name)) throw new NotFoundError(`model ${name} has no traffic yet`);
  const limit = req.limit === 0 ? DEFAULT_SLOW_LIMIT : Math.min(req.limit, MAX_SLOW_REQUESTS);
  return { requests: slow.slowest(name, limit) };
}

/**
 * The grpc-js implementation of infermesh.v1.Monitor: statistics and slow
 * requests here; drift, outcomes/evaluation and alerts from their modules.
 * RecordOutcomes is the one write: with tokens configured in `access` it
 * needs the `outcomes` role (UNAUTHENTICATED / PERMISSION_DENIED otherwise),
 * and its handler finds the token's subject in CallContext.subject.
 */
export function monitorServer(
  store: StatsStore,
  slow: SlowRequests,
  rest: Pick<MonitorServer, 'getDrift' | 'recordOutcomes' | 'getEvaluation' | 'listAlerts' | 'watchAlerts' | 'compareVersions' | 'exportOutcomes'>,
  access: AccessPolicy = AccessPolicy.open(),
): MonitorServer {
  // Every RPC's role (RecordOutcomes: outcomes) comes from the one table, libs/grpc/management-roles.ts.
  return access.guardService('Monitor', MonitorService, {
    getModelStats: unary((req: GetModelStatsRequest) => getModelStats(store, req)),
    getSlowRequests: unary((req: GetSlowRequestsRequest) => getSlowRequests(store, slow, req)),
    ...rest,
  });
}
