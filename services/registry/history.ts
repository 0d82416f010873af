import type { NatsConnection } from 'nats';
import { EVENTS_STREAM, eventSubjectProblem, retryTransient, subjects } from '../../libs/bus/index.js';
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
  // A leader election answers "no responders" for a moment: retried until the call's deadline.
  try {
    return await retryTransient(async () => {
      // The registry's own events and every replica's (subjects of their own; nats-server 2.9 takes one filter per consumer).
      const [own, replicas] = await Promise.all([read(nc, subjects.events(name)), read(nc, subjects.replicasEvents(name))]);
      // Stream order over both: an ordered consumer delivers by sequence, the merge keeps it.
      return [...own, ...replicas].sort((a, b) => a.seq - b.seq).slice(-MAX_EVENTS).map((e) => e.ev);
    });
  } catch (err) {
    throw new UnavailableError('event history unavailable', { cause: err });
  }
}

/** The events stored on `filter` whose kind belongs to the subject they came on (eventSubjectProblem), with their stream sequence. */
async function read(nc: NatsConnection, filter: string): Promise<{ seq: number; ev: ModelEvent }[]> {
  {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info(EVENTS_STREAM, { subjects_filter: filter });
    const count = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
    if (count === 0) return [];
    const consumer = await nc.jetstream().consumers.get(EVENTS_STREAM, { filterSubjects: filter });
    const out: { seq: number; ev: ModelEvent }[] = [];
    const msgs = await consumer.fetch({ max_messages: count, expires: 5_000 });
    for await (const m of msgs) {
      try {
        const ev = ModelEvent.decode(m.data);
        // A registry kind from a replica's subject (a forged promotion), or a replica step on the registry's: never shown.
        if (eventSubjectProblem(m.subject, ev) === null) out.push({ seq: m.seq, ev });
      } catch {
        // A payload that is not an event is skipped, never shown.
      }
      if (m.info.pending === 0) break;
    }
    return out;
  }
}
