import * as grpc from '@grpc/grpc-js';
import { deadlineIn, call } from '../grpc/index.js';
import { ProbeRecord, PushHeader, RegistryClient, type ModelEvent, type ModelInfo, type VersionRecord, type PushModelResponse, type ReferenceProfile } from '../proto/index.js';
import {
  ApplyRetentionRequest,
  CollectGarbageRequest,
  ComposeModelRequest,
  OptimizeModelRequest,
  type ApplyRetentionResponse,
  type CollectGarbageResponse,
  type OptimizeModelResponse,
} from '../proto/index.js';
import { channelSetup, clientOptions, type ClientOptions } from './security.js';

const CHUNK = 1 << 20;

/**
 * The registry's management API. Errors are grpc-js ServiceErrors with the
 * registry's codes; writes answer UNAUTHENTICATED without a token and
 * PERMISSION_DENIED with one that lacks the role, when the registry has a tokens file.
 */
export class RegistryApi {
  readonly client: RegistryClient;
  private readonly timeoutMs: number;
  /**
   * @param options the deadline of each call in ms (default 60 s), or
   * {@link ClientOptions}: `timeoutMs`, `tls` (CA, client certificate), `token` (bearer).
   */
  constructor(address: string, options?: number | ClientOptions) {
    const o = clientOptions(options, 60_000);
    this.timeoutMs = o.timeoutMs;
    const { credentials, options: channel } = channelSetup(o, 16 * 1024 * 1024);
    this.client = new RegistryClient(address, credentials, channel);
  }

  /**
   * Uploads a model in 1 MiB chunks; resolves to the new version's record.
   * With `header.reference` (CSV or JSON-lines rows of inputs, format in
   * `header.referenceFormat`), the rows follow the model and the registry
   * stores their profile for drift; a bad reference fails the push
   * (INVALID_ARGUMENT naming the line, RESOURCE_EXHAUSTED over its cap).
   */
  push(bytes: Uint8Array, header: Partial<PushHeader> & { name: string; reference?: Uint8Array }, metadata = new grpc.Metadata()): Promise<VersionRecord> {
    return new Promise((resolve, reject) => {
      const stream = this.client.pushModel(metadata, { deadline: deadlineIn(this.timeoutMs) }, (err: grpc.ServiceError | null, res?: PushModelResponse) =>
        err ? reject(err) : resolve(res!.version!),
      );
      const { reference: ref, ...fields } = header;
      stream.write({ part: { $case: 'header', value: PushHeader.fromPartial(fields) } });
      for (let off = 0; off < bytes.byteLength; off += CHUNK) stream.write({ part: { $case: 'chunk', value: bytes.subarray(off, off + CHUNK) } });
      if (ref) for (let off = 0; off < ref.byteLength; off += CHUNK) stream.write({ part: { $case: 'reference', value: ref.subarray(off, off + CHUNK) } });
      stream.end();
    });
  }

  /** A version's reference profile. NOT_FOUND for an unknown version or one pushed without a reference. */
  getReference(name: string, version: number): Promise<ReferenceProfile> {
    return call(this.client.getReference, this.client, { name, version }, { timeoutMs: this.timeoutMs });
  }

  async list(): Promise<ModelInfo[]> {
    return (await call(this.client.listModels, this.client, {}, { timeoutMs: this.timeoutMs })).models;
  }

  get(name: string): Promise<ModelInfo> {
    return call(this.client.getModel, this.client, { name }, { timeoutMs: this.timeoutMs });
  }

  /** Points `alias` at `version` (with `expectedVersion`, only if it still points there); `reason` goes into the history. */
  setAlias(name: string, version: number, alias = 'production', expectedVersion = 0, reason = ''): Promise<ModelInfo> {
    return call(this.client.setAlias, this.client, { name, alias, version, expectedVersion, reason }, { timeoutMs: this.timeoutMs });
  }

  /**
   * Points `alias` back at its previous target. Not idempotent: each call steps back once.
   * Throws FAILED_PRECONDITION when the alias has no previous target, NOT_FOUND for an unknown model.
   */
  rollback(name: string, alias = 'production', reason = ''): Promise<ModelInfo> {
    return call(this.client.rollback, this.client, { name, alias, reason }, { timeoutMs: this.timeoutMs });
  }

  /**
   * Sends `weightPercent` (0 < w <= 100) of production traffic to `version`, sticky on
   * `keyHeader` when given. Throws INVALID_ARGUMENT for a bad weight, NOT_FOUND for an unknown version.
   */
  setCanary(name: string, version: number, weightPercent: number, keyHeader = '', reason = ''): Promise<ModelInfo> {
    return call(this.client.setCanary, this.client, { name, version, weightPercent, keyHeader, clear: false, reason }, { timeoutMs: this.timeoutMs });
  }

  /**
   * Removes the model's canary; idempotent. The lifecycle history records the
   * removal as ROLLED_BACK (alias `canary`) with the reason (default: "canary cleared").
   */
  clearCanary(name: string, reason = ''): Promise<ModelInfo> {
    return call(this.client.setCanary, this.client, { name, version: 0, weightPercent: 0, keyHeader: '', clear: true, reason }, { timeoutMs: this.timeoutMs });
  }

