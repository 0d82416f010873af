/**
 * The registry as a real process against a real nats-server: validation at
 * push, versions, content-addressed artifacts, aliases, lifecycle events.
 */
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryApi } from '../../libs/client/index.js';
import { BUCKET_ARTIFACTS, subjects } from '../../libs/bus/index.js';
import { brokenModel, customOpModel, externalDataModel, mlpModel, twoInOutModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent, ModelEvent_Kind } from '../../libs/proto/index.js';
import { startNats, type NatsHandle } from '../harness/nats.js';
import { startService, type ServiceProc } from '../harness/mesh.js';

let nats: NatsHandle;
let registry: ServiceProc;
let api: RegistryApi;
let nc: NatsConnection;
const events: ModelEvent[] = [];
const MAX = 64 * 1024;

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => ({ code: 0, details: '' }),
    (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
  );

beforeAll(async () => {
  nats = await startNats();
  registry = await startService('registry', ['--nats', nats.url, '--port', '0', '--max-model-bytes', String(MAX)]);
  api = new RegistryApi(`127.0.0.1:${registry.info.grpcPort}`);
  nc = await connect({ servers: nats.url });
  const sub = nc.subscribe(subjects.allEvents);
  void (async () => {
    for await (const m of sub) events.push(ModelEvent.decode(m.data));
  })();
});
afterAll(async () => {
  api?.close();
  await nc?.close();
  await registry?.stop();
  await nats?.stop();
});

describe('push', () => {
  it('validates, stores by SHA-256, reads the signature, numbers versions, dedupes artifacts', async () => {
    const m = mlpModel({ inputs: 4, hidden: [8], outputs: 2 });
    const sha = createHash('sha256').update(m.bytes).digest('hex');
    const v1 = await api.push(m.bytes, { name: 'alpha', description: 'first' });
    expect(v1).toMatchObject({ name: 'alpha', version: 1, sha256: sha, sizeBytes: m.bytes.byteLength, batchable: true, description: 'first' });
    expect(v1.inputs).toEqual([{ name: 'features', datatype: 'FP32', shape: [-1, 4] }]);
    expect(v1.outputs).toEqual([{ name: 'score', datatype: 'FP32', shape: [-1, 2] }]);
    const v2 = await api.push(m.bytes, { name: 'alpha' });
    expect(v2.version).toBe(2);
    expect(v2.sha256).toBe(sha);
    const objects = await (await nc.jetstream().views.os(BUCKET_ARTIFACTS)).list();
    expect(objects.filter((o) => o.name === sha)).toHaveLength(1);
    const t = twoInOutModel();
    const other = await api.push(t.bytes, { name: 'beta', alias: 'production' });
    expect(other.version).toBe(1);
    expect(other.inputs.map((i) => i.datatype)).toEqual(['FP32', 'INT64']);
  });

  it('refuses hostile or broken models with the reason, storing nothing', async () => {
    const cases: [string, Uint8Array, string][] = [
      ['not onnx', Buffer.from('definitely not a model, just text'), 'not an ONNX model'],
      ['unknown op', brokenModel({ reason: 'unknown-op' }).bytes, 'ONNX Runtime cannot load it'],
      ['type mismatch', brokenModel({ reason: 'type-mismatch' }).bytes, 'ONNX Runtime cannot load it'],
      ['custom op domain', customOpModel().bytes, 'com.evil'],
      ['external data ..', externalDataModel('../../etc/passwd').bytes, 'external data'],
      ['external data absolute', externalDataModel('/etc/passwd').bytes, 'external data'],
    ];
    for (const [what, bytes, reason] of cases) {
      const r = await codeOf(api.push(bytes, { name: 'hostile' }));
      expect(r.code, what).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.details, what).toContain('model:');
      expect(r.details, what).toContain(reason);
      expect(r.details, what).not.toMatch(/\/work|\/tmp|at .*\.js/);
    }
    expect((await codeOf(api.get('hostile'))).code).toBe(grpc.status.NOT_FOUND);
    expect((await api.list()).map((m) => m.name)).not.toContain('hostile');
  });

  it('oversized models → RESOURCE_EXHAUSTED', async () => {
    const big = mlpModel({ inputs: 64, hidden: [256], outputs: 1 });
    expect(big.bytes.byteLength).toBeGreaterThan(MAX);
    expect((await codeOf(api.push(big.bytes, { name: 'big' }))).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });

  it('bad names and a missing header → INVALID_ARGUMENT naming the field', async () => {
    const m = mlpModel({ inputs: 2, hidden: [2], outputs: 1 });
    for (const name of ['', '../x', '/etc/passwd', 'a/b', 'a.b', '*', '>', 'A']) {
      const r = await codeOf(api.push(m.bytes, { name }));
      expect(r.code, name).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.details.startsWith('header.name:'), name).toBe(true);
    }
    const r = await codeOf(api.push(m.bytes, { name: 'ok', alias: 'a.b' }));
    expect(r.details.startsWith('header.alias:')).toBe(true);
    const noHeader = await codeOf(
      new Promise((resolve, reject) => {
        const s = api.client.pushModel((err, res) => (err ? reject(err) : resolve(res)));
        s.write({ part: { $case: 'chunk', value: m.bytes } });
        s.end();
      }),
    );
    expect(noHeader.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(noHeader.details.startsWith('header:')).toBe(true);
    expect((await codeOf(api.push(new Uint8Array(0), { name: 'empty' }))).code).toBe(grpc.status.INVALID_ARGUMENT);
  });
});

