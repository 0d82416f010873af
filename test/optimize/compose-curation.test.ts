/**
 * `models compose` and the registry's curation against a real registry,
 * replica, router and NATS: a pipeline (standardizer → classifier) and a
 * 3-model mean ensemble answer what running the parts one after the other in
 * ONNX Runtime answers (≤ 1e-6), in-process and through the router, the
 * ensemble's p50 through the router within 10 % of its largest part's; tags
 * filter; delete is refused for a served version and for a composition's
 * part; archive takes a version out of routing; retention keeps N; GC frees
 * the deleted versions' bytes from the object store.
 */
import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from '../../libs/errors/index.js';
import { mlpModel, standardizerModel, type Fixture } from '../../libs/onnx-builder/index.js';
import { ModelEvent_Kind } from '../../libs/proto/index.js';
import { cli, expectCleanError, json } from '../cli/run-cli.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { normalRows, runInProcess } from './fixtures.js';

const WIDTH = 8;
const scaler = standardizerModel(Float32Array.from({ length: WIDTH }, (_, i) => i - 3), Float32Array.from({ length: WIDTH }, (_, i) => 0.5 + i / 4));
const clf = mlpModel({ inputs: WIDTH, hidden: [16], seed: 4 });
const members = [1, 2, 3].map((seed) => mlpModel({ inputs: WIDTH, hidden: [32], seed }));
let mesh: Mesh;
const logged: Record<string, unknown> = {};

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return Status[(err as grpc.ServiceError).code] ?? String(err);
  }
}

const reg = () => mesh.clients.registry;
const flags = () => ['--registry', mesh.registryAddr];

async function routed(name: string, version: number, rows: Float32Array): Promise<number[]> {
  await mesh.waitReady(name, String(version));
  const { outputs } = await mesh.clients.router.infer(name, [{ name: 'features', datatype: 'FP32', shape: [rows.length / WIDTH, WIDTH], data: Array.from(rows) }], { version: String(version) });
  return outputs[0]!.data as number[];
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function artifactOf(name: string, version: number): Promise<Uint8Array> {
  const v = (await reg().get(name)).versions.find((x) => x.version === version)!;
  const os = await (await import('nats')).connect({ servers: mesh.nats.url });
  try {
    return (await (await os.jetstream().views.os('infermesh-artifacts')).getBlob(v.sha256))!;
  } finally {
    await os.close();
  }
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 1 });
  await reg().push(scaler.bytes, { name: 'scaler', alias: 'production', tags: { team: 'risk' } });
  await reg().push(clf.bytes, { name: 'clf', alias: 'production', tags: { team: 'risk', stage: 'prod' } });
  for (const [i, m] of members.entries()) await reg().push(m.bytes, { name: `member${i + 1}`, alias: 'production' });
}, 60_000);

afterAll(async () => {
  console.log(JSON.stringify(logged));
  await mesh?.stop();
});

