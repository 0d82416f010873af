/**
 * The monitor: consumes the routers' sample batches and the lifecycle events
 * from NATS, keeps statistics per model version and the slowest requests per
 * model, and serves them over gRPC (infermesh.v1.Monitor, health, reflection)
 * and Prometheus /metrics (OpenMetrics, with trace exemplars).
 *
 * Its state comes from JetStream: at start it replays the samples, outcomes,
 * events and alerts streams and the models bucket, and only then evaluates
 * alerts and canaries, so a restarted monitor (even after kill -9) has the
 * same drift windows, serving windows, evaluation and firing alerts.
 */
import type { Server } from '@grpc/grpc-js';
import type { NatsConnection } from 'nats';
import { MonitorService } from '../../libs/proto/index.js';
import { AccessPolicy, addHealthAndReflection, createGrpcServer, listen, peerTls, serverCredentials, serverTlsOf, shutdownServer, type Health } from '../../libs/grpc/index.js';
import { KvMirror, openBuckets, parseModelKey } from '../../libs/bus/index.js';
import { InferenceApi, RegistryApi } from '../../libs/client/index.js';
import { loadConfig } from '../../libs/config/index.js';
import { monitorSpec, type MonitorConfig } from './config.js';
import { AlertEngine, alertHandlers, loadAlertRules } from './alerts.js';
import { CanaryAnalysis } from './canary.js';
import { Probes } from './probes.js';
import { WindowStats } from './window-stats.js';
import { ReplicaMetrics } from './replica-metrics.js';
import type { Logger } from '../../libs/log/index.js';
import { StatsStore } from './stats-store.js';
import { SlowRequests } from './slow-requests.js';
import { MonitorMetrics } from './metrics.js';
import { Ingest } from './ingest.js';
import { DriftTracker, driftHandlers } from './drift.js';
import { followEvents, type EventFeed } from './event-feed.js';
import { monitorServer } from './stats-service.js';
import { OutcomeStore, outcomeHandlers } from './outcomes.js';
import { serveMetrics, type MetricsServer } from './metrics-http.js';
import { SampleFeed } from './sample-feed.js';
import { ServingVersions } from './serving.js';
import { ModelSettings } from './model-settings.js';
import { COMPARE_DEFAULTS } from './comparison.js';
import { experimentHandlers, type ExportSource } from './experiments.js';
import { RetrainPublisher } from './retrain.js';

export const MONITOR_PROTO = 'infermesh/v1/monitor.proto';
export const MONITOR_SERVICE = 'infermesh.v1.Monitor';

/**
 * What the Monitor needs from MonitorConfig (ports 0 = any free port). Fields
 * left out take the defaults of `monitorSpec`.
 */
export type MonitorSettings = Pick<MonitorConfig, 'host' | 'port' | 'metricsPort' | 'maxMessageBytes' | 'shutdownGraceMs' | 'slowRetentionMs'> &
  Partial<MonitorConfig>;

export interface MonitorDeps {
  /** A connected NATS connection; the caller owns (and drains) it. */
  nc: NatsConnection;
  log: Logger;
  /** Clock for rates and the slow-request window (default Date.now). */
  now?: () => number;
  /** Proto files served by reflection, relative to PROTO_DIR (default: monitor.proto). */
  protoFiles?: readonly string[];
  /** Who may write (main.ts checks it before connecting to NATS); default: from settings, AccessPolicy.forListener. */
  access?: AccessPolicy;
}

export class Monitor {
  private closing: Promise<void> | null = null;

  private constructor(
    /** The bound gRPC port. */
    readonly grpcPort: number,
    /** The bound Prometheus port. */
    readonly metricsPort: number,
    readonly store: StatsStore,
    readonly slow: SlowRequests,
    readonly metrics: MonitorMetrics,
    private readonly parts: Parts,
    private readonly settings: MonitorConfig,
    /**
     * Resolves once the stored samples, outcomes and events are replayed and
     * alerts and canary analysis evaluate (queries answer before that).
     */
    readonly ready: Promise<void>,
  ) {}

  /** The alert engine (rules, drift, evaluation, probes, canary analysis feed it). */
  get alerts(): AlertEngine {
    return this.parts.alerts!;
  }

  /** The canary analysis (its tick() judges every running canary now). */
  get canary(): CanaryAnalysis {
    return this.parts.canary!;
  }

  /** The golden probes. */
  get probes(): Probes {
    return this.parts.probes!;
  }

  /** Ground truth: outcomes joined to samples, and the evaluation per version (evaluate()). */
  get outcomes(): OutcomeStore {
    return this.parts.outcomes!;
  }

  /** Drift per model version (report() for the alert engine; thresholds in drift.settings). */
  get drift(): DriftTracker {
    return this.parts.drift!;
  }

