import * as grpc from '@grpc/grpc-js';
import { call, channelOptions } from '../grpc/index.js';
import { MonitorClient, type VersionStats } from '../proto/index.js';

/** The monitor's query API. */
export class MonitorApi {
  readonly client: MonitorClient;
  constructor(address: string, private readonly timeoutMs = 10_000) {
    this.client = new MonitorClient(address, grpc.credentials.createInsecure(), channelOptions(16 * 1024 * 1024));
  }

  async stats(name = ''): Promise<VersionStats[]> {
    return (await call(this.client.getModelStats, this.client, { name }, { timeoutMs: this.timeoutMs })).versions;
  }

  close(): void {
    this.client.close();
  }
}
