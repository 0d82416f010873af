/**
 * The router's raw link bounds what a replica sends like what a caller
 * sends: a Runtime stream answering with a message prefix past the link's
 * limit (2 GiB declared) or a compressed one breaks that link at the prefix,
 * before anything is allocated for it; the requests in flight on it are
 * answered UNAVAILABLE (so the request path retries elsewhere) and the
 * router lives on. A real ReplicaConn against a real HTTP/2 server on loopback.
 */
import http2 from 'node:http2';
import { afterAll, describe, expect, it } from 'vitest';
import { MeshError, Status } from '../../libs/errors/index.js';
import { createLogger } from '../../libs/log/index.js';
import { RuntimeService } from '../../libs/proto/index.js';
import { ReplicaConn } from '../../services/router/replica-conn.js';

const log = createLogger('router', 'error');
const servers: http2.Http2Server[] = [];
const conns: ReplicaConn[] = [];

/** A "replica" whose Runtime stream answers every frame with `prefix` and a few bytes of body. */
async function hostileReplica(prefix: Buffer): Promise<string> {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    if (headers[':path'] !== RuntimeService.infer.path) return stream.respond({ ':status': 404 }, { endStream: true });
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    stream.on('data', () => {
      if (!stream.destroyed) stream.write(Buffer.concat([prefix, Buffer.alloc(64, 7)]));
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as { port: number }).port}`;
}

function prefix(flag: number, length: number): Buffer {
  const b = Buffer.alloc(5);
  b[0] = flag;
  b.writeUInt32BE(length, 1);
  return b;
}

afterAll(() => {
  for (const c of conns) c.close();
  for (const s of servers) s.close();
});

describe('the router\'s raw link: a replica\'s message prefix is bounded', () => {
  for (const [what, p] of [
    ['2 GiB declared', prefix(0, 2 ** 31)],
    ['over the limit by one byte', prefix(0, (1 << 20) + 64 * 1024 + 1)],
    ['compressed', prefix(1, 10)],
  ] as const) {
    it(`${what}: the link breaks, the request in flight is answered UNAVAILABLE, nothing is allocated for it`, async () => {
      const address = await hostileReplica(p);
      const conn = new ReplicaConn(`r-${conns.length}`, address, 1 << 20, log, undefined, '', true);
      conns.push(conn);
      const rssBefore = process.memoryUsage().rss;
      const answer = await new Promise<Uint8Array | MeshError>((resolve) => {
        conn.send('m', 1, 2_000_000, '', Uint8Array.from([1, 2, 3]), 0, { replied: (r) => resolve(r) });
      });
      expect(answer).toBeInstanceOf(MeshError);
      expect((answer as MeshError).code).toBe(Status.UNAVAILABLE);
      expect((answer as MeshError).message).not.toMatch(/r-\d|127\.0\.0\.1/);
      expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 << 20);
    });
  }
});
