/**
 * NATS least privilege under `infermesh up` defaults: the mesh is started the
 * way users start it (node dist/services/cli/main.js up, its own process
 * group, every port 0), so the nats-server config, users and permissions
 * tested are the ones `up` generates. A client without credentials cannot
 * connect; with the router's credentials it cannot write the models bucket
 * nor publish a lifecycle event; with the monitor's it cannot move an alias;
 * with a replica's it publishes its own lifecycle steps only (never on the
 * registry's subject nor another replica's, and a registry kind on its own
 * subject is shown neither by history nor by the monitor); the mesh still
 * serves (push, promote, infer, monitor stats, history) with no permission
 * violation by any service, and `status` shows the routers' view of each replica.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { connect, ErrorCode, type NatsConnection, type NatsError, type Status } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUCKET_MODELS, EVENTS_STREAM, isReplicaKind, keys, subjects } from '../../libs/bus/index.js';
import { InferenceApi, MonitorApi, RegistryApi } from '../../libs/client/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent, ModelEvent_Kind } from '../../libs/proto/index.js';
import { natsInboxPrefix, prepareNatsAuth } from '../../services/cli/nats-auth.js';
import { CLI, cli, json } from '../cli/run-cli.js';

const NAME = 'authm';
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [0.5, -1, 0.25, 2] }];
/** Every test connection's name starts with this, so the server's violation log lines can be told apart. */
const TEST_CLIENT = 'nats-auth-test';

let root: string;
let dir: string;
let up: ChildProcess;
let upExit: Promise<number | null>;
let upStderr = '';
let mesh: { router: string; registry: string; monitor: string; metrics: string; nats: string; replicas: string[]; pids: number[] };
let users: Record<string, string>;
let admin: NatsConnection;
const opened: NatsConnection[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, ok: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await Promise.resolve().then(ok).catch(() => false)) return;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms\nup's stderr:\n${upStderr}`);
    await sleep(50);
  }
}

/** A connection as `user` (with that user's inbox, as the service has), watching the server's errors. */
async function as(user: string): Promise<{ nc: NatsConnection; errors: Status[] }> {
  const nc = await connect({ servers: mesh.nats, name: `${TEST_CLIENT}-${user}`, user, pass: users[user], inboxPrefix: natsInboxPrefix(user), reconnect: false });
  opened.push(nc);
  const errors: Status[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') errors.push(s);
  })();
  return { nc, errors };
}

