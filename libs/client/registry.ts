import * as grpc from '@grpc/grpc-js';
import { channelOptions, deadlineIn, call } from '../grpc/index.js';
import { PushHeader, RegistryClient, type ModelInfo, type VersionRecord, type PushModelResponse } from '../proto/index.js';

const CHUNK = 1 << 20;

/** The registry's management API. Errors are grpc-js ServiceErrors with the registry's codes. */
export class RegistryApi {
  readonly client: RegistryClient;
  constructor(address: string, private readonly timeoutMs = 60_000) {
    this.client = new RegistryClient(address, grpc.credentials.createInsecure(), channelOptions(16 * 1024 * 1024));
  }

  /** Uploads a model in 1 MiB chunks; resolves to the new version's record. */
  push(bytes: Uint8Array, header: Partial<PushHeader> & { name: string }, metadata = new grpc.Metadata()): Promise<VersionRecord> {
    return new Promise((resolve, reject) => {
      const stream = this.client.pushModel(metadata, { deadline: deadlineIn(this.timeoutMs) }, (err: grpc.ServiceError | null, res?: PushModelResponse) =>
        err ? reject(err) : resolve(res!.version!),
      );
      stream.write({ part: { $case: 'header', value: PushHeader.fromPartial(header) } });
      for (let off = 0; off < bytes.byteLength; off += CHUNK) stream.write({ part: { $case: 'chunk', value: bytes.subarray(off, off + CHUNK) } });
      stream.end();
    });
  }

  async list(): Promise<ModelInfo[]> {
    return (await call(this.client.listModels, this.client, {}, { timeoutMs: this.timeoutMs })).models;
  }

  get(name: string): Promise<ModelInfo> {
    return call(this.client.getModel, this.client, { name }, { timeoutMs: this.timeoutMs });
  }

  setAlias(name: string, version: number, alias = 'production', expectedVersion = 0): Promise<ModelInfo> {
    return call(this.client.setAlias, this.client, { name, alias, version, expectedVersion }, { timeoutMs: this.timeoutMs });
  }

  close(): void {
    this.client.close();
  }
}
