/**
 * Service identity apart from client identity. Under mutual TLS one CA may
 * sign both the mesh's services and its scoring clients; a service is told
 * apart by a URI SAN in its certificate, `spiffe://infermesh/service/<name>`
 * (SPIFFE-style; the prefix is configurable with --tls-service-uri). APIs
 * that only the mesh itself may call (a replica's Runtime API) check the
 * peer certificate of each call; a client certificate, however valid, gets
 * PERMISSION_DENIED.
 */
import { X509Certificate } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { AuthContext } from '@grpc/grpc-js/build/src/auth-context.js';
import { ConfigError } from '../config/index.js';
import { PermissionDeniedError, toStatus } from '../errors/index.js';
import type { TlsMaterial } from './tls.js';

/** The default prefix of a service certificate's URI SAN; the service's name follows it. */
export const SERVICE_URI_PREFIX = 'spiffe://infermesh/service/';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * The service name in a certificate's subjectAltName (as Node writes it:
 * `DNS:a, IP Address:b, URI:spiffe://…`), or null when no URI SAN starts
 * with `prefix` followed by a name.
 */
export function serviceNameIn(subjectAltName: string | undefined, prefix: string = SERVICE_URI_PREFIX): string | null {
  if (!subjectAltName) return null;
  for (const part of subjectAltName.split(/,\s*/)) {
    if (!part.startsWith('URI:')) continue;
    const uri = part.slice(4).replace(/^"(.*)"$/, '$1');
    if (uri.startsWith(prefix) && NAME_RE.test(uri.slice(prefix.length))) return uri.slice(prefix.length);
  }
  return null;
}

/** The service name in this process's own certificate (`tls.cert`), or null. */
export function ownServiceName(tls: TlsMaterial | null, prefix: string = SERVICE_URI_PREFIX): string | null {
  if (!tls?.cert) return null;
  try {
    return serviceNameIn(new X509Certificate(tls.cert).subjectAltName, prefix);
  } catch {
    return null;
  }
}

/**
 * For a service that calls other services under mutual TLS (the router →
 * replicas): throws ConfigError naming `--tls-cert` when its certificate is
 * not a service certificate, since every such call would be refused.
 * Nothing to check without mutual TLS.
 */
export function requireServiceCertificate(tls: TlsMaterial | null, service: string, prefix: string = SERVICE_URI_PREFIX): void {
  if (!tls?.ca || ownServiceName(tls, prefix) !== null) return;
  throw new ConfigError(
    `--tls-cert (INFERMESH_TLS_CERT): the ${service}'s certificate has no URI SAN ${prefix}<name>; under mutual TLS replicas accept only service certificates (see --tls-service-uri)`,
  );
}

/** Checks the caller of one call; returns the service's name or throws PermissionDeniedError. */
export type PeerCheck = (call: { getAuthContext(): AuthContext | null }) => string;

/**
 * The check for APIs only the mesh's services may call: the peer's
 * certificate (verified by the TLS handshake) must carry a URI SAN starting
 * with `prefix`. Returns undefined when `tls` is not mutual TLS: without
 * client certificates nobody can be told apart, and a plaintext mesh on
 * loopback keeps accepting every caller.
 */
export function servicePeerCheck(tls: TlsMaterial | null, prefix: string = SERVICE_URI_PREFIX): PeerCheck | undefined {
  if (!tls?.ca) return undefined;
  return (call) => {
    const name = serviceNameIn(call.getAuthContext()?.sslPeerCertificate?.subjectaltname, prefix);
    if (name === null) throw new PermissionDeniedError(`only the mesh's services may call this API (a certificate with a URI SAN ${prefix}<name>); scoring clients call the router`);
    return name;
  };
}

type AnyCall = { getAuthContext(): AuthContext | null; emit(event: 'error', status: unknown): boolean };

/**
 * Puts `check` in front of a grpc-js handler (unary or streaming): a call it
 * refuses is answered PERMISSION_DENIED before the handler sees it. Without
 * a check the handler is returned as it is. The check runs once per call,
 * so a long-lived stream pays it once.
 */
export function peerGuarded<H extends (call: never, ...rest: never[]) => void>(handler: H, check: PeerCheck | undefined): H {
  if (!check) return handler;
  return ((call: AnyCall, ...rest: unknown[]) => {
    try {
      check(call);
    } catch (err) {
      const status = toStatus(err);
      const cb = rest[0];
      if (typeof cb === 'function') return void (cb as grpc.sendUnaryData<unknown>)(status);
      return void call.emit('error', status);
    }
    return (handler as unknown as (...a: unknown[]) => void)(call, ...rest);
  }) as unknown as H;
}
