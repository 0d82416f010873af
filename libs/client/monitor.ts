import * as grpc from '@grpc/grpc-js';
import { call, channelOptions } from '../grpc/index.js';
import { MonitorClient, type GetModelStatsResponse, type SlowRequest, type VersionStats } from '../proto/index.js';

/** The monitor's query API. */
export class MonitorApi {
  readonly client: MonitorClient;
  constructor(address: string, private readonly timeoutMs = 10_000) {
    this.client = new MonitorClient(address, grpc.credentials.createInsecure(), channelOptions(16 * 1024 * 1024));
  }

  async stats(name = ''): Promise<VersionStats[]> {
    return (await this.report(name)).versions;
  }

  /** Per-version stats and shadow comparisons. NOT_FOUND for a named model with no traffic yet. */
  report(name = ''): Promise<GetModelStatsResponse> {
    return call(this.client.getModelStats, this.client, { name }, { timeoutMs: this.timeoutMs });
  }

  /**
   * The `limit` (at most 100) slowest requests of `name` over the monitor's
   * retention window, slowest first, each with its trace id and time
   * breakdown. INVALID_ARGUMENT for a bad name, NOT_FOUND for a model with no traffic yet.
   */
  async slowRequests(name: string, limit = 20): Promise<SlowRequest[]> {
    return (await call(this.client.getSlowRequests, this.client, { name, limit }, { timeoutMs: this.timeoutMs })).requests;
  }

  close(): void {
    this.client.close();
  }
}