describe('aliases', () => {
  it('sets, moves with history, and refuses unknown targets and stale expectations', async () => {
    const a = await api.setAlias('alpha', 1);
    expect(a.traffic?.aliases).toEqual({ production: 1 });
    const b = await api.setAlias('alpha', 2);
    expect(b.traffic?.aliases.production).toBe(2);
    expect(b.traffic?.history.production?.versions).toEqual([1]);
    const staging = await api.setAlias('alpha', 1, 'staging');
    expect(staging.traffic?.aliases).toEqual({ production: 2, staging: 1 });
    expect((await codeOf(api.setAlias('alpha', 9))).code).toBe(grpc.status.NOT_FOUND);
    expect((await codeOf(api.setAlias('nope', 1))).code).toBe(grpc.status.NOT_FOUND);
    expect((await codeOf(api.setAlias('alpha', 1, 'Bad.Alias'))).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await codeOf(api.setAlias('alpha', 0))).code).toBe(grpc.status.INVALID_ARGUMENT);
    // Optimistic locking: the caller believes production is at 1, but it is at 2.
    expect((await codeOf(api.setAlias('alpha', 1, 'production', 1))).code).toBe(grpc.status.ABORTED);
    expect((await api.setAlias('alpha', 1, 'production', 2)).traffic?.aliases.production).toBe(1);
  });

  it('list and show return versions and traffic', async () => {
    const models = await api.list();
    expect(models.map((m) => m.name)).toEqual(['alpha', 'beta']);
    const alpha = await api.get('alpha');
    expect(alpha.versions.map((v) => v.version)).toEqual([1, 2]);
    expect(alpha.traffic?.aliases.production).toBe(1);
    expect((await codeOf(api.get('a.b'))).code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('published lifecycle events for each change, one version id through them', async () => {
    await new Promise((r) => setTimeout(r, 200));
    const alpha = events.filter((e) => e.name === 'alpha');
    expect(alpha.filter((e) => e.kind === ModelEvent_Kind.REGISTERED).map((e) => e.version)).toEqual([1, 2]);
    const promoted = alpha.filter((e) => e.kind === ModelEvent_Kind.PROMOTED).map((e) => [e.alias, e.version]);
    expect(promoted).toEqual([
      ['production', 1],
      ['production', 2],
      ['staging', 1],
      ['production', 1],
    ]);
    expect(events.some((e) => e.name === 'hostile')).toBe(false);
  });
});
