/**
 * The router's routing core without NATS or sockets: alias, canary and
 * shadow resolution, alias gating, and replica choice, against plain objects
 * that implement the routing state.
 */
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, NotFoundError } from '../../libs/errors/index.js';
import { ReplicaRecord, TrafficRecord, VersionRecord, VersionState } from '../../libs/proto/index.js';
import { bucketOf, buildRoutes, LINK_DOWN, pickReplica, resolveTarget, spillAt, targetOf, type HeaderSource, type ReplicaState, type ReplicaView, type RoutingState } from '../../services/router/routing-core.js';

interface FakeReplica extends ReplicaView {
  id: string;
  outstanding: number;
  ejectedUntil: number;
}

const replica = (id: string, outstanding = 0, ejectedUntil = 0): FakeReplica => ({ id, outstanding, ejectedUntil });
const version = (name: string, v: number) => VersionRecord.fromPartial({ name, version: v });
const heartbeat = (id: string, versions: [string, number, VersionState][], accepting = true) =>
  ReplicaRecord.fromPartial({ id, accepting, versions: versions.map(([name, v, state]) => ({ name, version: v, state })) });
const READY = VersionState.VERSION_STATE_READY;
const LOADING = VersionState.VERSION_STATE_LOADING;

/** A RoutingState from registry records and heartbeats, as the NATS-backed table builds it. */
function stateOf(o: { versions: [string, number][]; traffic?: Record<string, Partial<TrafficRecord>>; replicas: [FakeReplica, ReplicaRecord][]; fraction?: number; effective?: Map<string, number> }) {
  const versions = new Map<string, Map<number, VersionRecord>>();
  for (const [name, v] of o.versions) {
    if (!versions.has(name)) versions.set(name, new Map());
    versions.get(name)!.set(v, version(name, v));
  }
  const traffic = new Map(Object.entries(o.traffic ?? {}).map(([k, t]) => [k, TrafficRecord.fromPartial(t)]));
  const replicas: ReplicaState<FakeReplica>[] = o.replicas.map(([link, rec]) => ({ link, rec, usable: rec.accepting }));
  const switches: string[] = [];
  const routes = buildRoutes({ versions, traffic, replicas, promoteReadyFraction: o.fraction ?? 1, effective: o.effective ?? new Map(), onAliasSwitch: (m, a, v) => switches.push(`${m}@${a}=${v}`) });
  const state: RoutingState<FakeReplica> = { model: (name) => routes.get(name) };
  return { state, switches };
}

const NO_HEADERS: HeaderSource = { get: () => [] };
const headers = (h: Record<string, string>): HeaderSource => ({ get: (k) => (k in h ? [h[k]!] : []) });
/** A fixed sequence of "random" numbers (cycled). */
const seq = (...xs: number[]) => {
  let i = 0;
  return () => xs[i++ % xs.length]!;
};

describe('targetOf', () => {
  it('splits model@alias; model_version wins over the alias and is named in errors', () => {
    expect(targetOf('fraud', '')).toEqual({ name: 'fraud', selector: '', selectorField: 'model_name' });
    expect(targetOf('fraud@staging', '')).toEqual({ name: 'fraud', selector: 'staging', selectorField: 'model_name' });
    expect(targetOf('fraud@staging', '3')).toEqual({ name: 'fraud', selector: '3', selectorField: 'model_version' });
  });
});

