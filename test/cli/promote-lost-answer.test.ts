/**
 * `models promote` and `models rollback` when the registry's answer is lost
 * (DEADLINE_EXCEEDED, or UNAVAILABLE "may or may not have been stored": a
 * NATS leader election mid-write). The CLI reads the alias again and reports
 * what happened: moved (confirmed after the lost answer, exit 0) or not moved
 * (exit 1, naming where the alias still points). A stand-in registry over real
 * gRPC decides per call whether the move lands before the answer is lost.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryService, TrafficRecord, type ModelInfo } from '../../libs/proto/index.js';
import { cli } from './run-cli.js';

let server: grpc.Server;
let address = '';
let production = 1;
let history: number[] = [];
/** What the next alias move does: land and lose the answer, or not land and lose it. */
let mode: { apply: boolean; status: grpc.status; details: string } = { apply: true, status: grpc.status.UNAVAILABLE, details: '' };
let reads = 0;

const info = (): ModelInfo => ({
  name: 'risk',
  versions: [],
  traffic: TrafficRecord.fromPartial({ name: 'risk', aliases: { production }, history: { production: { versions: [...history] } } }),
});

beforeAll(async () => {
  server = new grpc.Server();
  const fail = (cb: grpc.sendUnaryData<ModelInfo>) => cb({ code: mode.status, details: mode.details } as grpc.ServiceError);
  server.addService(RegistryService as unknown as grpc.ServiceDefinition, {
    getModel: (_call: grpc.ServerUnaryCall<unknown, ModelInfo>, cb: grpc.sendUnaryData<ModelInfo>) => {
      reads++;
      cb(null, info());
    },
    setAlias: (call: grpc.ServerUnaryCall<{ version: number; expectedVersion: number }, ModelInfo>, cb: grpc.sendUnaryData<ModelInfo>) => {
      if (mode.apply && call.request.expectedVersion === production) {
        history.push(production);
        production = call.request.version;
      }
      fail(cb);
    },
    rollback: (_call: grpc.ServerUnaryCall<unknown, ModelInfo>, cb: grpc.sendUnaryData<ModelInfo>) => {
      if (mode.apply && history.length) production = history.pop()!;
      fail(cb);
    },
  } as unknown as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  address = `127.0.0.1:${port}`;
});

afterAll(() => {
  server?.forceShutdown();
});

describe('alias moves whose answer was lost', () => {
  it('promote: the move landed, the answer was lost (UNAVAILABLE, fate unknown): reported promoted, confirmed', async () => {
    production = 1;
    history = [];
    mode = { apply: true, status: grpc.status.UNAVAILABLE, details: 'model storage unavailable: the change may or may not have been stored; read the model again before retrying' };
    const r = await cli(['models', 'promote', 'risk', '2', '--registry', address]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('risk: production → 2 (was 1) — promoted (confirmed after a lost answer: UNAVAILABLE');
    const j = await cli(['models', 'promote', 'risk', '3', '--registry', address, '--json']);
    expect(j.code, j.stderr).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ name: 'risk', alias: 'production', version: 3, previous: 2, confirmedAfterLostAnswer: expect.stringMatching(/^UNAVAILABLE/) });
  });

  it('promote: the move did not land, the answer was lost (DEADLINE_EXCEEDED): reported not promoted, where the alias points', async () => {
    production = 1;
    history = [];
    mode = { apply: false, status: grpc.status.DEADLINE_EXCEEDED, details: 'deadline exceeded' };
    const before = reads;
    const r = await cli(['models', 'promote', 'risk', '2', '--registry', address]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('risk: production not promoted: the registry\'s answer was lost (DEADLINE_EXCEEDED');
    expect(r.stderr).toContain('production still points at version 1');
    // Read before the move and once again after the lost answer.
    expect(reads - before).toBe(2);
    expect(production).toBe(1);
  });

  it('promote: any other failure is reported as it is, without a second read', async () => {
    production = 1;
    mode = { apply: false, status: grpc.status.ABORTED, details: 'alias production of risk points to 3, not 1' };
    const before = reads;
    const r = await cli(['models', 'promote', 'risk', '2', '--registry', address]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('points to 3, not 1');
    expect(r.stderr).not.toContain('answer was lost');
    expect(reads - before).toBe(1);
  });

  it('rollback: landed with the answer lost is confirmed; not landed is reported not rolled back', async () => {
    production = 2;
    history = [1];
    mode = { apply: true, status: grpc.status.UNAVAILABLE, details: 'model storage unavailable: the change may or may not have been stored' };
    const ok = await cli(['models', 'rollback', 'risk', '--registry', address]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('risk: production → 1 (was 2) — rolled back (confirmed after a lost answer: UNAVAILABLE');
    production = 2;
    history = [1];
    mode = { apply: false, status: grpc.status.UNAVAILABLE, details: 'model storage unavailable' };
    const no = await cli(['models', 'rollback', 'risk', '--registry', address]);
    expect(no.code).toBe(1);
    expect(no.stderr).toContain('risk: production not rolled back: the registry\'s answer was lost (UNAVAILABLE');
    expect(no.stderr).toContain('production still points at version 2');
  });
});
