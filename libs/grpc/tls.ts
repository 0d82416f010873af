/**
 * TLS for the mesh's gRPC listeners and clients. Certificates are read once,
 * at start-up; a file that cannot be read stops start-up naming the flag.
 * A certificate that has expired or is not yet valid stops start-up too.
 * A listener given a certificate and key speaks TLS; given a CA as well, it
 * also requires every client to present a certificate signed by that CA
 * (mutual TLS). A service then uses its own certificate as its client
 * certificate when it calls another service.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../config/index.js';
import { certificateTimeProblem } from './tls-diagnosis.js';

/** PEM bytes; each part may be absent. */
export interface TlsMaterial {
  /** Certificate chain (server certificate, or client certificate for mTLS). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** CA that signs the peers' certificates; on a listener it turns on mutual TLS. */
  readonly ca?: Buffer;
}

/** Paths of the PEM files ('' = not given), with the flag or variable each came from for messages. */
export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

const NAMES: TlsFiles = { cert: '--tls-cert (INFERMESH_TLS_CERT)', key: '--tls-key (INFERMESH_TLS_KEY)', ca: '--tls-ca (INFERMESH_TLS_CA)' };

function readPem(path: string, name: string, kind: 'CERTIFICATE' | 'PRIVATE KEY'): Buffer {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${name}=${JSON.stringify(path)}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!b.includes('-----BEGIN ')) throw new ConfigError(`${name}=${JSON.stringify(path)}: not a PEM file`);
  if (!b.includes(kind === 'CERTIFICATE' ? '-----BEGIN CERTIFICATE-----' : 'PRIVATE KEY-----')) {
    throw new ConfigError(`${name}=${JSON.stringify(path)}: holds no ${kind === 'CERTIFICATE' ? 'certificate' : 'private key'}`);
  }
  return b;
}

/** A certificate that is expired or not yet valid stops start-up naming the flag: every peer would refuse it. */
function readCert(path: string, name: string): Buffer {
  const b = readPem(path, name, 'CERTIFICATE');
  const t = certificateTimeProblem(b);
  if (t) throw new ConfigError(`${name}=${JSON.stringify(path)}: TLS: the certificate ${t.problem === 'expired' ? `expired at ${t.at}` : `is not valid before ${t.at}`}`);
  return b;
}

/**
 * Reads a listener's TLS files. Returns null when none is given (plaintext).
 * Throws ConfigError naming the flag when only one of cert and key is given,
 * a CA comes without them, or a file cannot be read.
 */
export function readServerTls(files: TlsFiles, names: TlsFiles = NAMES): TlsMaterial | null {
  if (!files.cert && !files.key && !files.ca) return null;
  if (!files.cert && !files.key) throw new ConfigError(`${names.ca}: needs ${names.cert} and ${names.key} (a listener needs its own certificate)`);
  if (!files.key) throw new ConfigError(`${names.key}: required with ${names.cert}`);
  if (!files.cert) throw new ConfigError(`${names.cert}: required with ${names.key}`);
  return checked({ cert: readCert(files.cert, names.cert), key: readPem(files.key, names.key, 'PRIVATE KEY'), ca: files.ca ? readPem(files.ca, names.ca, 'CERTIFICATE') : undefined }, names);
}

/** Loads the material into a TLS context once, so a key that does not match its certificate, or a bad PEM, stops start-up. */
function checked(t: TlsMaterial, names: TlsFiles): TlsMaterial {
  try {
    createSecureContext({ cert: t.cert, key: t.key, ca: t.ca });
  } catch (err) {
    const which = t.cert ? `${names.cert}, ${names.key}${t.ca ? ` or ${names.ca}` : ''}` : names.ca;
    throw new ConfigError(`${which}: unusable (${(err as Error).message.replace(/^error:[0-9A-F]+:/, '')})`);
  }
  return t;
}

/**
 * Reads a client's TLS files (the CLI's): a CA alone verifies the servers;
 * cert and key add a client certificate for mutual TLS. Null when none is given.
 */
export function readClientTls(files: TlsFiles, names: TlsFiles = NAMES): TlsMaterial | null {
  if (!files.cert && !files.key && !files.ca) return null;
  if (Boolean(files.cert) !== Boolean(files.key)) throw new ConfigError(`${files.cert ? names.key : names.cert}: required with ${files.cert ? names.cert : names.key}`);
  return checked(
    {
      cert: files.cert ? readCert(files.cert, names.cert) : undefined,
      key: files.key ? readPem(files.key, names.key, 'PRIVATE KEY') : undefined,
      ca: files.ca ? readPem(files.ca, names.ca, 'CERTIFICATE') : undefined,
    },
    names,
  );
}

/** Listener credentials: plaintext, TLS, or mutual TLS when a CA is given (client certificates checked). */
export function serverCredentials(tls: TlsMaterial | null): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.ca ?? null, [{ cert_chain: tls.cert!, private_key: tls.key! }], tls.ca !== undefined);
}

/**
 * Channel credentials for a client: plaintext without TLS material; else TLS
 * that verifies the server against `ca` (the system roots when absent) and
 * presents `cert`/`key` when given.
 */
export function channelCredentials(tls: TlsMaterial | null): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
}

/**
 * The credentials a service uses to call another service of the mesh with its
 * own listener material: TLS when it serves TLS, presenting its certificate
 * as the client certificate when mutual TLS is on (a CA is given).
 */
export function peerCredentials(tls: TlsMaterial | null): grpc.ChannelCredentials {
  return channelCredentials(peerTls(tls));
}

/**
 * The client TLS material for {@link peerCredentials}, for the typed clients
 * (libs/client): null without TLS; the listener's material under mutual TLS;
 * else TLS verified against the system roots, without a client certificate.
 */
export function peerTls(tls: TlsMaterial | null): TlsMaterial | null {
  if (!tls) return null;
  return tls.ca ? tls : {};
}

/** A service's listener TLS from the commonSpec fields (libs/config); null = plaintext. Throws ConfigError as readServerTls. */
export function serverTlsOf(c: { tlsCert: string; tlsKey: string; tlsCa: string }): TlsMaterial | null {
  return readServerTls({ cert: c.tlsCert, key: c.tlsKey, ca: c.tlsCa });
}
