/**
 * The router's replica link under a silent cut, without network namespaces
 * (so it runs unprivileged): a real ReplicaConn talks gRPC over loopback to a
 * stand-in replica through a TCP proxy that can black-hole its connections —
 * bytes dropped, nothing closed, like a host whose link went down. Connections
 * black-holed stay so after the heal (as a TCP connection in retransmission
 * backoff would for seconds); new ones pass.
 *
 * Must hold, for the grpc-js link and the raw HTTP/2 link: requests pending on
 * a cut link are answered UNAVAILABLE (retryable) within ~1 s, not at their
 * deadline; the replica is out of rotation at once and new requests to it fail
 * at once; another replica on the same host is held only until it answers a
 * probe; after the heal the link comes back on a new connection and serves; a
 * replica that is merely slow (answers after 1.5 s) is never taken out; an
 * idle link (nothing pending) is probed too, and found down without a call.
 */
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MeshError, Status } from '../../libs/errors/index.js';
import { createLogger } from '../../libs/log/index.js';
import { RequestFrame, ResponseFrame, RuntimeService } from '../../libs/proto/index.js';
import { ReplicaConn } from '../../services/router/replica-conn.js';

const log = createLogger('router', 'error');
const identity = (b: Buffer) => b;
const until = async (what: string, ok: () => boolean, ms: number) => {
  const by = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > by) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** A stand-in replica: Runtime.Infer answers each request with 'ok' after `delayMs` (no health service: Check is UNIMPLEMENTED, still an answer). */
async function standIn(): Promise<{ port: number; delayMs: number; close(): void }> {
  const server = new grpc.Server();
  const state = { port: 0, delayMs: 0, close: () => server.forceShutdown() };
  const def = { infer: { ...RuntimeService.infer, requestDeserialize: identity, responseSerialize: identity } } as unknown as grpc.ServiceDefinition;
  server.addService(def, {
    infer: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (buf: Buffer) => {
        for (const it of RequestFrame.decode(buf).items) {
          if (it.cancel) continue;
          const answer = () => call.write(Buffer.from(ResponseFrame.encode({ items: [{ id: it.id, code: 0, message: '', response: Buffer.from('ok'), queueMicros: 0, computeMicros: 0 }] }).finish()));
          if (state.delayMs) setTimeout(answer, state.delayMs);
          else answer();
        }
      });
      call.on('error', () => undefined);
      call.on('end', () => call.end());
    },
  });
  state.port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return state;
}

