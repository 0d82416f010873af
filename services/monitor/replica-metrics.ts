/**
 * Per-replica serving metrics from the replicas' heartbeats (KV
 * `infermesh-replicas`): requests, batches and batched rows (mean batch size
 * = rows / batches), requests shed by reason, in-flight, RSS and event-loop
 * delay. The values are the replicas' own counters, exported as they were at
 * the last heartbeat; a replica whose record expires disappears.
 */
import { Counter, Gauge, type Registry, type RegistryContentType } from 'prom-client';
import { ReplicaRecord } from '../../libs/proto/index.js';

type Stats = NonNullable<ReplicaRecord['stats']>;

export class ReplicaMetrics {
  private readonly replicas = new Map<string, Stats>();

  constructor(registry: Registry<RegistryContentType>) {
    const registers = [registry];
    const each = (fn: (id: string, s: Stats) => void) => () => {
      for (const [id, s] of this.replicas) fn(id, s);
    };
    const counter = (name: string, help: string, value: (s: Stats) => number) =>
      new Counter({
        name,
        help,
        labelNames: ['replica'],
        registers,
        collect() {
          this.reset();
          each((replica, s) => this.inc({ replica }, value(s)))();
        },
      });
    counter('infermesh_replica_requests_total', 'Requests an inference replica answered or refused since it started.', (s) => s.requests);
    counter('infermesh_replica_batches_total', 'Model runs (batches) of an inference replica since it started.', (s) => s.batches);
    counter('infermesh_replica_batched_rows_total', 'Rows run in batches; divided by batches, the mean batch size.', (s) => s.batchedRows);
    new Counter({
      name: 'infermesh_replica_shed_total',
      help: 'Requests an inference replica did not run, by reason: queue_full, deadline (refused at admission), expired (in the queue), cancelled.',
      labelNames: ['replica', 'reason'],
      registers,
      collect() {
        this.reset();
        each((replica, s) => {
          this.inc({ replica, reason: 'queue_full' }, s.refusedQueueFull);
          this.inc({ replica, reason: 'deadline' }, s.refusedDeadline);
          this.inc({ replica, reason: 'expired' }, s.expiredInQueue);
          this.inc({ replica, reason: 'cancelled' }, s.cancelled);
        })();
      },
    });
    const gauge = (name: string, help: string, value: (s: Stats) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['replica'],
        registers,
        collect() {
          this.reset();
          each((replica, s) => this.set({ replica }, value(s)))();
        },
      });
    gauge('infermesh_replica_in_flight', 'Requests queued or running on an inference replica at its last heartbeat.', (s) => s.outstanding);
    gauge('infermesh_replica_resident_memory_bytes', 'Resident memory of an inference replica at its last heartbeat.', (s) => s.rssBytes);
    gauge('infermesh_replica_event_loop_delay_p99_seconds', 'p99 event-loop delay of an inference replica’s gRPC thread between heartbeats.', (s) => s.eventLoopP99Micros / 1e6);
  }

  /** A replica's heartbeat record changed (value) or expired (null). */
  set(id: string, value: Uint8Array | null): void {
    if (!value) {
      this.replicas.delete(id);
      return;
    }
    try {
      const rec = ReplicaRecord.decode(value);
      if (rec.stats) this.replicas.set(id, rec.stats);
    } catch {
      // Not a replica record: ignored.
    }
  }
}
