/**
 * Case 8 — NATS down: serving continues from memory, registry writes answer
 * UNAVAILABLE, every client reconnects, changes made after recovery apply,
 * and lifecycle events raised during the outage are stored once NATS is back.
 */
import * as grpc from '@grpc/grpc-js';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventPublisher, EVENTS_STREAM, ensureEventStream } from '../../libs/bus/index.js';
import { createLogger } from '../../libs/log/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent, ModelEvent_Kind } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

let mesh: Mesh;
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }];

beforeAll(async () => {
  mesh = await startMesh({ replicas: 2 });
  const reg = mesh.clients.registry;
  await reg.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 1 }).bytes, { name: 'm', alias: 'production' });
  await reg.push(mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 2 }).bytes, { name: 'm' });
  await mesh.waitReady('m');
  await mesh.waitReady('m', '2');
});
// The callers' loop, stopped by the test, or here should the test fail or time out first.
let stop = false;
afterAll(async () => {
  stop = true;
  await mesh?.stop();
});

describe('NATS outage', () => {
  it('serving continues, writes are UNAVAILABLE, and changes after recovery apply', async () => {
    const failures: string[] = [];
    let ok = 0;
    const caller = async () => {
      while (!stop) {
        try {
          await mesh.clients.router.infer('m', input, { timeoutMs: 2000 });
          ok++;
        } catch (e) {
          failures.push(`${grpc.status[(e as grpc.ServiceError).code]}`);
        }
      }
    };
    const callers = Array.from({ length: 4 }, caller);
    await mesh.nats.down();
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = Date.now();
    const write = await mesh.clients.registry.setAlias('m', 2).then(
      () => 0,
      (e: grpc.ServiceError) => e.code,
    );
    expect(write).toBe(grpc.status.UNAVAILABLE);
    expect(Date.now() - t0).toBeLessThan(11_000);
    // Down well past the replicas' heartbeat TTL (10 s): routers keep serving from memory.
    await new Promise((r) => setTimeout(r, 11_000));
    const okDuringOutage = ok;
    await mesh.nats.up();
    let promoted = false;
    for (let i = 0; i < 100 && !promoted; i++) {
      promoted = await mesh.clients.registry.setAlias('m', 2).then(
        () => true,
        () => false,
      );
      if (!promoted) await new Promise((r) => setTimeout(r, 200));
    }
    expect(promoted).toBe(true);
    let served = '1';
    for (let i = 0; i < 200 && served !== '2'; i++) {
      served = (await mesh.clients.router.infer('m', input)).response.modelVersion;
      if (served !== '2') await new Promise((r) => setTimeout(r, 50));
    }
    stop = true;
    await Promise.all(callers);
    expect(served).toBe('2');
    expect(failures).toEqual([]);
    expect(okDuringOutage).toBeGreaterThan(100);
  }, 60_000);

  it('events raised while NATS is down are stored, in order, once it is back', async () => {
    const nc = await connect({ servers: mesh.nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    await ensureEventStream(nc);
    const pub = new EventPublisher(nc, 'test', createLogger('test', 'silent'));
    await mesh.nats.down();
    const results = [];
    for (let v = 101; v <= 105; v++) results.push(await pub.publish({ name: 'outage', version: v, kind: ModelEvent_Kind.READY }));
    expect(results.every((r) => r === false)).toBe(true);
    expect(pub.backlog).toBe(5);
    await mesh.nats.up();
    for (let i = 0; i < 100 && pub.backlog > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(pub.backlog).toBe(0);
    const jsm = await nc.jetstreamManager();
    const versions: number[] = [];
    const info = await jsm.streams.info(EVENTS_STREAM, { subjects_filter: 'infermesh.events.model.outage' });
    expect(info.state.subjects?.['infermesh.events.model.outage']).toBe(5);
    const consumer = await nc.jetstream().consumers.get(EVENTS_STREAM, { filterSubjects: 'infermesh.events.model.outage' });
    for await (const m of await consumer.fetch({ max_messages: 5, expires: 3000 })) {
      versions.push(ModelEvent.decode(m.data).version);
      if (m.info.pending === 0) break;
    }
    expect(versions).toEqual([101, 102, 103, 104, 105]);
    pub.close();
    await nc.close();
  }, 60_000);
});
