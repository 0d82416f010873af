import { connectivityState } from '@grpc/grpc-js';
import { diagnoseTls, type TlsMaterial } from '../../libs/grpc/index.js';
import type { Logger } from '../../libs/log/index.js';
import type { ReplicaConn } from './replica-conn.js';

export interface ReplicaTrustOptions {
  /** The router's client TLS material toward replicas; null = plaintext (then only a replica that speaks TLS is caught). */
  tls: TlsMaterial | null;
  /** Name expected in the replicas' certificates instead of their host ('' = the host). */
  serverName: string;
  log: Logger;
  /** Called when a replica starts or stops failing TLS (the routing table rebuilds). */
  onChange: () => void;
}

/**
 * Replicas the router cannot reach because TLS fails between them (an
 * untrusted, expired or misnamed replica certificate, or a replica that
 * refuses the router's own). Such a replica is not ready for routing,
 * ModelReady or health; the failure is logged once per failure streak with
 * the peer and the reason, and counted. grpc-js says only "Failed to
 * connect" for several of these, so each streak is diagnosed with one TLS
 * handshake of our own (libs/grpc diagnoseTls).
 */
export class ReplicaTrust {
  /** Failure streaks so far (a replica that started failing TLS), for the router's metrics. */
  failures = 0;
  private readonly failing = new Map<ReplicaConn, string>();
  private readonly diagnosing = new Set<ReplicaConn>();

  constructor(private readonly o: ReplicaTrustOptions) {}

  /** True while the router cannot verify `conn` over TLS. */
  isFailing(conn: ReplicaConn): boolean {
    return this.failing.size > 0 && this.failing.has(conn);
  }

  /** Why the router cannot verify `conn` over TLS now (e.g. `certificate signed by unknown authority`); undefined when it can. */
  failureOf(conn: ReplicaConn): string | undefined {
    return this.failing.get(conn);
  }

  /** Replicas currently failing TLS. */
  failingCount(): number {
    return this.failing.size;
  }

  /** Follows `conn`'s channel until it shuts down: a failed connection is diagnosed, a ready one clears the mark. */
  watch(conn: ReplicaConn): void {
    const channel = conn.channel;
    const follow = (seen: connectivityState) => {
      // A link found down gets a new channel (a new connection): follow that one.
      if (seen === connectivityState.SHUTDOWN) return !conn.isClosed && conn.channel !== channel ? this.watch(conn) : this.forget(conn);
      channel.watchConnectivityState(seen, Infinity, () => {
        const now = channel.getConnectivityState(false);
        if (now === connectivityState.READY) this.verified(conn);
        else if (now === connectivityState.TRANSIENT_FAILURE) void this.diagnose(conn);
        follow(now);
      });
    };
    follow(channel.getConnectivityState(false));
  }

  private async diagnose(conn: ReplicaConn): Promise<void> {
    if (this.failing.has(conn) || this.diagnosing.has(conn)) return;
    this.diagnosing.add(conn);
    try {
      const f = await diagnoseTls({ address: conn.address, tls: this.o.tls, serverName: this.o.serverName });
      const state = conn.channel.getConnectivityState(false);
      if (!f || state === connectivityState.READY || state === connectivityState.SHUTDOWN) return;
      this.failing.set(conn, f.reason);
      this.failures++;
      this.o.log.error({ replica: conn.id, address: conn.address, reason: f.reason, kind: f.kind }, `replica ${conn.address}: TLS: ${f.reason}`);
      this.o.onChange();
    } finally {
      this.diagnosing.delete(conn);
    }
  }

  private verified(conn: ReplicaConn): void {
    if (!this.failing.delete(conn)) return;
    this.o.log.info({ replica: conn.id, address: conn.address }, `replica ${conn.address}: TLS verified, back in rotation`);
    this.o.onChange();
  }

  private forget(conn: ReplicaConn): void {
    this.failing.delete(conn);
  }
}
