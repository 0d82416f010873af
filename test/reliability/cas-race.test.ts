/**
 * Two operators move the same alias at the same moment, both believing it
 * points where it does (same expected_version): compare-and-set lets exactly
 * one through and answers the other ABORTED, every time.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryApi } from '../../libs/client/index.js';
import { call } from '../../libs/grpc/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { startNats, type NatsHandle } from '../harness/nats.js';
import { startService, type ServiceProc } from '../harness/mesh.js';
import { alive, outcome } from './helpers.js';

let nats: NatsHandle;
let registry: ServiceProc;
let alice: RegistryApi;
let bob: RegistryApi;

beforeAll(async () => {
  nats = await startNats();
  registry = await startService('registry', ['--nats', nats.url, '--host', '127.0.0.1', '--port', '0']);
  const addr = `127.0.0.1:${registry.info.grpcPort}`;
  // Two operators: separate clients, separate connections.
  alice = new RegistryApi(addr);
  bob = new RegistryApi(addr);
  for (const seed of [41, 42, 43]) await alice.push(mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed }).bytes, { name: 'risk' });
  await alice.setAlias('risk', 1);
});
afterAll(async () => {
  alice?.close();
  bob?.close();
  await registry?.stop();
  await nats?.stop();
});

/** SetAlias through the generated RegistryClient, with expected_version set. */
const move = (op: RegistryApi, version: number, expectedVersion: number) =>
  outcome(call(op.client.setAlias, op.client, { name: 'risk', alias: 'production', version, expectedVersion, reason: '' }, { timeoutMs: 10_000 }));

describe('alias compare-and-set race', () => {
  it('20 rounds: in each exactly one of two concurrent moves succeeds, the other is ABORTED', async () => {
    let current = 1;
    for (let round = 0; round < 20; round++) {
      const [a, b] = [1, 2, 3].filter((v) => v !== current) as [number, number];
      // Both requests leave in the same event-loop turn, with the same expectation.
      const [ra, rb] = await Promise.all([move(alice, a, current), move(bob, b, current)]);
      const codes = [grpc.status[ra.code], grpc.status[rb.code]].sort();
      expect(codes, `round ${round}: ${ra.details} / ${rb.details}`).toEqual(['ABORTED', 'OK']);
      const winner = ra.code === grpc.status.OK ? a : b;
      const info = await alice.get('risk');
      expect(info.traffic?.aliases.production, `round ${round}`).toBe(winner);
      current = winner;
    }
    expect(alive(registry)).toBe(true);
  });
});
