/**
 * Roles that cannot be walked around: every management RPC of the registry
 * and the monitor, and every request field that changes state on its own
 * terms, called with each role, with an unknown token and with none, against
 * real registry and monitor processes with a tokens file. Only the documented
 * role passes: UNAUTHENTICATED without a (known) token, PERMISSION_DENIED
 * with the wrong role, and a refused call stores nothing. Also: every
 * registry change is a lifecycle event with its actor and reason, and
 * `models history` follows the event stream's order.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subjects } from '../../libs/bus/index.js';
import { buildInferRequest, MonitorApi, RegistryApi } from '../../libs/client/index.js';
import { Status } from '../../libs/errors/index.js';
import { MANAGEMENT_ROLES, tokenHash, type ManagedService, type Role } from '../../libs/grpc/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent, ModelEvent_Kind, MonitorService, oip, RegistryService } from '../../libs/proto/index.js';
import { cli } from '../cli/run-cli.js';
import { startNats, type NatsHandle } from '../harness/nats.js';
import { startService, type ServiceProc } from '../harness/mesh.js';
import { SERVICE_NODE_FLAGS } from '../../libs/config/index.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

/** Runs a service to its exit (or kills it after `ms`): exit code and output. */
function runService(service: string, args: string[], ms = 15_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [...SERVICE_NODE_FLAGS, path.join(ROOT, 'dist/services', service, 'main.js'), ...args], {
      env: { ...process.env, INFERMESH_TOKENS_FILE: '', INFERMESH_INSECURE_MANAGEMENT: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), ms);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

/**
 * The documented roles (README "Security"), written out here rather than read
 * from the code: the code's table must equal this one.
 */
const DOCUMENTED: readonly [ManagedService, string, string | undefined, Role | 'none'][] = [
  ['Registry', 'PushModel', undefined, 'push'],
  ['Registry', 'PushModel', 'header.alias', 'promote'],
  ['Registry', 'SetAlias', undefined, 'promote'],
  ['Registry', 'Rollback', undefined, 'promote'],
  ['Registry', 'SetCanary', undefined, 'promote'],
  ['Registry', 'SetCanary', 'clear', 'promote'],
  ['Registry', 'SetShadow', undefined, 'promote'],
  ['Registry', 'SetShadow', 'clear', 'promote'],
  ['Registry', 'SetProbe', undefined, 'push'],
  ['Registry', 'SetProbe', 'clear', 'push'],
  ['Registry', 'OptimizeModel', undefined, 'push'],
  ['Registry', 'OptimizeModel', 'force', 'promote'],
  ['Registry', 'ComposeModel', undefined, 'push'],
  ['Registry', 'SetTags', undefined, 'push'],
  ['Registry', 'ArchiveVersion', undefined, 'push'],
  ['Registry', 'DeleteVersion', undefined, 'admin'],
  ['Registry', 'ApplyRetention', undefined, 'push'],
  ['Registry', 'ApplyRetention', 'delete', 'admin'],
  ['Registry', 'SetModelServing', undefined, 'promote'],
  ['Registry', 'CollectGarbage', undefined, 'admin'],
  ['Registry', 'ListModels', undefined, 'none'],
  ['Registry', 'GetModel', undefined, 'none'],
  ['Registry', 'GetHistory', undefined, 'none'],
  ['Registry', 'GetReference', undefined, 'none'],
  ['Monitor', 'RecordOutcomes', undefined, 'outcomes'],
  ['Monitor', 'GetModelStats', undefined, 'none'],
  ['Monitor', 'GetSlowRequests', undefined, 'none'],
  ['Monitor', 'GetDrift', undefined, 'none'],
  ['Monitor', 'GetEvaluation', undefined, 'none'],
  ['Monitor', 'ListAlerts', undefined, 'none'],
  ['Monitor', 'WatchAlerts', undefined, 'none'],
  ['Monitor', 'CompareVersions', undefined, 'none'],
  ['Monitor', 'ExportOutcomes', undefined, 'outcomes'],
];

/** Callers: a token per role, one with two roles, an unknown token, and none. */
const CALLERS: Record<string, { token?: string; roles: readonly Role[] }> = {
  none: { roles: [] },
  unknown: { token: 'not-a-known-token', roles: [] },
  push: { token: 'tok-push', roles: ['push'] },
  promote: { token: 'tok-promote', roles: ['promote'] },
  outcomes: { token: 'tok-outcomes', roles: ['outcomes'] },
  pushPromote: { token: 'tok-push-promote', roles: ['push', 'promote'] },
  admin: { token: 'tok-admin', roles: ['admin'] },
};

const model = mlpModel({ inputs: 4, hidden: [4], outputs: 1 });
const NAME = 'roles';
let dir: string;
let nats: NatsHandle;
let registry: ServiceProc;
let monitor: ServiceProc;
let registryAddr: string;
let monitorAddr: string;
const opened: { close(): void }[] = [];

function apis(token?: string): { reg: RegistryApi; mon: MonitorApi } {
  const reg = new RegistryApi(registryAddr, { timeoutMs: 10_000, token });
  const mon = new MonitorApi(monitorAddr, { timeoutMs: 10_000, token });
  opened.push(reg, mon);
  return { reg, mon };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return Status[(err as grpc.ServiceError).code] ?? String(err);
  }
}