/** The rejection of `p` (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<NatsError> {
  try {
    await p;
  } catch (err) {
    return err as NatsError;
  }
  throw new Error('expected a rejection');
}

/** A sample of the monitor's Prometheus text (`name{labels}`), undefined when absent. */
async function monitorMetric(name: string, labels: string): Promise<number | undefined> {
  const text = await (await fetch(`http://${mesh.metrics}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Publish violations the server sent `errors` for `subject`. */
const publishViolations = (errors: Status[], subject: string) =>
  errors.filter((s) => s.data === ErrorCode.PermissionsViolation && s.permissionContext?.operation === 'publish' && s.permissionContext.subject === subject);

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'infermesh-nats-auth-'));
  dir = path.join(root, 'mesh');
  const zero = ['--nats-port', '--router-port', '--rest-port', '--registry-port', '--monitor-port', '--metrics-port', '--inference-port'].flatMap((f) => [f, '0']);
  up = spawn(process.execPath, [CLI, 'up', '--dir', dir, '--replicas', '2', ...zero, '--json'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  upExit = new Promise((resolve) => up.once('exit', (code) => resolve(code)));
  up.stderr!.on('data', (b: Buffer) => (upStderr += b.toString()));
  mesh = await new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`up not ready within 60 s\n${upStderr}`)), 60_000);
    up.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (!out.includes('\n')) return;
      clearTimeout(t);
      resolve(JSON.parse(out.slice(0, out.indexOf('\n'))));
    });
    void upExit.then((code) => reject(new Error(`up exited (${code})\n${upStderr}`)));
  });
  users = (JSON.parse(await readFile(path.join(dir, 'nats-auth', 'credentials.json'), 'utf8')) as { users: Record<string, string> }).users;
  admin = (await as('admin')).nc;
}, 90_000);

afterAll(async () => {
  await Promise.all(opened.map((nc) => nc.close().catch(() => undefined)));
  if (up && up.exitCode === null && up.signalCode === null) {
    try {
      process.kill(-up.pid!, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  if (root) await rm(root, { recursive: true, force: true });
});

describe('NATS under infermesh up', () => {
  it('keeps credentials private: owner-only files, in children environments, never on a command line', async () => {
    expect(statSync(path.join(dir, 'nats-auth')).mode & 0o777).toBe(0o700);
    for (const f of ['credentials.json', 'nats-server.conf']) expect(statSync(path.join(dir, 'nats-auth', f)).mode & 0o777, f).toBe(0o600);
    expect(Object.keys(users).sort()).toEqual(['admin', 'inference-1', 'inference-2', 'monitor', 'registry', 'router']);
    const byUser = new Map<string, string>();
    for (const pid of mesh.pids) {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      for (const password of Object.values(users)) expect(cmdline).not.toContain(password);
      if (/nats-server\0/.test(cmdline)) {
        // nats-server itself: its users come from the config file.
        expect(cmdline.split('\0')).toContain(path.join(dir, 'nats-auth', 'nats-server.conf'));
        continue;
      }
      const env = new Map(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      const user = env.get('INFERMESH_NATS_USER')!;
      expect(env.get('INFERMESH_NATS_PASSWORD')).toBe(users[user]);
      expect(env.get('INFERMESH_NATS_INBOX_PREFIX')).toBe(`_INBOX.${user}`);
      byUser.set(user, cmdline);
    }
    expect([...byUser.keys()].sort()).toEqual(['inference-1', 'inference-2', 'monitor', 'registry', 'router']);
  });

  it('refuses a client without credentials, and one with a wrong password', async () => {
    const none = await rejection(connect({ servers: mesh.nats, name: TEST_CLIENT, reconnect: false }));
    expect(none.code).toBe(ErrorCode.AuthorizationViolation);
    const wrong = await rejection(connect({ servers: mesh.nats, name: TEST_CLIENT, user: 'router', pass: `${users.router}x`, reconnect: false }));
    expect(wrong.code).toBe(ErrorCode.AuthorizationViolation);
  });

  it('still serves: push, promote, infer, monitor stats and history with auth on', async () => {
    const registry = new RegistryApi(mesh.registry, 30_000);
    const router = new InferenceApi(mesh.router, 5_000);
    const monitor = new MonitorApi(mesh.monitor, 5_000);
    try {
      await registry.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 31 }).bytes, { name: NAME, alias: 'production' });
      await registry.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 32 }).bytes, { name: NAME });
      await until('version 2 ready at the router', () => router.modelReady(NAME, '2'));
      await registry.setAlias(NAME, 2);
      await until('production is version 2 at the router', async () => (await router.infer(NAME, input)).response.modelVersion === '2');
      for (let i = 0; i < 20; i++) expect((await router.infer(NAME, input)).outputs[0]!.data).toHaveLength(1);
      await until('the monitor counts the requests', async () => ((await monitor.stats(NAME)).find((s) => s.version === 2)?.requests ?? 0) >= 20);
      const history = await registry.history(NAME);
      const kinds = history.map((e) => `${e.version}:${ModelEvent_Kind[e.kind]}`);
      expect(kinds).toEqual(expect.arrayContaining(['1:REGISTERED', '2:REGISTERED', '2:LOADING', '2:READY', '2:PROMOTED']));
      // The replicas' steps come from their own subjects, each with its replica id; the registry's without one.
      for (const e of history) expect(e.replicaId, ModelEvent_Kind[e.kind]).toMatch(isReplicaKind(e.kind) ? /^inference-[12]$/ : /^$/);
      // And they reach the monitor's event feed too (counted live, by kind).
      await until('the monitor counts the replicas’ ready events', async () => ((await monitorMetric('infermesh_model_events_total', `model="${NAME}",kind="ready"`)) ?? 0) >= 2);
    } finally {
      registry.close();
      router.close();
      monitor.close();
    }
  });

  it("a replica's credentials publish its own lifecycle steps only: a forged promotion is refused, or shown nowhere", async () => {
    const event = (kind: ModelEvent_Kind, replicaId: string, version = 1) =>
      ModelEvent.encode(ModelEvent.fromPartial({ name: NAME, version, kind, alias: 'production', replicaId, actor: replicaId, reason: 'forged', atMs: Date.now() })).finish();
    const { nc, errors } = await as('inference-1');
    const js = nc.jetstream();
    // The registry's subject: refused, through JetStream and plain publish alike.
    const registrySubject = subjects.events(NAME);
    const refused = await rejection(js.publish(registrySubject, event(ModelEvent_Kind.PROMOTED, 'inference-1')));
    expect(refused.permissionContext).toMatchObject({ operation: 'publish', subject: registrySubject });
    // Another replica's subject: refused.
    const otherSubject = subjects.replicaEvents(NAME, 'inference-2');
    expect((await rejection(js.publish(otherSubject, event(ModelEvent_Kind.FAILED, 'inference-2')))).permissionContext).toMatchObject({ operation: 'publish', subject: otherSubject });
    nc.publish(registrySubject, event(ModelEvent_Kind.PROMOTED, 'inference-1'));
    await nc.flush();
    await until('the server reports the plain publish', () => publishViolations(errors, registrySubject).length >= 2);

    // Its own subject is open to it, but readers keep only a replica's steps there, under its own id:
    // a registry kind (promoted) and a step claiming another replica are stored and shown nowhere.
    const badBefore = (await monitorMetric('infermesh_monitor_bad_messages_total', 'source="events"')) ?? 0;
    const promotedBefore = (await monitorMetric('infermesh_model_events_total', `model="${NAME}",kind="promoted"`)) ?? 0;
    const own = subjects.replicaEvents(NAME, 'inference-1');
    expect((await js.publish(own, event(ModelEvent_Kind.PROMOTED, 'inference-1'))).seq).toBeGreaterThan(0);
    expect((await js.publish(own, event(ModelEvent_Kind.FAILED, 'inference-2', 99))).seq).toBeGreaterThan(0);
    await until('the monitor drops both', async () => (await monitorMetric('infermesh_monitor_bad_messages_total', 'source="events"')) === badBefore + 2);
    expect((await monitorMetric('infermesh_model_events_total', `model="${NAME}",kind="promoted"`)) ?? 0).toBe(promotedBefore);
    const history = json(await cli(['models', 'history', NAME, '--registry', mesh.registry, '--json']));
    const shown = JSON.stringify(history);
    expect(shown).not.toContain('forged');
    expect(shown).toContain('"ready"');
    // The CLI's view and the registry's answer agree: no promotion by a replica, no version 99.
    const registry = new RegistryApi(mesh.registry, 5_000);
    try {
      const events = await registry.history(NAME);
      expect(events.filter((e) => e.reason === 'forged' || e.version === 99)).toEqual([]);
      expect(events.some((e) => e.kind === ModelEvent_Kind.PROMOTED && e.actor !== 'inference-1')).toBe(true);
    } finally {
      registry.close();
    }
  });

  it("status shows the routers' view of each replica (ROUTER VIEW: ready) and exits 0", async () => {
    const s = json(await cli(['status', '--dir', dir, '--json']));
    expect(s.healthy).toBe(true);
    const replicas = (s.processes as { name: string; routerView: { ready: boolean | null; reason: string } | null }[]).filter((p) => p.name.startsWith('inference-'));
    expect(replicas.map((p) => [p.name, p.routerView?.ready, p.routerView?.reason])).toEqual([
      ['inference-1', true, ''],
      ['inference-2', true, ''],
    ]);
    const table = await cli(['status', '--dir', dir]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^NAME\s+PID\s+STATE\s+UPTIME\s+RESTARTS\s+PORT\s+LAST EXIT\s+ROUTER VIEW$/m);
    expect(table.stdout).toMatch(/^inference-1\s.*\s-\s+ready$/m);
    expect(table.stdout).toMatch(/^router\s.*\s-\s+-$/m);
  });

  it("the router's credentials cannot write the models bucket (the registry's, used the same way, can)", async () => {
    const key = keys.traffic(NAME);
    const adminKv = await admin.jetstream().views.kv(BUCKET_MODELS);
    const before = (await adminKv.get(key))!;
    expect(before.value.byteLength).toBeGreaterThan(0);

    const { nc } = await as('router');
    const kv = await nc.jetstream().views.kv(BUCKET_MODELS);
    // Reading is allowed: the router routes by this key.
    expect((await kv.get(key))!.revision).toBe(before.revision);
    const err = await rejection(kv.put(key, new Uint8Array([1, 2, 3])));
    expect(err.code).toBe(ErrorCode.PermissionsViolation);
    expect(err.permissionContext).toMatchObject({ operation: 'publish', subject: `$KV.${BUCKET_MODELS}.${key}` });
    expect(await rejection(kv.delete(key))).toMatchObject({ code: ErrorCode.PermissionsViolation });
    // Nor delete or purge the bucket's stream.
    const jsm = await nc.jetstreamManager();
    expect(await rejection(jsm.streams.purge(`KV_${BUCKET_MODELS}`))).toMatchObject({ code: ErrorCode.PermissionsViolation });
    expect(await rejection(jsm.streams.delete(`KV_${BUCKET_MODELS}`))).toMatchObject({ code: ErrorCode.PermissionsViolation });
    expect((await adminKv.get(key))!.revision).toBe(before.revision);

    // Control: the same put with the registry's credentials (same bytes, so nothing changes for the mesh) is stored.
    const reg = await as('registry');
    const regKv = await reg.nc.jetstream().views.kv(BUCKET_MODELS);
    const rev = await regKv.put(key, before.value);
    expect(rev).toBeGreaterThan(before.revision);
    expect((await adminKv.get(key))!.revision).toBe(rev);
  });

  it("the router's credentials cannot publish a lifecycle event, nor read other services' inboxes", async () => {
    const subject = subjects.events(NAME);
    const control = subjects.events('authctl');
    const seen: string[] = [];
    const sub = admin.subscribe('infermesh.events.model.*', { callback: (_e, m) => seen.push(m.subject) });
    await admin.flush();
    const jsm = await admin.jetstreamManager();
    const stored = async (s: string) => (await jsm.streams.info(EVENTS_STREAM, { subjects_filter: s })).state.subjects?.[s] ?? 0;
    const storedBefore = await stored(subject);
    const forged = ModelEvent.encode(ModelEvent.fromPartial({ name: NAME, version: 1, kind: ModelEvent_Kind.PROMOTED, alias: 'production', actor: 'forged', atMs: Date.now() })).finish();

    const { nc, errors } = await as('router');
    nc.publish(subject, forged);
    await nc.flush();
    // Stored events go through JetStream: that request is refused too.
    const viaJs = await rejection(nc.jetstream().publish(subject, forged));
    expect(viaJs.permissionContext).toMatchObject({ operation: 'publish', subject });
    // Subscribing to every inbox would show it the replies and deliveries meant for the other services.
    nc.subscribe('_INBOX.>');
    await nc.flush();
    await until('the server reports the violations', () => publishViolations(errors, subject).length >= 2 && errors.some((s) => s.permissionContext?.operation === 'subscription'));

    // Control: the registry's credentials publish the same way, and the admin subscriber sees it.
    const reg = await as('registry');
    reg.nc.publish(control, forged);
    await reg.nc.flush();
    await until('the control event arrives', () => seen.includes(control));
    expect(publishViolations(reg.errors, control)).toEqual([]);

    expect(seen).not.toContain(subject);
    expect(await stored(subject)).toBe(storedBefore);
    const registry = new RegistryApi(mesh.registry, 5_000);
    try {
      expect((await registry.history(NAME)).filter((e) => e.actor === 'forged')).toEqual([]);
    } finally {
      registry.close();
    }
    sub.unsubscribe();
  });

  it("the monitor's credentials cannot move an alias", async () => {
    const key = keys.traffic(NAME);
    const adminKv = await admin.jetstream().views.kv(BUCKET_MODELS);
    const before = (await adminKv.get(key))!;
    const { nc } = await as('monitor');
    const kv = await nc.jetstream().views.kv(BUCKET_MODELS);
    const err = await rejection(kv.put(key, new Uint8Array(0)));
    expect(err.code).toBe(ErrorCode.PermissionsViolation);
    expect(err.permissionContext).toMatchObject({ operation: 'publish', subject: `$KV.${BUCKET_MODELS}.${key}` });
    expect((await adminKv.get(key))!.revision).toBe(before.revision);
    const router = new InferenceApi(mesh.router, 5_000);
    try {
      expect((await router.infer(NAME, input)).response.modelVersion).toBe('2');
    } finally {
      router.close();
    }
  });

  it('no service hit a permission violation, and Ctrl-C stops the mesh', async () => {
    const log = readFileSync(path.join(dir, 'logs', 'nats.log'), 'utf8');
    const violations = log.split('\n').filter((l) => /Violation/i.test(l));
    // This file's own attempts, and only those.
    expect(violations.length).toBeGreaterThan(0);
    expect(violations.filter((l) => !l.includes(`nats.js:${TEST_CLIENT}`))).toEqual([]);
    process.kill(-up.pid!, 'SIGINT');
    expect(await upExit).toBe(0);
  });
});

describe('credentials on disk', () => {
  it('are generated once and reused; more replicas add users and keep the others', async () => {
    const d = await mkdtemp(path.join(os.tmpdir(), 'infermesh-nats-creds-'));
    try {
      const first = await prepareNatsAuth(d, 1);
      const again = await prepareNatsAuth(d, 3);
      expect(Object.keys(first.users).sort()).toEqual(['admin', 'inference-1', 'monitor', 'registry', 'router']);
      for (const [u, p] of Object.entries(first.users)) expect(again.users[u], u).toBe(p);
      expect(again.users['inference-3']).toMatch(/^[A-Za-z0-9_-]{32}$/);
      expect(new Set(Object.values(again.users)).size).toBe(Object.keys(again.users).length);
      expect(readFileSync(again.configFile, 'utf8')).toContain(`user: "inference-3", password: "${again.users['inference-3']}"`);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
