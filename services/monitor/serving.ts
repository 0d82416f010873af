/**
 * Which model versions still serve, for the alert engine: a version serves
 * while an alias, the canary or the shadow of its model's traffic record
 * (models bucket, `<model>.traffic`) points to it. A version that was routed
 * once and no longer is has left service (unaliased, canary cleared or
 * rolled back, shadow cleared): its alerts resolve at the next evaluation
 * with that reason, and its conditions are no longer judged, whatever its
 * drift window or kept outcomes still say.
 *
 * "Routed once" comes from the traffic records seen (each alias's previous
 * targets included) and from the lifecycle events (PROMOTED, CANARIED,
 * SHADOWED, ROLLED_BACK), which the monitor replays at start: so a restarted
 * monitor knows the versions that left before it started and never fires
 * their alerts again. A version never routed (called by number only) is not
 * affected: its alerts follow its traffic as before.
 */
import { ModelEvent_Kind, TrafficRecord, type ModelEvent } from '../../libs/proto/index.js';

interface ModelRouting {
  /** Versions an alias, the canary or the shadow points to now. */
  routed: Set<number>;
  /** Versions routed at some time. */
  once: Set<number>;
  /** Why a version that was routed no longer is (when this monitor saw it leave). */
  why: Map<number, string>;
}

export class ServingVersions {
  private readonly models = new Map<string, ModelRouting>();
  /** The last traffic record seen per model (null: removed). */
  private readonly previous = new Map<string, TrafficRecord | null>();

  /** A model's traffic record changed (value) or was removed (null); undecodable values are ignored. */
  setTraffic(name: string, value: Uint8Array | null): void {
    let rec: TrafficRecord | null = null;
    if (value && value.length) {
      try {
        rec = TrafficRecord.decode(value);
      } catch {
        return;
      }
    }
    const m = this.model(name);
    const routed = new Set<number>();
    if (rec) {
      for (const v of Object.values(rec.aliases)) if (v > 0) routed.add(v);
      if (rec.canary && rec.canary.version > 0) routed.add(rec.canary.version);
      if (rec.shadow && rec.shadow.version > 0) routed.add(rec.shadow.version);
      for (const h of Object.values(rec.history)) for (const v of h.versions) m.once.add(v);
    }
    // Why each version that was routed a moment ago left: its role then, and what took it.
    for (const v of m.routed) if (!routed.has(v)) m.why.set(v, leftBecause(v, this.previous.get(name), rec));
    for (const v of routed) {
      m.once.add(v);
      m.why.delete(v);
    }
    m.routed = routed;
    this.previous.set(name, rec);
  }

  /** A lifecycle event (replayed or live): a version an alias, canary or shadow was pointed at was routed. */
  noteEvent(ev: ModelEvent): void {
    if (ev.version <= 0) return;
    const routing = ev.kind === ModelEvent_Kind.PROMOTED || ev.kind === ModelEvent_Kind.CANARIED || ev.kind === ModelEvent_Kind.SHADOWED || ev.kind === ModelEvent_Kind.ROLLED_BACK;
    if (!routing) return;
    const m = this.model(ev.name);
    m.once.add(ev.version);
    // Events come in order: a reason from an earlier departure no longer applies once the version was routed again.
    if (ev.kind !== ModelEvent_Kind.ROLLED_BACK) m.why.delete(ev.version);
    // A canary removed with a reason (by the canary analysis, or `models canary --clear --reason`).
    if (ev.kind === ModelEvent_Kind.ROLLED_BACK && ev.alias === 'canary' && !m.routed.has(ev.version)) {
      m.why.set(ev.version, ev.reason ? `canary rolled back: ${ev.reason}` : 'canary rolled back');
    }
  }

  /**
   * Why version `version` of `name` no longer serves, or null while it
   * serves (or was never routed, so nothing says it left).
   */
  left(name: string, version: number): string | null {
    const m = this.models.get(name);
    if (!m || version <= 0 || m.routed.has(version) || !m.once.has(version)) return null;
    return m.why.get(version) ?? `no alias, canary or shadow of ${name} points to it`;
  }

  private model(name: string): ModelRouting {
    let m = this.models.get(name);
    if (!m) this.models.set(name, (m = { routed: new Set(), once: new Set(), why: new Map() }));
    return m;
  }
}

/** Which role version `v` had in `before` and what replaced it in `after` (null: the record was removed). */
function leftBecause(v: number, before: TrafficRecord | null | undefined, after: TrafficRecord | null): string {
  if (!after) return 'the traffic record was removed';
  if (before?.canary?.version === v) return 'canary cleared';
  if (before?.shadow?.version === v) return 'shadow cleared';
  for (const [alias, target] of Object.entries(before?.aliases ?? {})) {
    if (target !== v) continue;
    const now = after.aliases[alias];
    return now ? `alias ${alias} moved to v${now}` : `alias ${alias} removed`;
  }
  return 'no alias, canary or shadow points to it';
}