describe('resolveTarget', () => {
  const a = replica('a');
  const b = replica('b');
  const { state } = stateOf({
    versions: [['fraud', 1], ['fraud', 2], ['fraud', 3]],
    traffic: { fraud: { aliases: { production: 1, staging: 2 } } },
    replicas: [[a, heartbeat('a', [['fraud', 1, READY], ['fraud', 2, READY], ['fraud', 3, LOADING]])], [b, heartbeat('b', [['fraud', 1, READY]])]],
  });

  it('routes the default to production, digits to a version, names to an alias', () => {
    expect(resolveTarget(state, targetOf('fraud', ''), NO_HEADERS, Math.random).route.record.version).toBe(1);
    expect(resolveTarget(state, targetOf('fraud', '2'), NO_HEADERS, Math.random).route.record.version).toBe(2);
    expect(resolveTarget(state, targetOf('fraud@staging', ''), NO_HEADERS, Math.random).route.record.version).toBe(2);
    // A version that is loading routes (to no replica yet): the path answers UNAVAILABLE, not NOT_FOUND.
    expect(resolveTarget(state, targetOf('fraud', '3'), NO_HEADERS, Math.random).route.replicas).toEqual([]);
    expect(resolveTarget(state, targetOf('fraud', ''), NO_HEADERS, Math.random).route.replicas).toEqual([a, b]);
  });

  it('NOT_FOUND for what does not exist, INVALID_ARGUMENT naming the field for what cannot', () => {
    const err = (name: string, version = '') => {
      try {
        resolveTarget(state, targetOf(name, version), NO_HEADERS, Math.random);
      } catch (e) {
        return e;
      }
      return null;
    };
    expect(err('nope')).toBeInstanceOf(NotFoundError);
    expect(err('fraud', '9')).toBeInstanceOf(NotFoundError);
    expect(err('fraud@canary')).toBeInstanceOf(NotFoundError);
    expect((err('../x') as InvalidArgumentError).field).toBe('model_name');
    expect((err('fraud', 'Bad!') as InvalidArgumentError).field).toBe('model_version');
    expect((err('fraud@Bad!') as InvalidArgumentError).field).toBe('model_name');
    expect((err('fraud', '12345678901234567') as InvalidArgumentError).field).toBe('model_version');
  });

  it('a canary takes its share of production traffic only, sticky by its key header', () => {
    const { state: s } = stateOf({
      versions: [['m', 1], ['m', 2]],
      traffic: { m: { aliases: { production: 1 }, canary: { version: 2, weightPercent: 25, keyHeader: 'X-User' } } },
      replicas: [[a, heartbeat('a', [['m', 1, READY], ['m', 2, READY]])]],
    });
    // Without the key: by the random draw (bucket = random × 10 000 against 2 500 basis points).
    expect(resolveTarget(s, targetOf('m', ''), NO_HEADERS, seq(0.2)).route.record.version).toBe(2);
    expect(resolveTarget(s, targetOf('m', ''), NO_HEADERS, seq(0.3)).route.record.version).toBe(1);
    expect(resolveTarget(s, targetOf('m@production', ''), NO_HEADERS, seq(0.2)).canaried).toBe(true);
    // A request naming a version is never canaried.
    expect(resolveTarget(s, targetOf('m', '1'), NO_HEADERS, seq(0.2)).route.record.version).toBe(1);
    // With the key: the key's bucket decides, whatever the draw, the same every time.
    const keys = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8'];
    for (const k of keys) {
      const want = bucketOf(k) < 2500 ? 2 : 1;
      for (const r of [0, 0.99]) expect(resolveTarget(s, targetOf('m', ''), headers({ 'x-user': k }), seq(r)).route.record.version, k).toBe(want);
    }
    expect(new Set(keys.map((k) => bucketOf(k) < 2500)).size).toBe(2);
  });

  it('a shadow mirrors its share, never onto the version already chosen', () => {
    const { state: s } = stateOf({
      versions: [['m', 1], ['m', 2]],
      traffic: { m: { aliases: { production: 1 }, shadow: { version: 2, percent: 10 } } },
      replicas: [[a, heartbeat('a', [['m', 1, READY], ['m', 2, READY]])]],
    });
    expect(resolveTarget(s, targetOf('m', ''), NO_HEADERS, seq(0.05)).mirror?.record.version).toBe(2);
    expect(resolveTarget(s, targetOf('m', ''), NO_HEADERS, seq(0.5)).mirror).toBeNull();
    expect(resolveTarget(s, targetOf('m', '2'), NO_HEADERS, seq(0.05)).mirror).toBeNull();
  });
});

describe('buildRoutes', () => {
  it('an alias moves once its new target is ready on enough replicas; until then the old one serves', () => {
    const a = replica('a');
    const b = replica('b');
    const effective = new Map<string, number>();
    const traffic = { m: { aliases: { production: 1 } } };
    stateOf({ versions: [['m', 1], ['m', 2]], traffic, effective, replicas: [[a, heartbeat('a', [['m', 1, READY]])], [b, heartbeat('b', [['m', 1, READY]])]] });
    expect(effective.get('m@production')).toBe(1);
    // Promoted to 2, ready on one replica of two (fraction 1): production stays on 1.
    const moved = { m: { aliases: { production: 2 } } };
    let r = stateOf({ versions: [['m', 1], ['m', 2]], traffic: moved, effective, replicas: [[a, heartbeat('a', [['m', 1, READY], ['m', 2, READY]])], [b, heartbeat('b', [['m', 1, READY], ['m', 2, LOADING]])]] });
    expect(resolveTarget(r.state, targetOf('m', ''), NO_HEADERS, Math.random).route.record.version).toBe(1);
    expect(r.switches).toEqual([]);
    // With half the replicas enough, it moves.
    r = stateOf({ versions: [['m', 1], ['m', 2]], traffic: moved, effective, fraction: 0.5, replicas: [[a, heartbeat('a', [['m', 1, READY], ['m', 2, READY]])], [b, heartbeat('b', [['m', 1, READY], ['m', 2, LOADING]])]] });
    expect(resolveTarget(r.state, targetOf('m', ''), NO_HEADERS, Math.random).route.record.version).toBe(2);
    expect(r.switches).toEqual(['m@production=2']);
  });

  it('without production the default is the newest ready version; replicas not accepting serve nothing', () => {
    const a = replica('a');
    const b = replica('b');
    const { state } = stateOf({
      versions: [['m', 1], ['m', 2], ['m', 3]],
      replicas: [[a, heartbeat('a', [['m', 1, READY], ['m', 2, READY], ['m', 3, LOADING]])], [b, heartbeat('b', [['m', 3, READY]], false)]],
    });
    expect(resolveTarget(state, targetOf('m', ''), NO_HEADERS, Math.random).route.record.version).toBe(2);
    expect(resolveTarget(state, targetOf('m', '3'), NO_HEADERS, Math.random).route.replicas).toEqual([]);
  });
});

