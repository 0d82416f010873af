import { headers as natsHeaders, type NatsConnection, type JetStreamClient } from 'nats';
import { context, propagation } from '@opentelemetry/api';
import { ModelEvent, ModelEvent_Kind } from '../proto/index.js';
import type { Logger } from '../log/index.js';
import { subjects } from './names.js';

/**
 * Publishes lifecycle events on `infermesh.events.model.<name>` through
 * JetStream (acknowledged, stored), so an event is either stored or the
 * publisher knows it was not. Never blocks its caller: failures are logged.
 */
export class EventPublisher {
  private readonly js: JetStreamClient;
  constructor(nc: NatsConnection, private readonly actor: string, private readonly log: Logger) {
    this.js = nc.jetstream();
  }

  /** Publishes one event; resolves true once stored, false (logged) when it could not be. */
  async publish(e: Partial<ModelEvent> & { name: string; kind: ModelEvent_Kind }): Promise<boolean> {
    const ev = ModelEvent.fromPartial({ actor: this.actor, atMs: Date.now(), ...e });
    try {
      // Trace context travels in the message headers (W3C traceparent).
      const h = natsHeaders();
      propagation.inject(context.active(), h, { set: (carrier, key, value) => carrier.set(key, value) });
      await this.js.publish(subjects.events(ev.name), ModelEvent.encode(ev).finish(), { timeout: 5_000, headers: h });
      return true;
    } catch (err) {
      this.log.warn({ err: String(err), event: ModelEvent_Kind[ev.kind], model: ev.name }, 'event not published');
      return false;
    }
  }
}
