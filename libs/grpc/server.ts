import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import path from 'node:path';
import { PROTO_DIR } from '../proto/index.js';

export interface ServerOptions {
  /** Largest message accepted or sent; larger ones get RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
}

/** Keepalive settings shared by every server and client of the mesh (they must agree). */
export const KEEPALIVE = {
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  'grpc.http2.max_pings_without_data': 0,
} as const;

/** A grpc-js server with the mesh's message-size and keepalive settings. */
export function createGrpcServer(o: ServerOptions): grpc.Server {
  return new grpc.Server({
    'grpc.max_receive_message_length': o.maxMessageBytes,
    'grpc.max_send_message_length': o.maxMessageBytes,
    'grpc.max_concurrent_streams': 1000,
    ...KEEPALIVE,
    'grpc.keepalive_min_time_ms': 10_000,
  } as grpc.ServerOptions);
}

let bindLogQuieted = false;

/**
 * grpc-js writes its own "E No address added…" line on stderr for a failed
 * bind, before the error that {@link listen} rejects with (and the service
 * prints as its one start-up line); every other grpc-js log line stays.
 */
function quietFailedBindLog(): void {
  if (bindLogQuieted) return;
  bindLogQuieted = true;
  const error = console.error.bind(console);
  grpc.setLogger({ ...console, error: (...args: unknown[]) => (typeof args[0] === 'string' && args[0].includes('No address added') ? undefined : error(...args)) });
}

/**
 * Binds `host:port` (port 0 = any free port) with `credentials` (plaintext
 * unless given; see serverCredentials in tls.ts) and returns the bound port.
 * Rejects with one line naming the address and the flags (`cannot listen on
 * 127.0.0.1:8500 (--host, --port): address already in use`).
 */
export function listen(server: grpc.Server, host: string, port: number, credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure()): Promise<number> {
  const target = host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
  quietFailedBindLog();
  return new Promise((resolve, reject) => {
    server.bindAsync(target, credentials, (err, bound) => {
      if (!err) return resolve(bound);
      // "No address added out of total 1 resolved errors: [listen EADDRINUSE: address already in use 127.0.0.1:8500]"
      const why = /errors: \[(?:listen \w+: )?([^\]]*?)(?: [\d.:[\]a-f]+)?\]/.exec(err.message)?.[1] ?? err.message;
      reject(new Error(`cannot listen on ${target} (--host, --port): ${why}`, { cause: err }));
    });
  });
}

/**
 * Stops a server: graceful shutdown for at most `graceMs`, then force.
 * grpc-js's tryShutdown has no timeout and can hang (grpc-node #1458, #3068).
 */
export function shutdownServer(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    timer.unref();
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The health service's view: overall ("") and per gRPC service status. */
export interface Health {
  set(status: ServingStatus, service?: string): void;
}

/**
 * Adds `grpc.health.v1.Health` and server reflection (v1 and v1alpha) for
 * the given proto files (relative to proto/) to `server`.
 */
export function addHealthAndReflection(server: grpc.Server, protoFiles: readonly string[], services: readonly string[]): Health {
  const health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(services.map((s) => [s, 'NOT_SERVING'])) });
  health.addToServer(server);
  const pkg = protoLoader.loadSync([...protoFiles.map((f) => path.join(PROTO_DIR, f)), healthProtoPath], {
    includeDirs: [PROTO_DIR, path.dirname(healthProtoPath)],
    keepCase: true,
  });
  new ReflectionService(pkg).addToServer(server);
  return {
    set(status, service) {
      if (service !== undefined) return health.setStatus(service, status);
      health.setStatus('', status);
      for (const s of services) health.setStatus(s, status);
    },
  };
}