describe('models compose', () => {
  it('a pipeline (standardizer → classifier) answers what the parts one after the other answer, in-process and through the router', async () => {
    const r = json(await cli(['models', 'compose', 'pipe', '--pipeline', 'scaler', 'clf@1', '--json', ...flags()], 30_000));
    expect(r).toMatchObject({ name: 'pipe', version: 1, method: 'pipeline', derivedFrom: ['scaler@1', 'clf@1'] });
    expect(r.inputs).toEqual([{ name: 'features', datatype: 'FP32', shape: [-1, WIDTH] }]);
    const rows = normalRows(64, WIDTH, 5);
    const standardized = await runInProcess(scaler.bytes, scaler, rows);
    const expected = await runInProcess(clf.bytes, clf, standardized);
    const composite = await runInProcess(await artifactOf('pipe', 1), clf, rows);
    expect(maxDiff(composite, expected)).toBeLessThanOrEqual(1e-6);
    expect(maxDiff(await routed('pipe', 1, rows), expected)).toBeLessThanOrEqual(1e-6);
    // Not the classifier alone: the standardizer ran first.
    expect(maxDiff(await runInProcess(clf.bytes, clf, rows), expected)).toBeGreaterThan(1e-3);
  }, 60_000);

  it('a 3-model mean ensemble answers the mean of the parts; its p50 through the router is within 10 % of its largest part alone', async () => {
    const r = json(await cli(['models', 'compose', 'ens', '--ensemble', 'mean', 'member1', 'member2', 'member3', '--json', ...flags()], 30_000));
    expect(r).toMatchObject({ method: 'ensemble:mean', derivedFrom: ['member1@1', 'member2@1', 'member3@1'] });
    const rows = normalRows(64, WIDTH, 6);
    const parts = await Promise.all(members.map((m) => runInProcess(m.bytes, m, rows)));
    const expected = parts[0]!.map((_, i) => (parts[0]![i]! + parts[1]![i]! + parts[2]![i]!) / 3);
    expect(maxDiff(await runInProcess(await artifactOf('ens', 1), members[0]!, rows), expected)).toBeLessThanOrEqual(1e-6);
    expect(maxDiff(await routed('ens', 1, rows), expected)).toBeLessThanOrEqual(1e-6);
    // p50 of single-row calls through the router, the ensemble and its largest part (the parts are the same size:
    // member1) measured the same way and interleaved (rounds of 25 calls each, alternating which goes first), so the
    // host's changing load falls on both alike. The pipeline and its classifier the same way.
    const one = Array.from(rows.slice(0, WIDTH));
    const p50s = async (names: string[], rounds = 12, per = 25): Promise<Record<string, number>> => {
      const t: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
      for (const name of names) for (let i = 0; i < 20; i++) await routed(name, 1, rows.slice(0, WIDTH));
      for (let r = 0; r < rounds; r++) {
        for (const name of r % 2 ? [...names].reverse() : names) {
          for (let i = 0; i < per; i++) {
            const t0 = performance.now();
            await mesh.clients.router.infer(name, [{ name: 'features', datatype: 'FP32', shape: [1, WIDTH], data: one }], { version: '1' });
            t[name]!.push(performance.now() - t0);
          }
        }
      }
      return Object.fromEntries(names.map((n) => [n, t[n]!.sort((a, b) => a - b)[t[n]!.length >> 1]!]));
    };
    // ≤ 10 % over the largest part alone: measured again (at most twice) when a busy host put it over, every attempt logged.
    const attempts: number[] = [];
    let ensemble: Record<string, number> = {};
    while (attempts.length < 3 && !(attempts.at(-1)! <= 0.1)) {
      ensemble = await p50s(['ens', 'member1']);
      attempts.push(ensemble.ens! / ensemble.member1! - 1);
    }
    const pipeline = await p50s(['pipe', 'clf']);
    // Whether the replica runs each version on its event loop (measured tiny) or hands it to a worker.
    const inline: Record<string, boolean> = {};
    for (const l of mesh.replicas[0]!.logs) {
      if (!l.includes('version ready')) continue;
      const e = JSON.parse(l) as { model: string; version: string | number; inline: boolean };
      inline[`${e.model}@${e.version}`] = e.inline;
    }
    logged.p50Ms = { ...ensemble, ...pipeline, ensembleOverLargestPart: attempts, pipelineOverClf: pipeline.pipe! / pipeline.clf! - 1, inline };
    expect(Math.min(...attempts), `ensemble p50 over its largest part's, per attempt: ${attempts.join(', ')}`).toBeLessThanOrEqual(0.1);
    // Weighted, max and vote build and load too; parts that do not connect are named.
    const refs = [1, 2, 3].map((i) => ({ name: `member${i}`, version: 1 }));
    for (const combine of ['weighted', 'max', 'vote']) {
      const v = await reg().compose({ name: 'ens2', mode: 'ensemble', combine, parts: refs, weights: combine === 'weighted' ? [1, 2, 1] : [] });
      expect(v.lineage?.method).toBe(combine === 'weighted' ? 'ensemble:weighted=1,2,1' : `ensemble:${combine}`);
    }
    const bad = await cli(['models', 'compose', 'bad', '--pipeline', 'clf', 'scaler', ...flags()], 30_000);
    expectCleanError(bad, 1, 'INVALID_ARGUMENT');
    expect(bad.stderr).toMatch(/part 2 \(scaler@1\) input "features" has shape \[\?,8\] but "score" of part 1 has \[\?,1\]/);
  }, 90_000);
});