/** A server stream that has not failed within `ms` counts as admitted (OK); a refusal arrives at once. */
async function watchCode(mon: MonitorApi, ms = 400): Promise<string> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), ms);
  try {
    return await codeOf(mon.watchAlerts(NAME, () => undefined, ac.signal));
  } finally {
    clearTimeout(t);
  }
}

const probeRequest = oip.ModelInferRequest.encode(buildInferRequest(NAME, [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [0, 0, 0, 0] }])).finish();

interface Case {
  service: ManagedService;
  rpc: string;
  field?: string;
  run(a: { reg: RegistryApi; mon: MonitorApi }): Promise<string>;
  /** Codes an admitted call may end with (default OK). */
  admitted?: readonly string[];
}

/** One call per table row; each sets the row's field (if any) and nothing else that needs more. */
const CASES: Case[] = [
  { service: 'Registry', rpc: 'PushModel', run: ({ reg }) => codeOf(reg.push(model.bytes, { name: NAME })) },
  { service: 'Registry', rpc: 'PushModel', field: 'header.alias', run: ({ reg }) => codeOf(reg.push(model.bytes, { name: NAME, alias: 'pushed' })) },
  { service: 'Registry', rpc: 'SetAlias', run: ({ reg }) => codeOf(reg.setAlias(NAME, 1, 'staging')) },
  // Admitted: steps back, or FAILED_PRECONDITION once the alias has no previous target.
  { service: 'Registry', rpc: 'Rollback', run: ({ reg }) => codeOf(reg.rollback(NAME, 'staging')), admitted: ['OK', 'FAILED_PRECONDITION'] },
  { service: 'Registry', rpc: 'SetCanary', run: ({ reg }) => codeOf(reg.setCanary(NAME, 1, 10)) },
  { service: 'Registry', rpc: 'SetCanary', field: 'clear', run: ({ reg }) => codeOf(reg.clearCanary(NAME)) },
  { service: 'Registry', rpc: 'SetShadow', run: ({ reg }) => codeOf(reg.setShadow(NAME, 1, 5)) },
  { service: 'Registry', rpc: 'SetShadow', field: 'clear', run: ({ reg }) => codeOf(reg.clearShadow(NAME)) },
  {
    service: 'Registry',
    rpc: 'SetProbe',
    run: ({ reg }) => codeOf(reg.setProbe({ name: NAME, request: probeRequest, expected: [0], tolerance: 1, intervalMs: 3_600_000 })),
  },
  { service: 'Registry', rpc: 'SetProbe', field: 'clear', run: ({ reg }) => codeOf(reg.setProbe({ name: NAME }, true)) },
  // Admitted, then refused on its merits (no reference rows to gate on; one part; served versions): the role is checked first.
  { service: 'Registry', rpc: 'OptimizeModel', run: ({ reg }) => codeOf(reg.optimize({ name: NAME, version: 1, method: 'int8' })), admitted: ['FAILED_PRECONDITION'] },
  { service: 'Registry', rpc: 'OptimizeModel', field: 'force', run: ({ reg }) => codeOf(reg.optimize({ name: NAME, version: 1, method: 'int8', force: true })), admitted: ['FAILED_PRECONDITION'] },
  { service: 'Registry', rpc: 'ComposeModel', run: ({ reg }) => codeOf(reg.compose({ name: 'roles-ens', mode: 'ensemble', parts: [{ name: NAME, version: 1 }] })), admitted: ['INVALID_ARGUMENT'] },
  { service: 'Registry', rpc: 'SetTags', run: ({ reg }) => codeOf(reg.setTags(NAME, 1, { checked: 'yes' })) },
  { service: 'Registry', rpc: 'ArchiveVersion', run: ({ reg }) => codeOf(reg.archive(NAME, 2, true)) },
  { service: 'Registry', rpc: 'DeleteVersion', run: ({ reg }) => codeOf(reg.deleteVersion(NAME, 1)), admitted: ['FAILED_PRECONDITION'] },
  { service: 'Registry', rpc: 'ApplyRetention', run: ({ reg }) => codeOf(reg.retain({ name: NAME, keepLast: 5 })) },
  { service: 'Registry', rpc: 'ApplyRetention', field: 'delete', run: ({ reg }) => codeOf(reg.retain({ name: NAME, keepLast: 5, delete: true })) },
  // Sets the flag and clears it again in one case: later rows still find the model serving.
  { service: 'Registry', rpc: 'SetModelServing', run: ({ reg }) => codeOf(reg.setServing(NAME, false).then(() => reg.setServing(NAME, true))) },
  { service: 'Registry', rpc: 'CollectGarbage', run: ({ reg }) => codeOf(reg.collectGarbage({ dryRun: true })) },
  { service: 'Registry', rpc: 'ListModels', run: ({ reg }) => codeOf(reg.list()) },
  { service: 'Registry', rpc: 'GetModel', run: ({ reg }) => codeOf(reg.get(NAME)) },
  { service: 'Registry', rpc: 'GetHistory', run: ({ reg }) => codeOf(reg.history(NAME)) },
  { service: 'Registry', rpc: 'GetReference', run: ({ reg }) => codeOf(reg.getReference(NAME, 1)), admitted: ['NOT_FOUND'] },
  { service: 'Monitor', rpc: 'RecordOutcomes', run: ({ mon }) => codeOf(mon.recordOutcomes(NAME, [{ requestId: 'r-1', label: 1 }])) },
  { service: 'Monitor', rpc: 'GetModelStats', run: ({ mon }) => codeOf(mon.stats(NAME)), admitted: ['OK', 'NOT_FOUND'] },
  { service: 'Monitor', rpc: 'GetSlowRequests', run: ({ mon }) => codeOf(mon.slowRequests(NAME)), admitted: ['OK', 'NOT_FOUND'] },
  { service: 'Monitor', rpc: 'GetDrift', run: ({ mon }) => codeOf(mon.drift(NAME)), admitted: ['OK', 'NOT_FOUND'] },
  { service: 'Monitor', rpc: 'GetEvaluation', run: ({ mon }) => codeOf(mon.evaluation(NAME)), admitted: ['OK', 'NOT_FOUND'] },
  { service: 'Monitor', rpc: 'ListAlerts', run: ({ mon }) => codeOf(mon.alerts(NAME)) },
  { service: 'Monitor', rpc: 'WatchAlerts', run: ({ mon }) => watchCode(mon) },
  { service: 'Monitor', rpc: 'CompareVersions', run: ({ mon }) => codeOf(mon.compare({ name: NAME, versionA: 1, versionB: 2 })), admitted: ['OK', 'NOT_FOUND'] },
  { service: 'Monitor', rpc: 'ExportOutcomes', run: ({ mon }) => exportCode(mon), admitted: ['OK', 'NOT_FOUND'] },
];

