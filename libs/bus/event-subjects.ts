/**
 * Who may say what on the lifecycle-event subjects. The registry publishes its
 * changes (registered, promoted, rolled back, canaried, shadowed, probes) on
 * `infermesh.events.model.<name>`; each replica publishes the steps of its own
 * copy of a version (loading … unloaded, failed) on
 * `infermesh.events.model.<name>.<replica id>`, a subject NATS permissions pin
 * to that replica. Readers keep an event only when its kind belongs to the
 * subject it came on, so a replica's credentials cannot forge a promotion
 * (nor another replica's steps, where each replica is its own NATS user).
 */
import { ModelEvent_Kind, type ModelEvent } from '../proto/index.js';

const PREFIX = 'infermesh.events.model.';

/** The steps a replica reports about its own copy of a version; every other kind is the registry's. */
const REPLICA_KINDS: ReadonlySet<ModelEvent_Kind> = new Set([
  ModelEvent_Kind.LOADING,
  ModelEvent_Kind.WARMED,
  ModelEvent_Kind.READY,
  ModelEvent_Kind.FAILED,
  ModelEvent_Kind.DRAINING,
  ModelEvent_Kind.UNLOADED,
]);

/** True for the kinds replicas publish (on their own subject); false for the registry's (and unknown ones). */
export function isReplicaKind(kind: ModelEvent_Kind): boolean {
  return REPLICA_KINDS.has(kind);
}

/**
 * Why `ev`, received on `subject`, must be dropped; null when it may be kept.
 * Kept: a registry kind on `infermesh.events.model.<name>`, or a replica kind
 * on `infermesh.events.model.<name>.<id>` whose replica id (and actor, when
 * set) is `<id>`; `<name>` must be the event's model.
 */
export function eventSubjectProblem(subject: string, ev: ModelEvent): string | null {
  if (!subject.startsWith(PREFIX)) return 'not an event subject';
  const tokens = subject.slice(PREFIX.length).split('.');
  if (tokens[0] !== ev.name) return 'model name does not match the subject';
  const replica = isReplicaKind(ev.kind);
  if (tokens.length === 1) return replica ? 'replica event on the registry subject' : null;
  if (tokens.length !== 2) return 'not an event subject';
  if (!replica) return 'registry event on a replica subject';
  const id = tokens[1]!;
  if (ev.replicaId !== id) return 'replica id does not match the subject';
  if (ev.actor !== '' && ev.actor !== id) return 'actor is not the replica of the subject';
  return null;
}
