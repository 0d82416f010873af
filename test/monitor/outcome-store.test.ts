/**
 * The OutcomeStore (services/monitor/outcomes.ts) against a real nats-server:
 * samples published the way routers publish them (plain NATS), outcomes
 * recorded through JetStream, joins in either order, restarts that replay
 * both streams, bounds, a NATS outage, and request validation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { connectNats, subjects } from '../../libs/bus/index.js';
import { InvalidArgumentError, Status, UnavailableError } from '../../libs/errors/index.js';
import { createLogger } from '../../libs/log/index.js';
import { SampleBatch, type PredictionSample, type VersionEvaluation } from '../../libs/proto/index.js';
import { checkOutcomes, checkThreshold, OutcomeStore, type OutcomeStoreOptions } from '../../services/monitor/outcomes.js';
import { binaryMetrics } from '../../services/monitor/evaluation.js';
import { startNats, type NatsHandle } from '../harness/nats.js';

const log = createLogger('outcome-store-test', 'silent');
const ctx = (ms = 10_000) => ({ deadline: Date.now() + ms, signal: new AbortController().signal });

/** A router-like batch of kept samples: `[requestId, version, score]`, all OK unless `code` says otherwise. */
function samples(name: string, rows: [string, number, number[]][], code = 0): Uint8Array {
  const list: Partial<PredictionSample>[] = rows.map(([requestId, version, out]) => ({ requestId, version, code, outputSummary: out, atMs: Date.now() }));
  return SampleBatch.encode(SampleBatch.fromPartial({ routerId: 'r1', name, samples: list, startMs: Date.now() - 100, endMs: Date.now() })).finish();
}

async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await Promise.resolve(fn()).catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Deterministic scores in (0, 1) and labels that lean on them. */
function traffic(n: number, seed: number): { id: string; version: number; score: number; label: number }[] {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  return Array.from({ length: n }, (_, i) => {
    const score = rnd();
    return { id: `req-${seed}-${i}`, version: 1 + (i % 2), score, label: rnd() < score ? 1 : 0 };
  });
}

/** What the monitor must report for `version`, from the (float32-rounded) scores and labels directly. */
function expected(rows: { version: number; score: number; label: number }[], version: number, threshold = 0.5) {
  const mine = rows.filter((r) => r.version === version);
  return { labelled: mine.length, ...binaryMetrics(mine.map((r) => Math.fround(r.score)), mine.map((r) => r.label), threshold) };
}

function expectEval(e: VersionEvaluation | undefined, want: ReturnType<typeof expected>): void {
  expect(e).toBeDefined();
  expect(e!.kind).toBe('classification');
  expect(e!.labelled).toBe(want.labelled);
  for (const k of ['accuracy', 'precision', 'recall', 'f1', 'rocAuc', 'logLoss'] as const) expect(e![k], k).toBeCloseTo(want[k], 12);
}

