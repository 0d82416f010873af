/** The Monitor gRPC service: GetModelStats over the stats store. */
import type { GetModelStatsRequest, GetModelStatsResponse, MonitorServer } from '../../libs/proto/index.js';
import { unary } from '../../libs/grpc/index.js';
import { checkName } from '../../libs/bus/index.js';
import { NotFoundError } from '../../libs/errors/index.js';
import type { StatsStore } from './stats-store.js';

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

/** The grpc-js implementation of infermesh.v1.Monitor. */
export function monitorServer(store: StatsStore): MonitorServer {
  return {
    getModelStats: unary((req: GetModelStatsRequest) => getModelStats(store, req)),
  };
}