describe('pickReplica', () => {
  it('power of two choices: the less loaded of two drawn', () => {
    const busy = replica('busy', 9);
    const idle = replica('idle', 1);
    // Draws 0.1 and 0.9 pick replicas[0] and replicas[1].
    expect(pickReplica([busy, idle], [], 0, seq(0.1, 0.9))).toBe(idle);
    expect(pickReplica([idle, busy], [], 0, seq(0.1, 0.9))).toBe(idle);
    // Both draws on the busy one: it is the choice (two choices, not a scan).
    expect(pickReplica([busy, idle], [], 0, seq(0.1, 0.1))).toBe(busy);
  });

  it('an idle replica first, in route order: at low load calls stay on one replica; under load the two choices spread them', () => {
    const a = replica('a');
    const b = replica('b');
    for (const r of [0.1, 0.9]) expect(pickReplica([a, b], [], 0, seq(r, r))).toBe(a);
    // The first is busy: the next idle one.
    expect(pickReplica([replica('a', 1), b], [], 0, seq(0.1, 0.1))).toBe(b);
    // Only the first four usable ones are looked at; past them the two random choices decide.
    const busy = [1, 2, 3, 4].map((i) => replica(`busy${i}`, 2));
    expect(pickReplica([...busy, replica('late')], [], 0, seq(0.1, 0.1))).toBe(busy[0]);
    // Ejected and tried replicas are skipped without counting.
    const out = replica('out', 0, 500);
    expect(pickReplica([out, a, b, replica('ok', 9)], [a], 0, seq(0.1, 0.1))).toBe(b);
  });

  it('a tiny model\'s calls wait on an awake replica up to spillAt(compute µs); past that, and for slower models, the next replica', () => {
    expect([0, 20, 25, 50, 100, 199, 200, 5_000].map(spillAt)).toEqual([1, 8, 8, 4, 2, 1, 1, 1]);
    const a = replica('a', 3);
    const b = replica('b');
    expect(pickReplica([a, b], [], 0, seq(0.1, 0.1), spillAt(20))).toBe(a);
    expect(pickReplica([a, b], [], 0, seq(0.1, 0.1), spillAt(100))).toBe(b);
    expect(pickReplica([replica('a', 8), b], [], 0, seq(0.1, 0.1), spillAt(20))).toBe(b);
  });

  it('a retry skips the replicas tried; none left → null', () => {
    const a = replica('a');
    const b = replica('b');
    expect(pickReplica([a, b], [a], 0, seq(0.1, 0.1))).toBe(b);
    expect(pickReplica([a, b], [a, b], 0, seq(0.1, 0.9))).toBeNull();
    expect(pickReplica([a], [a], 0, seq(0.1))).toBeNull();
    expect(pickReplica([], [], 0, seq(0.1))).toBeNull();
  });

  it('ejected replicas are avoided while they are at most half; beyond that ejection is ignored', () => {
    const now = 1000;
    const ok = replica('ok', 50);
    const out = replica('out', 0, now + 500);
    expect(pickReplica([out, ok], [], now, seq(0.1, 0.1))).toBe(ok);
    // Ejection over: back in rotation (and less loaded).
    expect(pickReplica([out, ok], [], now + 600, seq(0.1, 0.9))).toBe(out);
    // Two of three ejected: serving on a slow replica beats serving on none.
    const out2 = replica('out2', 0, now + 500);
    expect(pickReplica([out, out2, ok], [], now, seq(0.1, 0.5))).toBe(out);
  });

  it('a replica whose link is down is never picked, even when most are out of rotation', () => {
    const now = 1000;
    const ok = replica('ok', 50);
    const down = replica('down', 0, LINK_DOWN);
    const down2 = replica('down2', 0, LINK_DOWN);
    // Two of three out: ejection would be ignored, but an unreachable replica serves nothing.
    for (const r of [0.1, 0.4, 0.7]) expect(pickReplica([down, down2, ok], [], now, seq(r, r))).toBe(ok);
    // A slow one is still better than none while the others are unreachable.
    const slow = replica('slow', 0, now + 500);
    expect(pickReplica([down, down2, slow], [], now, seq(0.1, 0.4))).toBe(slow);
    expect(pickReplica([down, down2], [], now, seq(0.1, 0.9))).toBeNull();
    expect(pickReplica([down], [], now, seq(0.1))).toBeNull();
  });
});
