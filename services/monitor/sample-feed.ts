/**
 * The monitor's one reader of the routers' sample batches. Routers publish
 * them with plain NATS publishes on `infermesh.samples.<name>`; the stream
 * INFERMESH_SAMPLES keeps them (also while the monitor is down). The feed
 * follows that stream from its first stored message, decodes and checks each
 * batch once, and hands it to every listener with whether it was stored
 * before this monitor started (`replayed`).
 *
 * Replaying is what makes a restarted monitor rebuild its state: the joins
 * for evaluation (the whole retention), the drift windows (the newest
 * samples of each version, however old), the serving windows of the alert
 * rules and the canary analysis, and the slowest requests (each bounded by
 * its own horizon, so older batches cost one decode and are dropped).
 * Counters (GetModelStats totals, Prometheus) take live batches only, so a
 * restart never counts a request twice.
 */
import { nanos, type NatsConnection } from 'nats';
import { ensureStream, NAME_RE, SAMPLES_STREAM, subjects } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { SampleBatch } from '../../libs/proto/index.js';
import { StreamFollower } from './stream-follower.js';

/** Takes one checked batch; must not throw (it is logged and skipped if it does). */
export type BatchListener = (batch: SampleBatch, replayed: boolean) => void;

export interface SampleFeedOptions {
  /** max_age of the stream when this feed creates it. */
  retentionMs: number;
  /** max_bytes of the stream when this feed creates it. */
  maxBytes: number;
  /** JetStream replicas of the stream when this feed creates it. */
  replicas?: number;
  /** Told about every message dropped as malformed (it never reaches a listener). */
  onBad?: (subject: string, reason: string, err?: unknown) => void;
}

export class SampleFeed {
  private readonly listeners: BatchListener[] = [];
  private readonly follower: StreamFollower;
  private stopping: Promise<void> | null = null;

  private constructor(nc: NatsConnection, private readonly o: SampleFeedOptions, private readonly log: Logger) {
    this.follower = new StreamFollower(nc, SAMPLES_STREAM, (m, replayed) => this.apply(m.subject, m.data, replayed), log);
  }

  /** Ensures the samples stream (file storage, limits retention); call start() once every listener is added. */
  static async create(nc: NatsConnection, o: SampleFeedOptions, log: Logger): Promise<SampleFeed> {
    await ensureStream(nc, {
      name: SAMPLES_STREAM,
      subjects: ['infermesh.samples.>'],
      max_age: nanos(o.retentionMs),
      max_bytes: o.maxBytes,
      num_replicas: o.replicas ?? 1,
    });
    return new SampleFeed(nc, o, log);
  }

  /** Adds a consumer of every checked batch, replayed and live, in stream order. */
  onBatch(listener: BatchListener): void {
    this.listeners.push(listener);
  }

  /** Starts following; resolves once the replay's end is known (later batches are live). Idempotent. */
  async start(): Promise<void> {
    this.follower.start();
    await this.follower.started;
  }

  /** Resolves once every batch stored before start() has been handed over. */
  get caughtUp(): Promise<void> {
    return this.follower.caughtUp;
  }

  /** Stops following. Idempotent. */
  stop(): Promise<void> {
    return (this.stopping ??= this.follower.stop());
  }

  private apply(subject: string, data: Uint8Array, replayed: boolean): void {
    let batch: SampleBatch;
    try {
      batch = SampleBatch.decode(data);
    } catch (err) {
      return this.o.onBad?.(subject, 'undecodable', err);
    }
    if (!NAME_RE.test(batch.name) || subject !== subjects.samples(batch.name)) return this.o.onBad?.(subject, 'name does not match subject');
    for (const list of [batch.versions, batch.probes]) {
      for (const v of list) if (v.latencyMicros.length !== v.codes.length) return this.o.onBad?.(subject, 'latencies and codes differ in length');
    }
    for (const l of this.listeners) {
      try {
        l(batch, replayed);
      } catch (err) {
        this.log.warn({ err: String(err), subject }, 'sample listener failed');
      }
    }
  }
}