/** A TCP proxy to `port` that can black-hole: cut() drops every byte of the connections open then, for good, and of those accepted while cut. */
async function proxy(port: number): Promise<{ port: number; accepted: number; cut(): void; heal(): void; close(): void }> {
  const conns = new Set<{ dead: boolean; sockets: net.Socket[] }>();
  const p = {
    port: 0,
    accepted: 0,
    cutNow: false,
    cut() {
      this.cutNow = true;
      for (const c of conns) c.dead = true;
    },
    heal() {
      this.cutNow = false;
    },
    close() {
      srv.close();
      for (const c of conns) for (const s of c.sockets) s.destroy();
    },
  };
  const srv = net.createServer((a) => {
    p.accepted++;
    const c = { dead: p.cutNow, sockets: [a] };
    conns.add(c);
    a.on('error', () => undefined);
    if (c.dead) return;
    const b = net.connect(port, '127.0.0.1');
    c.sockets.push(b);
    b.on('error', () => undefined);
    a.on('data', (d) => c.dead || b.write(d));
    b.on('data', (d) => c.dead || a.write(d));
    // Black-holed: the peer's close does not travel either.
    a.on('close', () => c.dead || b.destroy());
    b.on('close', () => c.dead || a.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  p.port = (srv.address() as net.AddressInfo).port;
  return p;
}

/** Sends one request on `conn`; resolves with its answer and how long it took. */
function infer(conn: ReplicaConn, timeoutMs = 5_000): Promise<{ result: Uint8Array | MeshError; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    conn.send('m', 1, timeoutMs * 1000, '', Buffer.from('req'), 0, { replied: (result) => resolve({ result, ms: performance.now() - t0 }) });
  });
}
const codeOf = (r: Uint8Array | MeshError) => (r instanceof MeshError ? r.code : Status.OK);

let replica: Awaited<ReturnType<typeof standIn>>;
beforeAll(async () => {
  replica = await standIn();
});
afterAll(() => replica?.close());

describe.each([
  ['grpc-js link', false],
  ['raw HTTP/2 link', true],
])('a replica link cut silently (%s)', (_, raw) => {
  it('answers pending requests UNAVAILABLE within ~1 s, holds the host, comes back on a new connection after the heal', async () => {
    const px = await proxy(replica.port);
    const cut = new ReplicaConn('r-cut', `127.0.0.1:${px.port}`, 1 << 20, log, undefined, '', raw);
    const mate = new ReplicaConn('r-mate', `127.0.0.1:${replica.port}`, 1 << 20, log, undefined, '', raw);
    try {
      expect(codeOf((await infer(cut)).result)).toBe(Status.OK);
      expect(codeOf((await infer(mate)).result)).toBe(Status.OK);
      const before = px.accepted;
      px.cut();
      const lost = await Promise.all([infer(cut), infer(cut), infer(cut)]);
      // Answered in the same turn as the link went down: the replica beside it on the host is held for its probe.
      expect(mate.heldForProbe).toBe(true);
      for (const l of lost) {
        expect(codeOf(l.result)).toBe(Status.UNAVAILABLE);
        // QUIET_MS 200 + PROBE_TIMEOUT_MS 600 + sweeps; the deadline was 5 s.
        expect(l.ms).toBeLessThan(1_500);
      }
      expect(cut.unreachable).toBe(true);
      expect(cut.ejected(performance.now())).toBe(true);
      // Down: a new request is refused at once, not sent into the void.
      const refused = await infer(cut);
      expect([codeOf(refused.result), refused.ms < 50]).toEqual([Status.UNAVAILABLE, true]);
      // The replica beside it on the same host answered its probe: back in rotation, never down.
      await until('the host mate answers its probe', () => !mate.ejected(performance.now()), 1_000);
      expect(mate.unreachable).toBe(false);
      expect(codeOf((await infer(mate)).result)).toBe(Status.OK);
      // Still cut after 2 s: attempts on new connections (black-holed too) keep it out.
      await new Promise((r) => setTimeout(r, 2_000));
      expect(cut.unreachable).toBe(true);
      expect(px.accepted).toBeGreaterThan(before);
      const healedAt = performance.now();
      px.heal();
      await until('the link comes back', () => !cut.unreachable, 3_000);
      const backMs = performance.now() - healedAt;
      const r = await infer(cut);
      expect(codeOf(r.result)).toBe(Status.OK);
      console.log(`link-liveness (${raw ? 'raw' : 'grpc-js'}): pending answered UNAVAILABLE after ${lost.map((l) => l.ms.toFixed(0)).join(', ')} ms; back ${backMs.toFixed(0)} ms after the heal; ${px.accepted - before} new connections tried`);
    } finally {
      cut.close();
      mate.close();
      px.close();
    }
  });

  it('an idle link is probed too: a replica cut off with nothing pending is out of rotation before any call is sent to it', async () => {
    const px = await proxy(replica.port);
    const idle = new ReplicaConn('r-idle', `127.0.0.1:${px.port}`, 1 << 20, log, undefined, '', raw);
    try {
      expect(codeOf((await infer(idle)).result)).toBe(Status.OK);
      // Idle and healthy: its probes are answered and it stays in rotation.
      await new Promise((r) => setTimeout(r, 1_500));
      expect([idle.unreachable, idle.ejected(performance.now())]).toEqual([false, false]);
      const cutAt = performance.now();
      px.cut();
      await until('the idle link is found down', () => idle.unreachable, 3_000);
      // IDLE_PROBE_MS 1,000 + PROBE_TIMEOUT_MS 600 + sweeps, with no call sent.
      expect(performance.now() - cutAt).toBeLessThan(2_000);
      px.heal();
      await until('the link is back on a new connection', () => !idle.unreachable, 5_000);
      expect(codeOf((await infer(idle)).result)).toBe(Status.OK);
    } finally {
      idle.close();
      px.close();
    }
  });

  it('a slow replica (answers after 1.5 s) answers its probes and is never taken out', async () => {
    const conn = new ReplicaConn('r-slow', `127.0.0.1:${replica.port}`, 1 << 20, log, undefined, '', raw);
    replica.delayMs = 1_500;
    try {
      const rs = await Promise.all([infer(conn), infer(conn)]);
      for (const r of rs) expect(codeOf(r.result)).toBe(Status.OK);
      expect(conn.unreachable).toBe(false);
      expect(conn.ejected(performance.now())).toBe(false);
    } finally {
      replica.delayMs = 0;
      conn.close();
    }
  });
});