describe('outcome store', () => {
  let nats: NatsHandle;
  let nc: NatsConnection;
  const open: OutcomeStore[] = [];
  const create = async (o: OutcomeStoreOptions = {}) => {
    const s = await OutcomeStore.create(nc, o, log);
    open.push(s);
    return s;
  };

  beforeAll(async () => {
    nats = await startNats();
    nc = await connectNats(nats.url, 'outcome-store-test', log);
  });
  afterAll(async () => {
    await Promise.all(open.map((s) => s.close()));
    await nc?.close();
    await nats?.stop();
  });

  it('joins outcomes to samples, survives restarts, and reports what the pairs give directly', async () => {
    const store = await create();
    await store.whenReady();
    const rows = traffic(400, 7);
    // Two router flushes; one failed request and one without an id are never kept.
    nc.publish(subjects.samples('fraud'), samples('fraud', rows.slice(0, 200).map((r) => [r.id, r.version, [r.score]])));
    nc.publish(subjects.samples('fraud'), samples('fraud', rows.slice(200).map((r) => [r.id, r.version, [r.score]])));
    nc.publish(subjects.samples('fraud'), samples('fraud', [['failed-1', 1, [0.9]]], 14));
    nc.publish(subjects.samples('fraud'), samples('fraud', [['', 1, [0.9]]]));
    await until('samples kept', () => (store.hasSamples('fraud') ? true : undefined));
    expect(store.evaluate('fraud')).toEqual([]);

    // Outcomes for the first 300 (plus unknown and failed ids) before a restart.
    const first = rows.slice(0, 300).map((r) => ({ requestId: r.id, label: r.label }));
    const res = await store.record('fraud', [...first, { requestId: 'unknown-1', label: 1 }, { requestId: 'failed-1', label: 0 }], ctx());
    expect(res).toEqual({ recorded: 302, joined: 300 });
    const labelled = rows.slice(0, 300);
    expectEval(store.evaluate('fraud').find((e) => e.version === 1), expected(labelled, 1));
    expectEval(store.evaluate('fraud').find((e) => e.version === 2), expected(labelled, 2));

    // Restart: everything comes back from the streams.
    await store.close();
    const again = await create();
    await again.whenReady();
    expect(again.evaluate('fraud')).toEqual(store.evaluate('fraud'));

    // The rest, in a second call, with two labels changed (the last label wins).
    const rest = rows.slice(300).map((r) => ({ requestId: r.id, label: r.label }));
    rows[0]!.label = 1 - rows[0]!.label;
    rows[1]!.label = 1 - rows[1]!.label;
    const res2 = await again.record('fraud', [...rest, { requestId: rows[0]!.id, label: rows[0]!.label }, { requestId: rows[1]!.id, label: rows[1]!.label }], ctx());
    expect(res2).toEqual({ recorded: 102, joined: 102 });
    const all = again.evaluate('fraud');
    expect(all.map((e) => e.version)).toEqual([1, 2]);
    expectEval(all[0], expected(rows, 1));
    expectEval(all[1], expected(rows, 2));
    const strict = again.evaluate('fraud', 0.7);
    expectEval(strict[0], expected(rows, 1, 0.7));
    expect(strict[0]!.threshold).toBe(0.7);

    await again.close();
    const third = await create();
    await third.whenReady();
    expect(third.evaluate('fraud')).toEqual(all);
    expect(third.models()).toContain('fraud');
  });

  it('keeps an outcome whose sample has not arrived, and joins it when the sample does (also after a restart)', async () => {
    const store = await create();
    await store.whenReady();
    expect(await store.record('late', [{ requestId: 'a', label: 1 }, { requestId: 'b', label: 0 }], ctx())).toEqual({ recorded: 2, joined: 0 });
    expect(store.hasSamples('late')).toBe(false);
    await store.close();
    // The samples arrive while no monitor runs: the stream keeps them.
    nc.publish(subjects.samples('late'), samples('late', [['a', 3, [0.2, 0.8]], ['b', 3, [0.9, 0.1]], ['c', 3, [0.5, 0.5]]]));
    await nc.flush();
    const again = await create();
    await again.whenReady();
    const [e] = again.evaluate('late');
    // Two-column outputs: the score is the second column.
    expect(e).toMatchObject({ version: 3, kind: 'classification', labelled: 2, accuracy: 1, precision: 1, recall: 1, f1: 1, rocAuc: 1 });
  });

  it('evaluates non-binary labels as regression', async () => {
    const store = await create();
    await store.whenReady();
    nc.publish(subjects.samples('price'), samples('price', [['p1', 1, [2.5]], ['p2', 1, [0]], ['p3', 1, [2]], ['p4', 1, [8]]]));
    await until('price samples', () => (store.hasSamples('price') ? true : undefined));
    await store.record('price', [{ requestId: 'p1', label: 3 }, { requestId: 'p2', label: -0.5 }, { requestId: 'p3', label: 2 }, { requestId: 'p4', label: 7 }], ctx());
    const [e] = store.evaluate('price');
    expect(e!.kind).toBe('regression');
    expect(e!.mse).toBeCloseTo(0.375, 9);
    expect(e!.mae).toBeCloseTo(0.5, 9);
    expect(e!.r2).toBeCloseTo(0.948608137, 8);
  });

  it('keeps at most perModel samples per model, the newest, and none older than the retention', async () => {
    let clock = Date.now();
    const store = await create({ perModel: 5, retentionMs: 60_000, now: () => clock });
    await store.whenReady();
    const ids = Array.from({ length: 10 }, (_, i) => `cap-${i}`);
    nc.publish(subjects.samples('capped'), samples('capped', ids.map((id) => [id, 1, [0.9]])));
    await until('capped samples', () => (store.hasSamples('capped') ? true : undefined));
    const res = await store.record('capped', ids.map((id) => ({ requestId: id, label: 1 })), ctx());
    expect(res.joined).toBe(5);
    expect(store.evaluate('capped')[0]!.labelled).toBe(5);
    clock += 61_000;
    expect(store.evaluate('capped')).toEqual([]);
    expect(store.hasSamples('capped')).toBe(false);
  });

  it('answers UNAVAILABLE while NATS is down, and records again once it is back', async () => {
    const store = await create();
    await store.whenReady();
    nc.publish(subjects.samples('outage'), samples('outage', [['o1', 1, [0.7]], ['o2', 1, [0.2]]]));
    await until('outage samples', () => (store.hasSamples('outage') ? true : undefined));
    await nats.down();
    try {
      const err = await store.record('outage', [{ requestId: 'o1', label: 1 }], ctx(1_500)).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(UnavailableError);
      expect((err as UnavailableError).code).toBe(Status.UNAVAILABLE);
    } finally {
      await nats.up();
    }
    // The consumers resume after the restart: the recorded pairs are applied and joined.
    const res = await until('recording after the outage', () => store.record('outage', [{ requestId: 'o1', label: 1 }, { requestId: 'o2', label: 0 }], ctx(3_000)));
    expect(res).toEqual({ recorded: 2, joined: 2 });
    await until('evaluation after the outage', () => (store.evaluate('outage')[0]?.labelled === 2 ? true : undefined));
    expect(store.evaluate('outage')[0]).toMatchObject({ accuracy: 1, rocAuc: 1 });
    // Samples published after the outage still reach the store.
    nc.publish(subjects.samples('outage'), samples('outage', [['o3', 1, [0.4]]]));
    await store.record('outage', [{ requestId: 'o3', label: 1 }], ctx());
    await until('a sample after the outage', () => (store.evaluate('outage')[0]?.labelled === 3 ? true : undefined));
  }, 60_000);

  it('validates requests, naming the field', () => {
    const field = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidArgumentError);
        return (err as InvalidArgumentError).field;
      }
      return null;
    };
    const ok = { requestId: 'x', label: 1 };
    expect(field(() => checkOutcomes({ name: 'Bad Name', outcomes: [ok] }))).toBe('name');
    expect(field(() => checkOutcomes({ name: '', outcomes: [ok] }))).toBe('name');
    expect(field(() => checkOutcomes({ name: 'm', outcomes: [ok, ok, ok, { requestId: 'y', label: NaN }] }))).toBe('outcomes[3].label');
    expect(field(() => checkOutcomes({ name: 'm', outcomes: [ok, { requestId: 'y', label: Infinity }] }))).toBe('outcomes[1].label');
    expect(field(() => checkOutcomes({ name: 'm', outcomes: [{ requestId: '', label: 0 }] }))).toBe('outcomes[0].request_id');
    expect(field(() => checkOutcomes({ name: 'm', outcomes: [{ requestId: 'x'.repeat(129), label: 0 }] }))).toBe('outcomes[0].request_id');
    expect(field(() => checkOutcomes({ name: 'm', outcomes: Array.from({ length: 10_001 }, () => ok) }))).toBe('outcomes');
    expect(field(() => checkOutcomes({ name: 'm', outcomes: Array.from({ length: 10_000 }, () => ({ requestId: 'x'.repeat(128), label: -3.5 })) }))).toBeNull();
    expect(checkThreshold(0)).toBe(0.5);
    expect(checkThreshold(0.3)).toBe(0.3);
    for (const t of [1, -0.1, 1.5, NaN, Infinity]) expect(field(() => checkThreshold(t))).toBe('threshold');
  });

  it('stores a call larger than one NATS message in several and applies all of it', async () => {
    const store = await create();
    await store.whenReady();
    // 10,000 pairs of 128-character ids: about 1.4 MB, over NATS's default 1 MB max payload.
    const ids = Array.from({ length: 10_000 }, (_, i) => `${String(i).padStart(6, '0')}${'x'.repeat(122)}`);
    nc.publish(subjects.samples('big'), samples('big', ids.slice(0, 1_000).map((id) => [id, 1, [0.6]])));
    await until('big samples', () => (store.hasSamples('big') ? true : undefined));
    const res = await store.record('big', ids.map((id) => ({ requestId: id, label: 1 })), ctx());
    expect(res).toEqual({ recorded: 10_000, joined: 1_000 });
    expect(store.evaluate('big')[0]).toMatchObject({ labelled: 1_000, precision: 1, recall: 1 });
  });
});