/** The status an ExportOutcomes stream ends with. */
async function exportCode(mon: MonitorApi): Promise<string> {
  try {
    for await (const chunk of mon.exportOutcomes({ name: NAME, version: 0, sinceMs: 0 })) void chunk;
    return 'OK';
  } catch (err) {
    return codeOf(Promise.reject(err));
  }
}

/** What the documented table says `caller` gets for `c`: 'admitted', UNAUTHENTICATED or PERMISSION_DENIED. */
function expected(c: Case, caller: string): string {
  const row = (field: string | undefined) => DOCUMENTED.find(([s, r, f]) => s === c.service && r === c.rpc && f === field)![3];
  const needs = [row(undefined), ...(c.field ? [row(c.field)] : [])].filter((r) => r !== 'none');
  if (needs.length === 0) return 'admitted';
  const who = CALLERS[caller]!;
  if (!who.token || who.roles.length === 0) return 'UNAUTHENTICATED';
  return needs.every((r) => who.roles.includes(r) || who.roles.includes('admin')) ? 'admitted' : 'PERMISSION_DENIED';
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-roles-'));
  const tokensFile = path.join(dir, 'tokens');
  const lines = Object.entries(CALLERS)
    .filter(([name, c]) => c.token && name !== 'unknown')
    .map(([name, c]) => `${tokenHash(c.token!)} ${name} ${c.roles.join(',')}`);
  await writeFile(tokensFile, `${lines.join('\n')}\n`);
  nats = await startNats();
  const common = ['--nats', nats.url, '--host', '127.0.0.1', '--port', '0'];
  const env = { INFERMESH_TOKENS_FILE: tokensFile };
  registry = await startService('registry', common, env);
  registryAddr = `127.0.0.1:${registry.info.grpcPort}`;
  // No router: the probe set below is never due within the test (interval 1 h).
  monitor = await startService('monitor', [...common, '--metrics-port', '0', '--router-address', '127.0.0.1:1', '--registry-address', registryAddr], env);
  monitorAddr = `127.0.0.1:${monitor.info.grpcPort}`;
  // Version 1, in production and in `staging` (with a previous target for Rollback), by the admin.
  const { reg } = apis(CALLERS.admin!.token);
  await reg.push(model.bytes, { name: NAME, alias: 'production' });
  await reg.push(model.bytes, { name: NAME });
  await reg.setAlias(NAME, 2, 'staging');
  for (let i = 0; i < 4; i++) await reg.setAlias(NAME, (i % 2) + 1, 'staging');
});

