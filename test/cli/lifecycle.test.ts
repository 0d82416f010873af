/**
 * `models rollback|canary|shadow|history`, `models show` with canary and shadow,
 * and the shadow table of `stats`: flag checking in-process and as a process
 * (usage errors exit 2 before any call), then against a real mesh.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent_Kind } from '../../libs/proto/index.js';
import { canaryChange, kindName, shadowChange } from '../../services/cli/lifecycle.js';
import { shadowTable } from '../../services/cli/stats.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { cli, expectCleanError, json } from './run-cli.js';

describe('lifecycle flags', () => {
  it('canary: VERSION and --weight, or --clear alone', () => {
    expect(canaryChange(3, { weight: '12.5' })).toEqual({ clear: false, version: 3, weightPercent: 12.5, keyHeader: '' });
    expect(canaryChange(3, { weight: '100', keyHeader: 'X-User' })).toEqual({ clear: false, version: 3, weightPercent: 100, keyHeader: 'x-user' });
    expect(canaryChange(undefined, { clear: true })).toEqual({ clear: true });
    for (const [version, o] of [
      [3, {}],
      [undefined, { weight: '10' }],
      [3, { weight: '0' }],
      [3, { weight: '100.5' }],
      [3, { weight: '-5' }],
      [3, { weight: 'ten' }],
      [3, { weight: '' }],
      [3, { weight: '10', keyHeader: ' ' }],
      [3, { clear: true }],
      [undefined, { clear: true, weight: '10' }],
      [undefined, { clear: true, keyHeader: 'x-user' }],
    ] as const) {
      expect(() => canaryChange(version, o), JSON.stringify([version, o])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', exitCode: 2 }));
    }
  });

  it('shadow: VERSION with --percent defaulting to 100, or --clear alone', () => {
    expect(shadowChange(2, {})).toEqual({ clear: false, version: 2, percent: 100 });
    expect(shadowChange(2, { percent: '5' })).toEqual({ clear: false, version: 2, percent: 5 });
    expect(shadowChange(undefined, { clear: true })).toEqual({ clear: true });
    for (const [version, o] of [
      [undefined, {}],
      [2, { percent: '0' }],
      [2, { percent: '101' }],
      [2, { clear: true }],
      [undefined, { clear: true, percent: '5' }],
    ] as const) {
      expect(() => shadowChange(version, o), JSON.stringify([version, o])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', exitCode: 2 }));
    }
  });

  it('event kinds print lower-case', () => {
    expect(kindName(ModelEvent_Kind.ROLLED_BACK)).toBe('rolled_back');
    expect(kindName(ModelEvent_Kind.CANARIED)).toBe('canaried');
    expect(kindName(ModelEvent_Kind.UNRECOGNIZED)).toBe('unknown');
    expect(kindName(99 as ModelEvent_Kind)).toBe('unknown');
  });

  it('the shadow table shows the agreement rate as a percentage', () => {
    const t = shadowTable([{ name: 'm', version: 2, productionVersion: 1, requests: 40, agreements: 30, agreementRate: 0.75, errors: 0, p50Ms: 1.234, p99Ms: 5 }]);
    expect(t).toMatch(/^MODEL\s+SHADOW\s+PRODUCTION\s+REQUESTS\s+AGREEMENT %\s+ERRORS\s+P50_MS\s+P99_MS$/m);
    expect(t).toMatch(/^m\s+2\s+1\s+40\s+75\.0\s+0\s+1\.23\s+5\.00$/m);
  });

  it('usage errors exit 2 before calling the registry', async () => {
    // Nothing listens on port 1: a call would fail with UNAVAILABLE (exit 1) instead.
    const g = ['--registry', '127.0.0.1:1'];
    for (const args of [
      ['models', 'canary', 'm', '2'],
      ['models', 'canary', 'm', '--weight', '10'],
      ['models', 'canary', 'm', '2', '--weight', '0'],
      ['models', 'canary', 'm', '2', '--weight', '150'],
      ['models', 'canary', 'm', '2', '--weight', '10', '--clear'],
      ['models', 'canary', 'm', 'two', '--weight', '10'],
      ['models', 'shadow', 'm'],
      ['models', 'shadow', 'm', '2', '--percent', '0'],
      ['models', 'shadow', 'm', '--clear', '--percent', '5'],
      ['models', 'rollback'],
      ['models', 'history'],
    ]) {
      const r = await cli([...args, ...g]);
      expectCleanError(r, 2, 'INVALID_ARGUMENT');
    }
    expectCleanError(await cli(['models', 'canary', 'm', '--clear', ...g]), 1, 'UNAVAILABLE');
  });
});

describe('lifecycle against a running mesh', () => {
  let mesh: Mesh;
  let dir: string;
  let g: string[];
  const NAME = 'lifecycle';
  const m1 = mlpModel({ inputs: 4, hidden: [8], outputs: 2, seed: 11 });
  const m2 = mlpModel({ inputs: 4, hidden: [8], outputs: 2, seed: 12 });

  beforeAll(async () => {
    mesh = await startMesh({ replicas: 1 });
    g = ['--registry', mesh.registryAddr, '--router', mesh.routerAddr, '--monitor', mesh.monitorAddr];
    dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-lifecycle-'));
    await writeFile(path.join(dir, 'm1.onnx'), m1.bytes);
    await writeFile(path.join(dir, 'm2.onnx'), m2.bytes);
    json(await cli(['models', 'push', path.join(dir, 'm1.onnx'), '--name', NAME, '--alias', 'production', '--json', ...g]));
    json(await cli(['models', 'push', path.join(dir, 'm2.onnx'), '--name', NAME, '--json', ...g]));
  });
  afterAll(async () => {
    await mesh?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('rollback: FAILED_PRECONDITION without a previous target, then steps back once', async () => {
    expectCleanError(await cli(['models', 'rollback', NAME, ...g]), 1, 'FAILED_PRECONDITION');
    expectCleanError(await cli(['models', 'rollback', 'nosuchmodel', ...g]), 1, 'NOT_FOUND');
    json(await cli(['models', 'promote', NAME, '2', '--json', ...g]));
    const r = json(await cli(['models', 'rollback', NAME, '--json', ...g]));
    expect(r).toMatchObject({ name: NAME, aliases: { production: 1 }, canary: null, shadow: null, alias: 'production', version: 1, previous: 2 });
    // Each call steps back once: nothing is left to step back to.
    expectCleanError(await cli(['models', 'rollback', NAME, ...g]), 1, 'FAILED_PRECONDITION');

    json(await cli(['models', 'promote', NAME, '2', '--alias', 'staging', '--json', ...g]));
    json(await cli(['models', 'promote', NAME, '1', '--alias', 'staging', '--json', ...g]));
    const people = await cli(['models', 'rollback', NAME, '--alias', 'staging', ...g]);
    expect(people.code, people.stderr).toBe(0);
    expect(people.stdout.trim()).toBe(`${NAME}: staging → 2 (was 1)`);
  });

  it('canary: set, shown, cleared; NOT_FOUND for an unknown version', async () => {
    expectCleanError(await cli(['models', 'canary', NAME, '9', '--weight', '10', ...g]), 1, 'NOT_FOUND');
    const set = json(await cli(['models', 'canary', NAME, '2', '--weight', '10', '--key-header', 'X-User', '--json', ...g]));
    expect(set).toEqual({ name: NAME, aliases: { production: 1, staging: 2 }, canary: { version: 2, weightPercent: 10, keyHeader: 'x-user' }, shadow: null });

    const show = json(await cli(['models', 'show', NAME, '--json', ...g]));
    expect(show.canary).toEqual({ version: 2, weightPercent: 10, keyHeader: 'x-user' });
    const people = await cli(['models', 'show', NAME, ...g]);
    expect(people.stdout).toMatch(/^canary: v2 at 10% of production, sticky on x-user$/m);

    const again = await cli(['models', 'canary', NAME, '2', '--weight', '25', ...g]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(`${NAME}: canary → v2 at 25% of production`);

    const cleared = json(await cli(['models', 'canary', NAME, '--clear', '--json', ...g]));
    expect(cleared.canary).toBeNull();
    // Idempotent.
    expect((await cli(['models', 'canary', NAME, '--clear', ...g])).stdout.trim()).toBe(`${NAME}: canary cleared`);
    expect((await cli(['models', 'show', NAME, ...g])).stdout).not.toMatch(/^canary:/m);
  });

  it('shadow: set with the default percent, shown; NOT_FOUND for an unknown version', async () => {
    expectCleanError(await cli(['models', 'shadow', NAME, '9', ...g]), 1, 'NOT_FOUND');
    const set = json(await cli(['models', 'shadow', NAME, '2', '--json', ...g]));
    expect(set).toMatchObject({ name: NAME, canary: null, shadow: { version: 2, percent: 100 } });
    const people = await cli(['models', 'show', NAME, ...g]);
    expect(people.stdout).toMatch(/^shadow: v2 mirroring 100% of requests$/m);
    expect(json(await cli(['models', 'show', NAME, '--json', ...g])).shadow).toEqual({ version: 2, percent: 100 });
  });

  it('stats: mirrored requests show up in the shadow table', async () => {
    await mesh.waitReady(NAME, '1');
    await mesh.waitReady(NAME, '2');
    const input = JSON.stringify({ features: [[0.1, 0.2, 0.3, 0.4]] });
    let shadows: { name: string; version: number; productionVersion: number; requests: number }[] = [];
    const until = Date.now() + 20_000;
    while (Date.now() < until) {
      const r = await cli(['infer', NAME, '--input', input, '--json', ...g]);
      expect(r.code, r.stderr).toBe(0);
      const stats = json(await cli(['stats', NAME, '--json', ...g]));
      expect(Array.isArray(stats.shadows)).toBe(true);
      shadows = stats.shadows;
      if (shadows.some((s) => s.version === 2 && s.requests > 0)) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    expect(shadows).toContainEqual(expect.objectContaining({ name: NAME, version: 2, productionVersion: 1 }));
    const table = await cli(['stats', NAME, ...g]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^MODEL\s+VERSION\s+REQUESTS/m);
    expect(table.stdout).toMatch(/^MODEL\s+SHADOW\s+PRODUCTION\s+REQUESTS\s+AGREEMENT %\s+ERRORS\s+P50_MS\s+P99_MS$/m);
    expect(table.stdout).toMatch(new RegExp(`^${NAME}\\s+2\\s+1\\s+[1-9]\\d*\\s+[\\d.]+\\s+\\d+\\s`, 'm'));

    const cleared = json(await cli(['models', 'shadow', NAME, '--clear', '--json', ...g]));
    expect(cleared.shadow).toBeNull();
  });

  it('history: one row per event, oldest first', async () => {
    let events: { kind: string; version: number; alias: string; at: string | null }[] = [];
    const until = Date.now() + 10_000;
    // Events are published after the call returns; wait for the last one.
    while (Date.now() < until) {
      events = json(await cli(['models', 'history', NAME, '--json', ...g])).events;
      if (events.some((e) => e.kind === 'shadowed')) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    const kinds = events.map((e) => e.kind);
    for (const k of ['registered', 'promoted', 'rolled_back', 'canaried', 'shadowed']) expect(kinds).toContain(k);
    expect(kinds.indexOf('registered')).toBeLessThan(kinds.indexOf('rolled_back'));
    expect(kinds.indexOf('rolled_back')).toBeLessThan(kinds.indexOf('canaried'));
    expect(events.find((e) => e.kind === 'rolled_back')).toMatchObject({ version: 1, alias: 'production' });
    for (const e of events) expect(e.at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const table = await cli(['models', 'history', NAME, ...g]);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^TIME\s+VERSION\s+EVENT\s+ALIAS\s+REPLICA\s+REASON\s+ACTOR$/);
    expect(lines.length).toBeGreaterThanOrEqual(events.length + 1);
    expect(table.stdout).toMatch(/^\d{4}-\d\d-\d\dT\S+Z\s+1\s+rolled_back\s+production\s/m);

    const none = await cli(['models', 'history', 'neverpushed', ...g]);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout.trim()).toBe('no events recorded for neverpushed');
  });
});
