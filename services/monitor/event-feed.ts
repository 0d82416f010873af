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
  /** Resolves once every event stored before the feed started has been handed over (or on stop). */
  caughtUp: Promise<void>;
  /** Stops the consumer. Idempotent. */
  stop(): Promise<void>;
}

/** How often, while replaying, the consumer is asked whether anything is left to replay. */
const CATCH_UP_CHECK_MS = 2_000;

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
  let caught!: () => void;
  const caughtUp = new Promise<void>((resolve) => (caught = resolve));
  // Nothing stored, or (checked now and then) nothing left for this consumer: stored events may expire or match no filter.
  let handled = 0;
  const check = setInterval(
    () => void consumer.info(false).then((i) => i.num_pending === 0 && i.delivered.stream_seq <= handled && caught(), () => undefined),
    CATCH_UP_CHECK_MS,
  );
  check.unref();
  void caughtUp.then(() => clearInterval(check));
  if (lastStored === 0) caught();
  const done = (async () => {
    try {
      for await (const m of messages) {
        const live = m.seq > lastStored;
        if (m.seq >= lastStored || m.info.pending === 0) caught();
        // The consumer span joins the trace of the call that caused the event (traceparent header).
        const parent = live ? parseTraceparent(m.headers?.get('traceparent')) : null;
        const span = parent ? tracer.startSpan('event.consume', { kind: SpanKind.CONSUMER, attributes: { 'messaging.system': 'nats', 'messaging.destination.name': m.subject } }, trace.setSpanContext(ROOT_CONTEXT, parent)) : null;
        onEvent(m.subject, m.data, live);
        handled = m.seq;
        span?.end();
      }
    } catch (err) {
      log.warn({ err: String(err) }, 'event feed stopped');
    }
  })();
  let stopped: Promise<void> | null = null;
  return {
    caughtUp,
    stop: () =>
      (stopped ??= (async () => {
        caught();
        await messages.close().catch(() => undefined);
        await done;
      })()),
  };
}
