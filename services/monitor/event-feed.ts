/**
 * Follows lifecycle events from the JetStream event stream with an ordered
 * (ephemeral, ack-free) consumer from the first stored event, so the last
 * event per version survives a monitor restart. Events stored before the
 * feed started are delivered with `live = false`.
 */
import { type ConsumerMessages, type NatsConnection } from 'nats';
import { EVENTS_STREAM, ensureEventStream, subjects } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { parseTraceparent } from '../../libs/telemetry/index.js';

const tracer = trace.getTracer('infermesh');

export interface EventFeed {
  /** Stops the consumer. Idempotent. */
  stop(): Promise<void>;
}

/** Starts the feed; `onEvent` must not throw. */
export async function followEvents(
  nc: NatsConnection,
  onEvent: (subject: string, data: Uint8Array, live: boolean) => void,
  log: Logger,
): Promise<EventFeed> {
  await ensureEventStream(nc);
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  const lastStored = (await jsm.streams.info(EVENTS_STREAM)).state.last_seq;
  // No deliver_policy: an ordered consumer starts at stream sequence 1 by
  // default (nats.js 2.29 sends opt_start_seq with DeliverPolicy.All, which
  // the server refuses, and then retries for minutes).
  const consumer = await js.consumers.get(EVENTS_STREAM, { filterSubjects: subjects.allEvents });
  const messages: ConsumerMessages = await consumer.consume();
  const done = (async () => {
    try {
      for await (const m of messages) {
        const live = m.seq > lastStored;
        // The consumer span joins the trace of the call that caused the event (traceparent header).
        const parent = live ? parseTraceparent(m.headers?.get('traceparent')) : null;
        const span = parent ? tracer.startSpan('event.consume', { kind: SpanKind.CONSUMER, attributes: { 'messaging.system': 'nats', 'messaging.destination.name': m.subject } }, trace.setSpanContext(ROOT_CONTEXT, parent)) : null;
        onEvent(m.subject, m.data, live);
        span?.end();
      }
    } catch (err) {
      log.warn({ err: String(err) }, 'event feed stopped');
    }
  })();
  let stopped: Promise<void> | null = null;
  return {
    stop: () =>
      (stopped ??= (async () => {
        await messages.close().catch(() => undefined);
        await done;
      })()),
  };
}