  /**
   * Subscribes to samples and events, then binds gRPC and /metrics (port 0 =
   * any free port) and reports SERVING. On failure, whatever started is closed.
   */
  static async create(given: MonitorSettings, deps: MonitorDeps): Promise<Monitor> {
    const settings: MonitorConfig = { ...loadConfig(monitorSpec, [], {}), ...given };
    // TLS (mutual with a CA) on the gRPC listener and towards the router and registry; tokens for RecordOutcomes.
    const tls = serverTlsOf(settings);
    const access = deps.access ?? AccessPolicy.forListener({ tokensFile: settings.tokensFile, host: settings.host, insecure: settings.insecureManagement, warn: (m) => deps.log.warn(m) });
    const now = deps.now ?? Date.now;
    const store = new StatsStore(now);
    const slow = new SlowRequests(settings.slowRetentionMs, now);
    const metrics = new MonitorMetrics();
    const ingest = new Ingest(store, slow, metrics, deps.log, now);
    const serving = new ServingVersions();
    // Segment parameter and cost model per model, from the version records (models push --segment-by, --cost-*).
    const modelSettings = new ModelSettings();
    const parts: Parts = {};
    try {
      // One reader of the samples stream: each batch decoded once, replayed (state) and live (state and counters).
      const feed = (parts.samples = await SampleFeed.create(
        deps.nc,
        {
          retentionMs: settings.outcomeRetentionMs,
          maxBytes: settings.samplesStreamMaxBytes,
          replicas: settings.natsReplicas,
          onBad: (subject, reason, err) => ingest.bad('samples', subject, reason, err),
        },
        deps.log,
      ));
      feed.onBatch((b, replayed) => ingest.samples(b, replayed));
      // Drift windows take every sampled prediction; reference profiles come from the models bucket (below).
      const drift = (parts.drift = new DriftTracker(
        { window: settings.driftWindow, minSamples: settings.driftMinSamples, psiThreshold: settings.driftPsiThreshold, ksThreshold: settings.driftKsThreshold },
        now,
      ));
      feed.onBatch((b) => drift.add(b));
      metrics.driftReport = () => drift.report();
      parts.events = await followEvents(
        deps.nc,
        (subject, data, live) => {
          const ev = ingest.event(subject, data, live);
          if (ev) serving.noteEvent(ev);
        },
        deps.log,
      );
      // Ground truth: samples (from the feed) and outcomes replayed from their streams, joined by request id.
      const outcomes = (parts.outcomes = await OutcomeStore.create(
        deps.nc,
        {
          retentionMs: settings.outcomeRetentionMs,
          streamMaxBytes: settings.samplesStreamMaxBytes,
          perModel: settings.outcomeSamplesPerModel,
          replicas: settings.natsReplicas,
          now,
          settings: modelSettings,
        },
        deps.log,
        feed,
      ));
      metrics.costReport = () => modelSettings.withCost().flatMap((name) => outcomes.evaluate(name));

      // Alerts over the serving window, probes and canary analysis, fed by the models bucket.
      const window = new WindowStats(settings.alertWindowMs, now);
      feed.onBatch((b) => window.add(b));
      const alerts = (parts.alerts = await AlertEngine.create(
        deps.nc,
        {
          intervalMs: settings.alertIntervalMs,
          forEvaluations: settings.alertFor,
          resolveAfter: settings.alertResolveAfter,
          retentionMs: settings.alertRetentionMs,
          p99Ms: settings.alertP99Ms,
          errorRate: settings.alertErrorRate,
          minRequests: settings.alertMinRequests,
          rules: loadAlertRules(settings.alertRules),
          natsReplicas: settings.natsReplicas,
        },
        deps.log,
        metrics.alertsFiring,
        now,
      ));
      alerts.setServing((name, version) => serving.left(name, version));
      alerts.addServingRules(window);
      // Drift of each segment too (subject `<param>=<value>/<feature>`): a risk model often fails in one segment first.
      alerts.addDrift(
        () => drift.report(undefined, 0, true).map((f) => (f.segment === '' ? f : { ...f, feature: `${modelSettings.segmentBy(f.name) || 'segment'}=${f.segment}/${f.feature}` })),
        settings.driftPsiThreshold,
        settings.driftKsThreshold,
      );
      // The retraining loop: a drift or evaluation alert that fires asks for retraining on infermesh.retrain.<model>.
      const retrain = (parts.retrain = await RetrainPublisher.create(deps.nc, { retentionMs: settings.outcomeRetentionMs, replicas: settings.natsReplicas }, deps.log));
      alerts.watch((a) => retrain.onAlert(a));
      alerts.addEvaluation(
        (name) => outcomes.evaluate(name),
        () => [...new Set(window.live().map((l) => l.name))],
      );
      const peer = { tls: peerTls(tls), serverName: settings.tlsServerName };
      parts.routerApi = new InferenceApi(settings.routerAddress, { retries: 1, ...peer });
      parts.registryApi = new RegistryApi(settings.registryAddress, { timeoutMs: 10_000, ...peer, token: settings.registryToken || undefined });
      const probes = (parts.probes = new Probes(parts.routerApi, metrics, deps.log, now));
      alerts.addSource(() => probes.observations());
      const canary = (parts.canary = new CanaryAnalysis(
        window,
        (name, production, canary) => outcomes.compare(name, production, canary, { ...COMPARE_DEFAULTS }),
        parts.registryApi,
        alerts,
        metrics,
        {
          intervalMs: settings.alertIntervalMs,
          minRequests: settings.canaryMinRequests,
          alpha: settings.canaryAlpha,
          lookMs: settings.canaryLookMs || Math.max(settings.alertIntervalMs, settings.alertWindowMs / 4),
          latencyMargin: settings.canaryLatencyMargin,
          maxErrorRateIncrease: settings.canaryMaxErrorRateIncrease,
          maxP99Ratio: settings.canaryMaxP99Ratio,
          minP99DeltaMs: settings.canaryMinP99DeltaMs,
          metric: settings.canaryMetric,
          metricMargin: settings.canaryMetricMargin,
          minLabelled: settings.canaryMinLabelled,
          promoteAfterMs: settings.canaryPromoteAfterMs,
        },
        deps.log,
        now,
      ));
      const { models, replicas } = await openBuckets(deps.nc, settings.natsReplicas);
      const replicaMetrics = new ReplicaMetrics(metrics.registry);
      parts.replicas = await KvMirror.start(replicas, { log: deps.log, onChange: (key, value) => replicaMetrics.set(key, value) });
      parts.models = await KvMirror.start(models, {
        log: deps.log,
        onChange: (key, value) => {
          const k = parseModelKey(key);
          if (k?.kind === 'reference' || k?.kind === 'version') drift.applyModelKey(key, value);
          if (k?.kind === 'version') modelSettings.applyModelKey(key, value);
          if (k?.kind === 'probe') probes.set(k.name, value);
          else if (k?.kind === 'traffic') {
            canary.setTraffic(k.name, value);
            serving.setTraffic(k.name, value);
          }
        },
      });
      // Every listener is in place: replay the stored batches, then follow live ones.
      await feed.start();
      const events = parts.events;
      const ready = Promise.all([feed.caughtUp, outcomes.whenReady(), events.caughtUp]).then(() => {
        if (parts.closed) return;
        alerts.start();
        canary.start();
        deps.log.info({}, 'stored samples, outcomes and events replayed; alerts and canary analysis evaluate');
      });

      const server = createGrpcServer({ maxMessageBytes: settings.maxMessageBytes });
      parts.grpc = server;
      const exportSource: ExportSource = {
        whenReady: (signal) => outcomes.whenReady(signal),
        hasSamples: (name) => outcomes.hasSamples(name),
        joinedRows: (name, filter) => outcomes.joinedRows(name, filter),
        widths: (name, filter) => outcomes.widths(name, filter),
        segmentBy: (name) => modelSettings.segmentBy(name),
        columnNames: (name, kind, count) => drift.columnNames(name, kind, count),
      };
      const handlers = { ...driftHandlers(drift), ...outcomeHandlers(outcomes), ...alertHandlers(alerts), ...experimentHandlers(outcomes, exportSource) };
      server.addService(MonitorService, monitorServer(store, slow, handlers, access));
      parts.health = addHealthAndReflection(server, deps.protoFiles ?? [MONITOR_PROTO], [MONITOR_SERVICE]);
      const grpcPort = await listen(server, settings.host, settings.port, serverCredentials(tls));
      parts.http = await serveMetrics(metrics.registry, settings.host, settings.metricsPort);
      parts.health.set('SERVING');
      return new Monitor(grpcPort, parts.http.port, store, slow, metrics, parts, settings, ready);
    } catch (err) {
      await closeParts(parts, 0);
      throw err;
    }
  }

