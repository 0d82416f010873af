import type { NatsConnection } from 'nats';
import { EVENTS_STREAM, subjects } from '../../libs/bus/index.js';
import { UnavailableError } from '../../libs/errors/index.js';
import { ModelEvent } from '../../libs/proto/index.js';

/** Most events one history answer returns (the newest ones). */
const MAX_EVENTS = 5_000;

/** A model's lifecycle events, oldest first, read from the JetStream event stream. */
export async function readHistory(nc: NatsConnection, name: string): Promise<ModelEvent[]> {
  const subject = subjects.events(name);
  try {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info(EVENTS_STREAM, { subjects_filter: subject });
    const count = info.state.subjects?.[subject] ?? 0;
    if (count === 0) return [];
    const consumer = await nc.jetstream().consumers.get(EVENTS_STREAM, { filterSubjects: subject });
    const out: ModelEvent[] = [];
    const msgs = await consumer.fetch({ max_messages: count, expires: 5_000 });
    for await (const m of msgs) {
      try {
        out.push(ModelEvent.decode(m.data));
      } catch {
        // A payload that is not an event is skipped, never shown.
      }
      if (m.info.pending === 0) break;
    }
    return out.slice(-MAX_EVENTS);
  } catch (err) {
    throw new UnavailableError('event history unavailable', { cause: err });
  }
}
