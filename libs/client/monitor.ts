import { call } from '../grpc/index.js';
import {
  MonitorClient,
  type Alert,
  type CompareVersionsRequest,
  type CompareVersionsResponse,
  type CostModel,
  type ExportOutcomesChunk,
  type ExportOutcomesRequest,
  type FeatureDrift,
  type GetEvaluationResponse,
  type GetModelStatsResponse,
  type RecordOutcomesResponse,
  type SlowRequest,
  type VersionEvaluation,
  type VersionStats,
} from '../proto/index.js';
import { channelSetup, clientOptions, type ClientOptions } from './security.js';

/** The monitor's query API. */
export class MonitorApi {
  readonly client: MonitorClient;
  private readonly timeoutMs: number;
  /** @param options the deadline of each call in ms (default 10 s), or {@link ClientOptions} (timeout, TLS, bearer token). */
  constructor(address: string, options?: number | ClientOptions) {
    const o = clientOptions(options, 10_000);
    this.timeoutMs = o.timeoutMs;
    const { credentials, options: channel } = channelSetup(o, 16 * 1024 * 1024);
    this.client = new MonitorClient(address, credentials, channel);
  }

  /** Alerts firing now and those resolved recently, firing first. INVALID_ARGUMENT for a bad name. */
  async alerts(name = ''): Promise<Alert[]> {
    return (await call(this.client.listAlerts, this.client, { name }, { timeoutMs: this.timeoutMs })).alerts;
  }

  /**
   * Streams alert state changes (the firing ones first) until `signal` aborts;
   * `onAlert` gets each. Resolves when the stream ends (aborted: quietly).
   */
  watchAlerts(name: string, onAlert: (a: Alert) => void, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const stream = this.client.watchAlerts({ name });
      const abort = (): void => stream.cancel();
      signal.addEventListener('abort', abort, { once: true });
      stream.on('data', onAlert);
      stream.on('error', (err: { code?: number }) => (signal.aborted || err.code === 1 ? resolve() : reject(err)));
      stream.on('end', () => {
        signal.removeEventListener('abort', abort);
        resolve();
      });
    });
  }

  /**
   * Drift of each feature and output column (`output:<name>`) of `name`'s
   * versions (one version when `version` is not 0) against their baseline,
   * drifting and worst first. INVALID_ARGUMENT for a bad name, NOT_FOUND
   * for a model with no sampled predictions yet.
   */
  async drift(name: string, version = 0, bySegment = false): Promise<FeatureDrift[]> {
    return (await call(this.client.getDrift, this.client, { name, version, bySegment }, { timeoutMs: this.timeoutMs })).features;
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

  /**
   * Records ground truth for `name`: (request id, label) pairs, at most
   * 10,000 per call, stored by the monitor in JetStream before it answers.
   * Idempotent per request id (last label wins). Returns how many were stored
   * and how many joined a kept sample now. INVALID_ARGUMENT names the bad
   * field (e.g. `outcomes[3].label`); UNAVAILABLE when the monitor cannot store them.
   */
  recordOutcomes(name: string, pairs: readonly { requestId: string; label: number }[]): Promise<RecordOutcomesResponse> {
    return call(this.client.recordOutcomes, this.client, { name, outcomes: [...pairs] }, { timeoutMs: this.timeoutMs });
  }

  /**
   * Online evaluation of each version of `name` with labelled samples, by
   * version; `threshold` (0 < t < 1, default 0.5) is the binary classifiers'
   * decision threshold. INVALID_ARGUMENT for a bad name or threshold,
   * NOT_FOUND for a model with no kept samples.
   */
  async evaluation(name: string, threshold = 0): Promise<VersionEvaluation[]> {
    return (await this.evaluationReport(name, threshold)).versions;
  }

  /**
   * GetEvaluation in full: rows per version (and per segment value with
   * `bySegment`), the model's segment parameter and the cost model applied
   * (`cost` replaces the model's). Codes as {@link evaluation}.
   */
  evaluationReport(name: string, threshold = 0, o: { bySegment?: boolean; cost?: CostModel } = {}): Promise<GetEvaluationResponse> {
    return call(this.client.getEvaluation, this.client, { name, threshold, bySegment: o.bySegment ?? false, cost: o.cost }, { timeoutMs: this.timeoutMs });
  }

  /**
   * Compares two versions with intervals, differences, p-values and sample
   * sizes (fields left out take the monitor's defaults). INVALID_ARGUMENT,
   * NOT_FOUND, FAILED_PRECONDITION: see monitor.proto.
   */
  compare(req: Partial<CompareVersionsRequest> & { name: string; versionA: number; versionB: number }): Promise<CompareVersionsResponse> {
    const full: CompareVersionsRequest = { threshold: 0, confidence: 0, minDifference: 0, power: 0, resamples: 0, seed: 0, segment: '', cost: undefined, ...req };
    return call(this.client.compareVersions, this.client, full, { timeoutMs: this.timeoutMs });
  }

  /**
   * Streams the joined rows of a model (ExportOutcomes) without a deadline;
   * iterate the chunks as they come (the transport's flow control paces the
   * monitor). Aborting `signal` cancels the call.
   */
  exportOutcomes(req: ExportOutcomesRequest, signal?: AbortSignal): AsyncIterable<ExportOutcomesChunk> {
    const stream = this.client.exportOutcomes(req);
    signal?.addEventListener('abort', () => stream.cancel(), { once: true });
    return stream as AsyncIterable<ExportOutcomesChunk>;
  }

  close(): void {
    this.client.close();
  }
}