describe('a registry that keeps order', () => {
  it('tags filter list and show; models tag sets and removes (a TAGGED event)', async () => {
    const list = json(await cli(['models', 'list', '--tag', 'team=risk', '--json', ...flags()]));
    expect(list.models.map((m: { name: string }) => m.name)).toEqual(['clf', 'scaler']);
    await reg().setTags('scaler', 1, { owner: 'ana' }, ['team']);
    const show = json(await cli(['models', 'show', 'scaler', '--tag', 'owner=ana', '--json', ...flags()]));
    expect(show.versions[0].tags).toEqual({ owner: 'ana' });
    expect((await reg().history('scaler')).some((e) => e.kind === ModelEvent_Kind.TAGGED && e.reason === 'owner=ana -team')).toBe(true);
    expect(await codeOf(reg().setTags('scaler', 1, { 'bad key': 'x' }))).toBe('INVALID_ARGUMENT');
  });

  it('delete is refused for a served version and for a part of a composition; archive takes a version out of routing', async () => {
    const served = await cli(['models', 'delete', 'clf', '1', ...flags()]);
    expectCleanError(served, 1, 'FAILED_PRECONDITION');
    expect(served.stderr).toMatch(/alias production/);
    expect(served.stderr).toMatch(/derived version pipe@1/);
    await reg().push(mlpModel({ inputs: WIDTH, hidden: [8], seed: 9 }).bytes, { name: 'clf' });
    expect(await codeOf(reg().archive('clf', 1))).toBe('FAILED_PRECONDITION');
    expect((await reg().archive('clf', 2)).archived).toBe(true);
    expect(await codeOf(reg().setCanary('clf', 2, 10))).toBe('FAILED_PRECONDITION');
    expect(await codeOf(reg().setAlias('clf', 2, 'staging'))).toBe('FAILED_PRECONDITION');
    const list = json(await cli(['models', 'list', '--json', ...flags()]));
    expect(list.models.find((m: { name: string }) => m.name === 'clf').archived).toEqual([2]);
    await reg().archive('clf', 2, true);
    expect(await codeOf(reg().setCanary('clf', 2, 10))).toBe('OK');
    expect(await codeOf(reg().deleteVersion('clf', 2))).toBe('FAILED_PRECONDITION');
    await reg().clearCanary('clf');
  });

  it('retention keeps N unaliased versions; delete frees nothing until GC, which frees the bytes (measured); numbers are never reused', async () => {
    for (let seed = 20; seed < 26; seed++) await reg().push(mlpModel({ inputs: 64, hidden: [256], seed }).bytes, { name: 'ret', ...(seed === 20 ? { alias: 'production' } : {}) });
    expect((await reg().retain({ name: 'ret', keepLast: 2, dryRun: true })).archived).toEqual([4, 3, 2]);
    const kept = json(await cli(['models', 'retain', 'ret', '--keep-last', '2', '--json', ...flags()]));
    expect(kept.archived).toEqual([4, 3, 2]);
    expect(kept.kept).toEqual([
      { version: 6, why: 'newest 2' },
      { version: 5, why: 'newest 2' },
      { version: 1, why: 'alias production' },
    ]);
    expect((await reg().get('ret')).versions.filter((v) => !v.archived).map((v) => v.version)).toEqual([1, 5, 6]);
    expect((await reg().retain({ name: 'ret', keepLast: 1, delete: true })).deleted).toEqual([5, 4, 3, 2]);
    expect((await reg().get('ret')).versions.map((v) => v.version)).toEqual([1, 6]);
    const gc = json(await cli(['models', 'gc', '--min-age', '0', '--json', ...flags()]));
    logged.gc = gc;
    expect(gc.removed).toBe(4);
    expect(gc.bytesFreed).toBeGreaterThan(4 * 60_000);
    expect(gc.storeBytesAfter).toBeLessThan(gc.storeBytesBefore - 4 * 60_000);
    expect((await reg().collectGarbage({ minAgeS: 0 })).objectsRemoved).toBe(0);
    const history = await reg().history('ret');
    expect(history.filter((e) => e.kind === ModelEvent_Kind.DELETED).map((e) => e.version)).toEqual([5, 4, 3, 2]);
    expect(history.filter((e) => e.kind === ModelEvent_Kind.ARTIFACT_FREED)).toHaveLength(4);
    const next = await reg().push(mlpModel({ inputs: 64, hidden: [256], seed: 30 }).bytes, { name: 'ret' });
    expect(next.version).toBe(7);
    // The files of live versions are still there: version 1 is served.
    await mesh.waitReady('ret', '1');
  }, 60_000);
});
