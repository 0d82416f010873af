import { headers as natsHeaders, type MsgHdrs, type NatsConnection, type JetStreamClient } from 'nats';
import { context, propagation } from '@opentelemetry/api';
import { ModelEvent, ModelEvent_Kind } from '../proto/index.js';
import type { Logger } from '../log/index.js';
import { subjects } from './names.js';
import { randomUUID } from 'node:crypto';
import { ATTEMPT_TIMEOUT_MS, currentDeadline, publishAcked } from './retry.js';

/** Events kept while NATS is unreachable; beyond this the oldest are dropped (and counted). */
const OUTBOX_LIMIT = 10_000;
const RETRY_MS = 500;
/**
 * Longest wait for an event's acknowledgement before the change it reports
 * answers (the event then follows from the outbox): on a NATS cluster the
 * events stream may be electing a leader (seconds) while the change's own
 * bucket is already back.
 */
const STORE_WAIT_MS = 2_500;

interface Pending {
  subject: string;
  data: Uint8Array;
  headers: MsgHdrs;
  /** JetStream message id: a retry after a lost acknowledgement is not stored twice. */
  msgID: string;
}

export interface EventPublisherOptions {
  /**
   * A replica's publisher: events go on its own subject,
   * `infermesh.events.model.<name>.<replicaId>`, with this replica id (see
   * event-subjects.ts). Absent: the registry's subject, `infermesh.events.model.<name>`.
   */
  replicaId?: string;
}

/**
 * Publishes lifecycle events on `infermesh.events.model.<name>` (a replica's on `….<name>.<replica id>`) through
 * JetStream (acknowledged, stored). An event that cannot be stored now (NATS
 * down) waits in an in-memory outbox and is retried in order until it is, so
 * events raised during an outage reach consumers after it. Never throws.
 */
export class EventPublisher {
  private readonly js: JetStreamClient;
  private readonly outbox: Pending[] = [];
  private draining = false;
  private timer: NodeJS.Timeout | null = null;
  /** Events dropped because the outbox overflowed. */
  dropped = 0;

  constructor(nc: NatsConnection, private readonly actor: string, private readonly log: Logger, private readonly o: EventPublisherOptions = {}) {
    this.js = nc.jetstream();
  }

  /** Events waiting for NATS. */
  get backlog(): number {
    return this.outbox.length;
  }

  /** Publishes one event; resolves true once stored now, false when it was queued for retry. */
  async publish(e: Partial<ModelEvent> & { name: string; kind: ModelEvent_Kind }): Promise<boolean> {
    const replicaId = this.o.replicaId;
    const ev = ModelEvent.fromPartial({ actor: this.actor, atMs: Date.now(), ...e, ...(replicaId ? { replicaId } : {}) });
    // Trace context travels in the message headers (W3C traceparent).
    const h = natsHeaders();
    propagation.inject(context.active(), h, { set: (carrier, key, value) => carrier.set(key, value) });
    const p: Pending = { subject: replicaId ? subjects.replicaEvents(ev.name, replicaId) : subjects.events(ev.name), data: ModelEvent.encode(ev).finish(), headers: h, msgID: randomUUID() };
    // Through a leader election the event is retried now, within the caller's deadline, for at most
    // STORE_WAIT_MS: a change already stored answers then, its event following from the outbox (in order).
    if (this.outbox.length === 0 && (await this.send(p, Math.max(Date.now() + 500, Math.min(currentDeadline() - 500, Date.now() + STORE_WAIT_MS))))) return true;
    this.outbox.push(p);
    if (this.outbox.length > OUTBOX_LIMIT) {
      this.outbox.shift();
      this.dropped++;
    }
    this.log.warn({ event: ModelEvent_Kind[ev.kind], model: ev.name, backlog: this.outbox.length }, 'event queued until NATS is back');
    this.schedule();
    return false;
  }

  private async send(p: Pending, deadline = Date.now() + ATTEMPT_TIMEOUT_MS): Promise<boolean> {
    try {
      await publishAcked(this.js, p.subject, p.data, { deadline, headers: p.headers, msgID: p.msgID });
      return true;
    } catch {
      return false;
    }
  }

  private schedule(): void {
    if (this.timer || this.draining) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.drain();
    }, RETRY_MS);
    this.timer.unref();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.outbox.length > 0) {
        if (!(await this.send(this.outbox[0]!))) break;
        this.outbox.shift();
      }
    } finally {
      this.draining = false;
    }
    if (this.outbox.length > 0) this.schedule();
    else this.log.info('queued events published');
  }

  /** Stops retrying. Idempotent. */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