  /**
   * Mirrors `percent` (0 < p <= 100) of live requests to `version`; its answers are compared, never returned.
   * Throws INVALID_ARGUMENT for a bad percent, NOT_FOUND for an unknown version.
   */
  setShadow(name: string, version: number, percent = 100, reason = ''): Promise<ModelInfo> {
    return call(this.client.setShadow, this.client, { name, version, percent, clear: false, reason }, { timeoutMs: this.timeoutMs });
  }

  /** Removes the model's shadow; idempotent. The history records ROLLED_BACK (alias `shadow`) with the reason. */
  clearShadow(name: string, reason = ''): Promise<ModelInfo> {
    return call(this.client.setShadow, this.client, { name, version: 0, percent: 0, clear: true, reason }, { timeoutMs: this.timeoutMs });
  }

  /**
   * Stops the model serving (`serving` false: routers answer UNAVAILABLE and report it not ready; Triton's
   * unload) or lets it serve again; a move of `production` clears it too. Needs `promote`. Idempotent.
   */
  setServing(name: string, serving: boolean, reason = ''): Promise<ModelInfo> {
    return call(this.client.setModelServing, this.client, { name, serving, reason }, { timeoutMs: this.timeoutMs });
  }

  /**
   * Stores the model's golden probe (or with `clear`, removes it). INVALID_ARGUMENT
   * for a request that is not an OIP request for this model, no expected values or
   * an interval under 1 s; NOT_FOUND for an unknown model.
   */
  setProbe(probe: Partial<ProbeRecord> & { name: string }, clear = false, reason = ''): Promise<ProbeRecord> {
    return call(this.client.setProbe, this.client, { probe: ProbeRecord.fromPartial(probe), clear, reason }, { timeoutMs: this.timeoutMs });
  }

  /** The model's lifecycle events, oldest first (in the event stream's order). */
  async history(name: string): Promise<ModelEvent[]> {
    return (await call(this.client.getHistory, this.client, { name }, { timeoutMs: this.timeoutMs })).events;
  }

  /**
   * Makes a cheaper version (int8, fp16, graph, prune) held to the accuracy
   * gate; stored unless `dryRun`. FAILED_PRECONDITION when the gate refuses
   * (the numbers in the message), RESOURCE_EXHAUSTED while another runs.
   * `timeoutMs` defaults to 5 minutes (it runs the model many times).
   */
  optimize(req: Partial<OptimizeModelRequest> & { name: string; version: number; method: string }, timeoutMs = 300_000): Promise<OptimizeModelResponse> {
    return call(this.client.optimizeModel, this.client, OptimizeModelRequest.fromPartial(req), { timeoutMs });
  }

  /** Stores a pipeline or ensemble of registered versions as the next version of `req.name`. */
  compose(req: Partial<ComposeModelRequest> & { name: string; mode: string }, timeoutMs = 300_000): Promise<VersionRecord> {
    return call(this.client.composeModel, this.client, ComposeModelRequest.fromPartial(req), { timeoutMs });
  }

  /** Sets and removes tags of a version. */
  setTags(name: string, version: number, set: Record<string, string>, remove: string[] = [], reason = ''): Promise<VersionRecord> {
    return call(this.client.setTags, this.client, { name, version, set, remove, reason }, { timeoutMs: this.timeoutMs });
  }

  /** Archives a version (or with `restore`, brings it back). FAILED_PRECONDITION while an alias, canary or shadow points at it. */
  archive(name: string, version: number, restore = false, reason = ''): Promise<VersionRecord> {
    return call(this.client.archiveVersion, this.client, { name, version, restore, reason }, { timeoutMs: this.timeoutMs });
  }

  /** Deletes a version. FAILED_PRECONDITION while an alias, canary, shadow or derived version depends on it. */
  async deleteVersion(name: string, version: number, reason = ''): Promise<VersionRecord> {
    return (await call(this.client.deleteVersion, this.client, { name, version, reason }, { timeoutMs: this.timeoutMs })).deleted!;
  }

  /** Archives (or deletes) unaliased versions beyond the newest `keepLast`. */
  retain(req: Partial<ApplyRetentionRequest> & { name: string; keepLast: number }): Promise<ApplyRetentionResponse> {
    return call(this.client.applyRetention, this.client, ApplyRetentionRequest.fromPartial(req), { timeoutMs: this.timeoutMs });
  }

  /** Removes unreferenced artifacts older than `minAgeS` (default: the registry's, 1 h). */
  collectGarbage(o: { minAgeS?: number; dryRun?: boolean } = {}): Promise<CollectGarbageResponse> {
    return call(this.client.collectGarbage, this.client, CollectGarbageRequest.fromPartial({ minAgeS: o.minAgeS ?? 0, minAgeSet: o.minAgeS !== undefined, dryRun: o.dryRun ?? false }), { timeoutMs: this.timeoutMs });
  }

  close(): void {
    this.client.close();
  }
}
