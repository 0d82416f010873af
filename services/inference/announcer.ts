import type { KV } from 'nats';
import type { Logger } from '../../libs/log/index.js';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { ReplicaRecord, type LoadedVersion, type ReplicaStats } from '../../libs/proto/index.js';

export interface AnnouncerOptions {
  id: string;
  address: string;
  device: string;
  workers: number;
  intervalMs: number;
}

/**
 * Keeps this replica's record in the `infermesh-replicas` KV bucket: a
 * heartbeat every `intervalMs` (the bucket's TTL drops a silent replica) and
 * an immediate put whenever what it holds changes.
 */
export class Announcer {
  private readonly startedAt = Date.now();
  private accepting = true;
  private leaving = false;
  private timer: NodeJS.Timeout;
  private scheduled = false;
  private closed = false;

  private readonly loop = monitorEventLoopDelay({ resolution: 1 });
  private loopP99 = 0;
  private loopMax = 0;

  constructor(
    private readonly kv: KV,
    private readonly o: AnnouncerOptions,
    private readonly versions: () => LoadedVersion[],
    private readonly stats: () => ReplicaStats,
    private readonly log: Logger,
  ) {
    this.loop.enable();
    this.timer = setInterval(() => {
      // Event-loop delay of the gRPC thread over the last interval: ONNX Runtime must never block it.
      this.loopP99 = Math.round(this.loop.percentile(99) / 1000);
      this.loopMax = Math.round(this.loop.max / 1000);
      this.loop.reset();
      void this.put();
    }, o.intervalMs);
    this.timer.unref();
  }

  /** The record as it stands now. */
  record(): ReplicaRecord {
    return {
      id: this.o.id,
      address: this.o.address,
      device: this.o.device,
      versions: this.versions(),
      workers: this.o.workers,
      startedAtMs: this.startedAt,
      updatedAtMs: Date.now(),
      accepting: this.accepting,
      leaving: this.leaving,
      stats: { ...this.stats(), eventLoopP99Micros: this.loopP99, eventLoopMaxMicros: this.loopMax, rssBytes: process.memoryUsage.rss() },
    };
  }

  /** Announces a change soon (coalesced within one event-loop turn). */
  changed(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.put();
    });
  }

  /** Marks the replica as leaving: others take over its models while it still serves. */
  async startLeaving(): Promise<void> {
    this.leaving = true;
    await this.put();
  }

  /** Marks the replica as draining: routers stop sending it new requests. */
  async stopAccepting(): Promise<void> {
    this.accepting = false;
    await this.put();
  }

  async put(): Promise<void> {
    if (this.closed) return;
    try {
      await this.kv.put(this.o.id, ReplicaRecord.encode(this.record()).finish());
    } catch (err) {
      this.log.warn({ err: String(err) }, 'heartbeat not written');
    }
  }

  /** Stops beating and removes the record. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.loop.disable();
    await this.kv.delete(this.o.id).catch(() => undefined);
  }
}