  /** Reports NOT_SERVING, stops consuming, shuts gRPC down (within shutdownGraceMs) and closes /metrics. Idempotent. */
  close(): Promise<void> {
    this.parts.closed = true;
    return (this.closing ??= closeParts(this.parts, this.settings.shutdownGraceMs));
  }
}

interface Parts {
  drift?: DriftTracker;
  outcomes?: OutcomeStore;
  alerts?: AlertEngine;
  probes?: Probes;
  canary?: CanaryAnalysis;
  retrain?: RetrainPublisher;
  models?: KvMirror;
  replicas?: KvMirror;
  routerApi?: InferenceApi;
  registryApi?: RegistryApi;
  samples?: SampleFeed;
  closed?: boolean;
  events?: EventFeed;
  grpc?: Server;
  health?: Health;
  http?: MetricsServer;
}

async function closeParts(p: Parts, graceMs: number): Promise<void> {
  p.closed = true;
  p.health?.set('NOT_SERVING');
  p.models?.close();
  p.replicas?.close();
  p.canary?.close();
  p.probes?.close();
  p.alerts?.close();
  p.routerApi?.close();
  p.registryApi?.close();
  await Promise.all([
    p.samples?.stop(),
    p.events?.stop(),
    p.outcomes?.close(),
    p.grpc ? shutdownServer(p.grpc, graceMs) : undefined,
    p.http?.close(),
  ]);
}
