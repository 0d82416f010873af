/**
 * The CLI's `remote()`: a call that never reached its service is reported as
 * unreachable (with the address and the flag), but a service that was reached
 * and answered DEADLINE_EXCEEDED (or timed out while working) is reported as
 * that answer, not as "is the mesh running?" or a TLS mismatch. Real grpc-js
 * servers and a closed port on loopback.
 */
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { Status } from '../../libs/errors/index.js';
import { CliError, describeError, remote } from '../../services/cli/output.js';

const METHOD = '/test.Slow/Call';
const identity = (b: Buffer): Buffer => b;
const servers: grpc.Server[] = [];
const clients: grpc.Client[] = [];

/** A server whose one method either never answers or answers DEADLINE_EXCEEDED itself. */
async function serve(answer: 'never' | 'deadline'): Promise<string> {
  const server = new grpc.Server();
  server.register(METHOD, (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
    if (answer === 'deadline') cb({ code: Status.DEADLINE_EXCEEDED, details: 'Deadline exceeded' });
  }, identity, identity, 'unary');
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  servers.push(server);
  return `127.0.0.1:${port}`;
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<string> {
  const s = net.createServer();
  const port = await new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port)));
  await new Promise((resolve) => s.close(resolve));
  return `127.0.0.1:${port}`;
}

function call(address: string, timeoutMs: number): Promise<Buffer> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  clients.push(client);
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(METHOD, identity, identity, Buffer.alloc(1), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res!))),
  );
}

afterAll(() => {
  for (const c of clients) c.close();
  for (const s of servers) s.forceShutdown();
});

describe('remote(): unreachable or answered', () => {
  it('a reached service that times out is DEADLINE_EXCEEDED as it was, not "cannot reach"', async () => {
    const address = await serve('never');
    const err = await remote('registry', address, () => call(address, 300)).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(CliError);
    const { line } = describeError(err);
    expect(line).toMatch(/^error: DEADLINE_EXCEEDED: /);
    expect(line).not.toMatch(/cannot reach|mesh running|TLS/);
  });

  it('a service answering DEADLINE_EXCEEDED itself is reported as its answer', async () => {
    const address = await serve('deadline');
    const err = await remote('monitor', address, () => call(address, 5_000)).catch((e: unknown) => e);
    expect(describeError(err).line).toBe('error: DEADLINE_EXCEEDED: Deadline exceeded');
  });

  it('a closed port is unreachable, with the address and the flag to change it', async () => {
    const address = await closedPort();
    const err = await remote('registry', address, () => call(address, 300)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(describeError(err).line).toMatch(new RegExp(`cannot reach the registry at ${address.replace(/\./g, '\\.')} .*--registry ADDR`));
  });
});
