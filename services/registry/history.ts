import type { NatsConnection } from 'nats';
import { EVENTS_STREAM, retryTransient, subjects } from '../../libs/bus/index.js';
import { UnavailableError } from '../../libs/errors/index.js';
import { ModelEvent } from '../../libs/proto/index.js';

/** Most events one history answer returns (the newest ones). */
const MAX_EVENTS = 5_000;

/**
 * A model's lifecycle events in stream-sequence order (the order JetStream
 * stored them, oldest first), never by their `at_ms`: events come from several
 * processes whose clocks differ, and one retried from a publisher's outbox
 * carries the time it was raised, not stored.
 */
export async function readHistory(nc: NatsConnection, name: string): Promise<ModelEvent[]> {
  const subject = subjects.events(name);
  // A leader election answers "no responders" for a moment: retried until the call's deadline.
  try {
    return await retryTransient(() => read(nc, subject));
  } catch (err) {
    throw new UnavailableError('event history unavailable', { cause: err });
  }
}

async function read(nc: NatsConnection, subject: string): Promise<ModelEvent[]> {
  {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info(EVENTS_STREAM, { subjects_filter: subject });
    const count = info.state.subjects?.[subject] ?? 0;
    if (count === 0) return [];
    const consumer = await nc.jetstream().consumers.get(EVENTS_STREAM, { filterSubjects: subject });
    const out: { seq: number; ev: ModelEvent }[] = [];
    const msgs = await consumer.fetch({ max_messages: count, expires: 5_000 });
    for await (const m of msgs) {
      try {
        out.push({ seq: m.seq, ev: ModelEvent.decode(m.data) });
      } catch {
        // A payload that is not an event is skipped, never shown.
      }
      if (m.info.pending === 0) break;
    }
    // An ordered consumer delivers by sequence already; sorting says so and costs nothing here.
    out.sort((a, b) => a.seq - b.seq);
    return out.slice(-MAX_EVENTS).map((e) => e.ev);
  }
}
