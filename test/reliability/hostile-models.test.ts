/**
 * Hostile model files at push: the registry refuses each with the reason,
 * stores nothing (no version, no artifact, no event), stays up, and still
 * accepts a good model afterwards.
 */
import * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryApi } from '../../libs/client/index.js';
import { BUCKET_ARTIFACTS, subjects } from '../../libs/bus/index.js';
import { customOpModel, externalDataModel, mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent } from '../../libs/proto/index.js';
import { startNats, type NatsHandle } from '../harness/nats.js';
import { startService, type ServiceProc } from '../harness/mesh.js';
import { alive, outcome } from './helpers.js';

const MAX_MODEL_BYTES = 32 * 1024;
let nats: NatsHandle;
let registry: ServiceProc;
let api: RegistryApi;
let nc: NatsConnection;
const events: ModelEvent[] = [];
const good = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 35 });

const artifacts = async () => (await (await nc.jetstream().views.os(BUCKET_ARTIFACTS)).list()).map((o) => o.name).sort();

beforeAll(async () => {
  nats = await startNats();
  registry = await startService('registry', ['--nats', nats.url, '--host', '127.0.0.1', '--port', '0', '--max-model-bytes', String(MAX_MODEL_BYTES)]);
  api = new RegistryApi(`127.0.0.1:${registry.info.grpcPort}`);
  nc = await connect({ servers: nats.url });
  const sub = nc.subscribe(subjects.allEvents);
  void (async () => {
    for await (const m of sub) events.push(ModelEvent.decode(m.data));
  })();
  await api.push(good.bytes, { name: 'good', alias: 'production' });
});
afterAll(async () => {
  api?.close();
  await nc?.close();
  await registry?.stop();
  await nats?.stop();
});

describe('hostile models at push', () => {
  it('each is refused with the reason and nothing is stored', async () => {
    const listBefore = await api.list();
    const artifactsBefore = await artifacts();
    const cases: [string, Uint8Array, string][] = [
      ['not ONNX', Buffer.from('MZ\x90\x00 this is a Windows executable, not a model'), 'INVALID_ARGUMENT'],
      ['truncated valid model (first half)', good.bytes.subarray(0, Math.floor(good.bytes.byteLength / 2)), 'INVALID_ARGUMENT'],
      ['external data, absolute path', externalDataModel('/etc/passwd').bytes, 'INVALID_ARGUMENT'],
      ['external data, .. path', externalDataModel('../../../etc/shadow').bytes, 'INVALID_ARGUMENT'],
      ['external data, through a directory link', externalDataModel('link/w.bin').bytes, 'INVALID_ARGUMENT'],
      ['custom op domain', customOpModel().bytes, 'INVALID_ARGUMENT'],
      ['over --max-model-bytes', mlpModel({ inputs: 64, hidden: [256], outputs: 1 }).bytes, 'RESOURCE_EXHAUSTED'],
    ];
    for (const [what, bytes, want] of cases) {
      for (const name of ['good', 'hostile']) {
        const o = await outcome(api.push(bytes, { name, alias: 'production' }));
        expect(grpc.status[o.code], `${what} as ${name}: ${o.details}`).toBe(want);
        // The reason is given, without paths or stack frames from the registry's host.
        if (want === 'INVALID_ARGUMENT') expect(o.details, what).toMatch(/^model: ./);
        expect(o.details, what).not.toMatch(/\/work\/|\/tmp\/|\bat .*\.js:\d+/);
      }
      expect(alive(registry), `${what}: registry alive`).toBe(true);
    }
    expect(cases[6]![1].byteLength).toBeGreaterThan(MAX_MODEL_BYTES);
    expect(await api.list()).toEqual(listBefore);
    expect((await outcome(api.get('hostile'))).code).toBe(grpc.status.NOT_FOUND);
    expect(await artifacts()).toEqual(artifactsBefore);
    await new Promise((r) => setTimeout(r, 200));
    expect(events.filter((e) => e.name === 'hostile')).toEqual([]);
    expect(events.filter((e) => e.name === 'good').map((e) => e.version)).toEqual([1, 1]); // REGISTERED, PROMOTED of v1
  });

  it('the registry stays up and still accepts a good model', async () => {
    expect(alive(registry)).toBe(true);
    const v2 = await api.push(good.bytes, { name: 'good' });
    expect(v2.version).toBe(2);
    const other = await api.push(mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 36 }).bytes, { name: 'fresh' });
    expect(other.version).toBe(1);
    expect((await api.list()).map((m) => m.name)).toEqual(['fresh', 'good']);
    expect((await api.get('good')).traffic?.aliases).toEqual({ production: 1 });
  });
});
