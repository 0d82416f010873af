/**
 * The monitor: consumes the routers' sample batches and the lifecycle events
 * from NATS, keeps statistics per model version and the slowest requests per
 * model, and serves them over gRPC (infermesh.v1.Monitor, health, reflection)
 * and Prometheus /metrics (OpenMetrics, with trace exemplars).
 */
import type { Server } from '@grpc/grpc-js';
import type { NatsConnection, Subscription } from 'nats';
import { MonitorService } from '../../libs/proto/index.js';
import { addHealthAndReflection, createGrpcServer, listen, shutdownServer, type Health } from '../../libs/grpc/index.js';
import { subjects } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { StatsStore } from './stats-store.js';
import { SlowRequests } from './slow-requests.js';
import { MonitorMetrics } from './metrics.js';
import { Ingest } from './ingest.js';
import { followEvents, type EventFeed } from './event-feed.js';
import { monitorServer } from './stats-service.js';
import { serveMetrics, type MetricsServer } from './metrics-http.js';

export const MONITOR_PROTO = 'infermesh/v1/monitor.proto';
export const MONITOR_SERVICE = 'infermesh.v1.Monitor';

/** What the Monitor needs from MonitorConfig (ports 0 = any free port). */
export interface MonitorSettings {
  readonly host: string;
  readonly port: number;
  readonly metricsPort: number;
  readonly maxMessageBytes: number;
  readonly shutdownGraceMs: number;
  /** How long GetSlowRequests lists a slow request after it happened. */
  readonly slowRetentionMs: number;
}

export interface MonitorDeps {
  /** A connected NATS connection; the caller owns (and drains) it. */
  nc: NatsConnection;
  log: Logger;
  /** Clock for rates and the slow-request window (default Date.now). */
  now?: () => number;
  /** Proto files served by reflection, relative to PROTO_DIR (default: monitor.proto). */
  protoFiles?: readonly string[];
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
    private readonly settings: MonitorSettings,
  ) {}

  /**
   * Subscribes to samples and events, then binds gRPC and /metrics (port 0 =
   * any free port) and reports SERVING. On failure, whatever started is closed.
   */
  static async create(settings: MonitorSettings, deps: MonitorDeps): Promise<Monitor> {
    const now = deps.now ?? Date.now;
    const store = new StatsStore(now);
    const slow = new SlowRequests(settings.slowRetentionMs, now);
    const metrics = new MonitorMetrics();
    const ingest = new Ingest(store, slow, metrics, deps.log, now);
    const parts: Parts = {};
    try {
      parts.samples = deps.nc.subscribe(subjects.allSamples, {
        callback: (err, msg) => {
          if (!err) ingest.samples(msg.subject, msg.data);
        },
      });
      parts.events = await followEvents(deps.nc, (subject, data, live) => ingest.event(subject, data, live), deps.log);

      const server = createGrpcServer({ maxMessageBytes: settings.maxMessageBytes });
      parts.grpc = server;
      // WIP (this session): drift (drift.ts), outcomes (outcomes.ts), alerts (alerts.ts) fill these in.
      server.addService(MonitorService, monitorServer(store, slow, {} as never));
      parts.health = addHealthAndReflection(server, deps.protoFiles ?? [MONITOR_PROTO], [MONITOR_SERVICE]);
      const grpcPort = await listen(server, settings.host, settings.port);
      parts.http = await serveMetrics(metrics.registry, settings.host, settings.metricsPort);
      parts.health.set('SERVING');
      return new Monitor(grpcPort, parts.http.port, store, slow, metrics, parts, settings);
    } catch (err) {
      await closeParts(parts, 0);
      throw err;
    }
  }

  /** Reports NOT_SERVING, stops consuming, shuts gRPC down (within shutdownGraceMs) and closes /metrics. Idempotent. */
  close(): Promise<void> {
    return (this.closing ??= closeParts(this.parts, this.settings.shutdownGraceMs));
  }
}

interface Parts {
  samples?: Subscription;
  events?: EventFeed;
  grpc?: Server;
  health?: Health;
  http?: MetricsServer;
}

async function closeParts(p: Parts, graceMs: number): Promise<void> {
  p.health?.set('NOT_SERVING');
  p.samples?.unsubscribe();
  await Promise.all([
    p.events?.stop(),
    p.grpc ? shutdownServer(p.grpc, graceMs) : undefined,
    p.http?.close(),
  ]);
}
