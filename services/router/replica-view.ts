/**
 * The router's management view of its replicas, `GET /v2/replicas` on its
 * REST port: each replica it knows (from their heartbeats), whether it sends
 * work there now and, when not, why — a certificate it cannot verify, a
 * replica that drains, one ejected for timing out, one it cannot reach.
 * `infermesh status` shows it per replica process.
 *
 * It names replica ids and addresses, which callers never see elsewhere, so
 * it answers only to peers on loopback (`infermesh status` beside `up`,
 * `kubectl port-forward`, `kubectl exec`); others get 403.
 */
import { connectivityState } from '@grpc/grpc-js';
import type http from 'node:http';
import { HttpError } from './rest-json.js';
import type { RoutingTable } from './routing-table.js';

// Type aliases (not interfaces): the REST answer's JSON type takes them as they are.
export type ReplicaViewEntry = {
  /** The replica's id (its heartbeat key). */
  id: string;
  /** Where the router reaches it. */
  address: string;
  /** True when the router sends it work now. */
  ready: boolean;
  /** Why not, '' when ready: `TLS: <reason>`, `draining`, `unreachable: reconnecting` (its link did not answer a probe), `held: …` (a moment, until it answers a probe), `ejected after repeated timeouts`, `cannot connect`. */
  reason: string;
  /** Out of rotation: for timing out repeatedly, or unreachable. */
  ejected: boolean;
  /** Requests sent to it and not yet answered. */
  inFlight: number;
  /** The gRPC channel's state: idle, connecting, ready, transient_failure, shutdown. */
  connection: string;
};

export type ReplicaView = {
  replicas: ReplicaViewEntry[];
};

const CONNECTION: Record<number, string> = {
  [connectivityState.IDLE]: 'idle',
  [connectivityState.CONNECTING]: 'connecting',
  [connectivityState.READY]: 'ready',
  [connectivityState.TRANSIENT_FAILURE]: 'transient_failure',
  [connectivityState.SHUTDOWN]: 'shutdown',
};

/** Each replica `table` knows, sorted by id. */
export function replicaView(table: RoutingTable, now = performance.now()): ReplicaView {
  const replicas = table.replicaEntries().map(({ rec, conn, tlsFailure }): ReplicaViewEntry => {
    const state = conn.channel.getConnectivityState(false);
    const ejected = conn.ejected(now);
    // The first reason that keeps work away, in the order an operator fixes them.
    const reason =
      tlsFailure !== undefined
        ? `TLS: ${tlsFailure}`
        : !rec.accepting
          ? 'draining'
          : conn.unreachable
            ? 'unreachable: reconnecting'
            : conn.heldForProbe
              ? 'held: a replica on its host is unreachable, probing'
              : ejected
                ? 'ejected after repeated timeouts'
                : state === connectivityState.TRANSIENT_FAILURE
                  ? 'cannot connect'
                  : '';
    return { id: rec.id, address: rec.address, ready: reason === '', reason, ejected, inFlight: conn.outstanding, connection: CONNECTION[state] ?? 'unknown' };
  });
  return { replicas: replicas.sort((a, b) => a.id.localeCompare(b.id)) };
}

/** True when the request comes from this host (127.0.0.0/8, ::1, or either mapped). */
function fromLoopback(req: http.IncomingMessage): boolean {
  const a = req.socket.remoteAddress ?? '';
  return a === '::1' || a.startsWith('127.') || a.startsWith('::ffff:127.');
}

/** The REST answer of GET /v2/replicas: 200 with the view, 403 to a peer off loopback. */
export function replicaViewAnswer(table: RoutingTable, req: http.IncomingMessage): [number, ReplicaView] {
  if (!fromLoopback(req)) throw new HttpError(403, 'replicas: this view answers only on the router\'s own host (loopback)');
  return [200, replicaView(table)];
}