afterAll(async () => {
  for (const c of opened) c.close();
  await Promise.all([registry?.stop(), monitor?.stop()]);
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('one role table', () => {
  it("the code's table is the documented one, and it has a row for every RPC of the registry and the monitor", () => {
    expect(MANAGEMENT_ROLES.map((r) => [r.service, r.rpc, r.field, r.role])).toEqual(DOCUMENTED);
    const rpcsOf = (def: Record<string, { path: string }>) => Object.values(def).map((m) => m.path.slice(m.path.lastIndexOf('/') + 1));
    for (const [service, def] of [
      ['Registry', RegistryService],
      ['Monitor', MonitorService],
    ] as const) {
      const inTable = MANAGEMENT_ROLES.filter((r) => r.service === service && !r.field).map((r) => r.rpc);
      expect(inTable.sort(), service).toEqual(rpcsOf(def).sort());
    }
    // And this file calls every row.
    expect(CASES.map((c) => [c.service, c.rpc, c.field])).toEqual(DOCUMENTED.map(([s, r, f]) => [s, r, f]));
  });
});

describe('every management RPC and state-changing field, with every role', () => {
  it('only the documented role passes: UNAUTHENTICATED without a known token, PERMISSION_DENIED with the wrong role', async () => {
    const got: string[] = [];
    const want: string[] = [];
    for (const c of CASES) {
      for (const caller of Object.keys(CALLERS)) {
        const code = await c.run(apis(CALLERS[caller]!.token));
        const e = expected(c, caller);
        const label = `${c.service}.${c.rpc}${c.field ? ` ${c.field}` : ''} as ${caller}`;
        // An admitted call ends with one of its codes, never an access code.
        want.push(`${label}: ${e === 'admitted' ? 'admitted' : e}`);
        got.push(`${label}: ${e === 'admitted' && (c.admitted ?? ['OK']).includes(code) ? 'admitted' : code}`);
      }
    }
    expect(got).toEqual(want);
  }, 60_000);

  it('a push token cannot move an alias by pushing: refused before anything is stored', async () => {
    const { reg } = apis(CALLERS.admin!.token);
    const before = await reg.get(NAME);
    expect(await codeOf(apis(CALLERS.push!.token).reg.push(model.bytes, { name: NAME, alias: 'production' }))).toBe('PERMISSION_DENIED');
    const after = await reg.get(NAME);
    expect(after.versions.length).toBe(before.versions.length);
    expect(after.traffic?.aliases.production).toBe(1);
    // The same push without the alias is the push role's to make.
    const v = await apis(CALLERS.push!.token).reg.push(model.bytes, { name: NAME });
    expect(v.version).toBe(before.versions.length + 1);
    expect((await reg.get(NAME)).traffic?.aliases.production).toBe(1);
  });
});

describe('history: every registry change, with actor and reason, in stream order', () => {
  it('`models canary --clear` and `models shadow --clear` show in `models history` with who and why', async () => {
    const g = ['--registry', registryAddr, '--token', CALLERS.promote!.token!];
    expect((await cli(['models', 'canary', NAME, '1', '--weight', '20', ...g])).code).toBe(0);
    const cleared = await cli(['models', 'canary', NAME, '--clear', '--reason', 'p99 too high', ...g]);
    expect(cleared.code, cleared.stderr).toBe(0);
    expect((await cli(['models', 'shadow', NAME, '2', '--percent', '5', ...g])).code).toBe(0);
    expect((await cli(['models', 'shadow', NAME, '--clear', ...g])).code).toBe(0);
    // Answered after the event was stored: no waiting.
    const h = await cli(['models', 'history', NAME, '--json', '--registry', registryAddr]);
    expect(h.code, h.stderr).toBe(0);
    const events = (JSON.parse(h.stdout) as { events: { kind: string; version: number; alias: string; reason: string; actor: string }[] }).events;
    const tail = events.slice(-4).map((e) => [e.kind, e.version, e.alias, e.reason, e.actor]);
    expect(tail).toEqual([
      ['canaried', 1, '', '20%', 'promote'],
      ['rolled_back', 1, 'canary', 'p99 too high', 'promote'],
      ['shadowed', 2, '', '5%', 'promote'],
      ['rolled_back', 2, 'shadow', 'shadow cleared', 'promote'],
    ]);
    const table = await cli(['models', 'history', NAME, '--registry', registryAddr]);
    expect(table.stdout).toMatch(/\s1\s+rolled_back\s+canary\s+-\s+p99 too high\s+promote\s*$/m);
  });

  it('every change names its actor and a reason (alias moves, rollbacks, probes included)', async () => {
    const events = await apis().reg.history(NAME);
    const changes = events.filter((e) => e.replicaId === '');
    const kinds = new Set(changes.map((e) => ModelEvent_Kind[e.kind]));
    for (const k of ['REGISTERED', 'PROMOTED', 'ROLLED_BACK', 'CANARIED', 'SHADOWED', 'PROBE_SET', 'PROBE_CLEARED']) expect(kinds, k).toContain(k);
    for (const e of changes) {
      expect(e.actor, ModelEvent_Kind[e.kind]).toMatch(/^(push|promote|pushPromote|admin)$/);
      if (e.kind !== ModelEvent_Kind.REGISTERED) expect(e.reason, ModelEvent_Kind[e.kind]).not.toBe('');
    }
  });

  it('history follows the stream sequence, not the events’ clocks', async () => {
    // An event stored late with an early time (as one retried from a publisher's outbox would be).
    let nc: NatsConnection | undefined;
    try {
      nc = await connect({ servers: nats.url });
      const old = ModelEvent.fromPartial({ name: NAME, version: 1, kind: ModelEvent_Kind.FAILED, replicaId: 'late-replica', reason: 'late', atMs: 1_000 });
      await nc.jetstream().publish(subjects.replicaEvents(NAME, 'late-replica'), ModelEvent.encode(old).finish());
    } finally {
      await nc?.drain();
    }
    await apis(CALLERS.promote!.token).reg.setAlias(NAME, 2, 'after-late', 0, 'ordering check');
    const events = await apis().reg.history(NAME);
    expect(events.slice(-2).map((e) => [e.reason, e.atMs < 10_000])).toEqual([
      ['late', true],
      ['ordering check', false],
    ]);
  });
});

describe('safe defaults off loopback', () => {
  it('a registry or monitor on a non-loopback --host without a tokens file refuses to start: one line naming the flags', async () => {
    for (const service of ['registry', 'monitor']) {
      // NATS is unreachable on purpose: the refusal comes before any connection (and before any bind).
      const r = await runService(service, ['--host', '0.0.0.0', '--port', '0', '--nats', 'nats://127.0.0.1:1']);
      expect(r.code, `${service}: ${r.out}`).not.toBe(0);
      expect(r.code, `${service}: ${r.out}`).not.toBeNull();
      const lines = r.out.trim().split('\n');
      expect(lines, service).toHaveLength(1);
      expect(lines[0]).toMatch(/--host 0\.0\.0\.0 is not a loopback address and no --tokens-file is set.*--insecure-management/);
      expect(r.out).not.toMatch(/\n\s+at /);
    }
  });
});
