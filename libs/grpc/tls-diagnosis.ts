/**
 * Why a TLS connection failed, in words a person can act on. grpc-js reports
 * many TLS failures only as "Failed to connect" (a server that refuses a
 * client certificate closes the connection after the handshake, without an
 * alert), so a failed connection is diagnosed with one handshake of our own,
 * made with the same material as the gRPC client.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import tls from 'node:tls';
import type { TlsMaterial } from './tls.js';

/** What went wrong, for callers that word it their own way (the CLI names its flags). */
export type TlsFailureKind =
  /** The server's certificate is not signed by a CA this side trusts. */
  | 'untrusted'
  | 'expired'
  | 'not-yet-valid'
  /** The server's certificate does not name the host (or --tls-server-name). */
  | 'name-mismatch'
  /** The certificate may not be used for this (extendedKeyUsage). */
  | 'purpose'
  /** This side speaks TLS, the server plaintext. */
  | 'server-plaintext'
  /** This side speaks plaintext, the server TLS. */
  | 'server-tls'
  | 'client-cert-required'
  /** The server closed the connection after the handshake: it refused this side's client certificate. */
  | 'client-cert-refused'
  | 'client-cert-expired'
  | 'client-cert-not-yet-valid';

export interface TlsFailure {
  kind: TlsFailureKind;
  /** E.g. "certificate signed by unknown authority" (no "TLS:" prefix, no peer). */
  reason: string;
}

const UNTRUSTED = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED', 'CERT_REJECTED']);

/**
 * Classifies a Node TLS error by its code, or failing that by its message
 * (grpc-js passes only the message on, e.g. "self-signed certificate in
 * certificate chain"). Null when it is not a recognised TLS failure.
 */
export function tlsFailureOf(err: { code?: unknown; message?: unknown } | string, host = ''): TlsFailure | null {
  const code = typeof err === 'string' ? '' : String(err.code ?? '');
  const msg = typeof err === 'string' ? err : String(err.message ?? '');
  const f = (kind: TlsFailureKind, reason: string): TlsFailure => ({ kind, reason });
  if (UNTRUSTED.has(code) || /self[- ]signed certificate|unable to (get local issuer|get issuer|verify the first) certificate|certificate signature failure/i.test(msg)) {
    return f('untrusted', 'certificate signed by unknown authority');
  }
  if (code === 'CERT_HAS_EXPIRED' || /^(Error: )?certificate has expired/im.test(msg)) return f('expired', 'certificate has expired');
  if (code === 'CERT_NOT_YET_VALID' || /^(Error: )?certificate is not yet valid/im.test(msg)) return f('not-yet-valid', 'certificate is not yet valid');
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || /does not match certificate's altnames/i.test(msg)) return f('name-mismatch', `certificate does not name ${host || 'the address dialled'}`);
  if (code === 'INVALID_PURPOSE' || /unsupported certificate purpose/i.test(msg)) return f('purpose', 'certificate not usable for this purpose (extendedKeyUsage)');
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/i.test(msg)) return f('server-plaintext', 'the peer speaks plaintext, not TLS');
  if (/alert certificate required/i.test(code + msg)) return f('client-cert-required', 'the peer requires a client certificate');
  if (/alert certificate expired/i.test(code + msg)) return f('client-cert-expired', "the peer refused this side's client certificate: expired");
  if (/alert (bad|unknown|unsupported) certificate|alert unknown ca|alert certificate unknown/i.test(code + msg)) return f('client-cert-refused', "the peer refused this side's client certificate");
  return null;
}

/** Whether `pem`'s first certificate is valid now: 'expired', 'not-yet-valid' or null (valid, or unreadable). */
export function certificateTimeProblem(pem: Buffer | undefined, now = Date.now()): { problem: 'expired' | 'not-yet-valid'; at: string } | null {
  if (!pem) return null;
  let c: X509Certificate;
  try {
    c = new X509Certificate(pem);
  } catch {
    return null;
  }
  const from = Date.parse(c.validFrom);
  const to = Date.parse(c.validTo);
  if (Number.isFinite(to) && now > to) return { problem: 'expired', at: new Date(to).toISOString() };
  if (Number.isFinite(from) && now < from) return { problem: 'not-yet-valid', at: new Date(from).toISOString() };
  return null;
}

/** host and port of `host:port` or `[v6]:port`; null when it has no port. */
function splitAddress(address: string): { host: string; port: number } | null {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  return m ? { host: m[1]!, port: Number(m[2]) } : null;
}

const H2_PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

export interface TlsProbe {
  /** `host:port` as the gRPC client dials it. */
  address: string;
  /** The client's material; null = the client speaks plaintext (the probe then asks whether the server speaks TLS). */
  tls: TlsMaterial | null;
  /** Name expected in the server's certificate instead of the host (grpc.ssl_target_name_override). */
  serverName?: string;
  timeoutMs?: number;
}

/**
 * Makes one TLS handshake to `address` as a gRPC client with `tls` would,
 * and says what about TLS made it fail. Resolves null when TLS is not the
 * problem (the handshake and HTTP/2 start work, the address is unreachable,
 * or nothing is known within the timeout). Never rejects.
 */
export function diagnoseTls(p: TlsProbe): Promise<TlsFailure | null> {
  const at = splitAddress(p.address);
  if (!at) return Promise.resolve(null);
  const name = p.serverName || at.host;
  return new Promise((resolve) => {
    let settled = false;
    let secure = false;
    const done = (r: TlsFailure | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const material = p.tls ?? {};
    const sock = tls.connect({
      host: at.host,
      port: at.port,
      servername: isIP(name) ? undefined : name,
      ALPNProtocols: ['h2'],
      ca: material.ca,
      cert: material.cert,
      key: material.key,
      // A plaintext client only asks whether the server speaks TLS at all.
      rejectUnauthorized: p.tls !== null,
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert),
    });
    const timer = setTimeout(() => done(null), p.timeoutMs ?? 2_000);
    timer.unref();
    sock.once('secureConnect', () => {
      secure = true;
      if (p.tls === null) return done({ kind: 'server-tls', reason: 'the peer speaks TLS, this side plaintext' });
      sock.write(H2_PREFACE);
    });
    // The server's SETTINGS frame: the handshake, client certificate included, was accepted.
    sock.once('data', () => done(null));
    sock.once('error', (err: NodeJS.ErrnoException) => {
      const f = tlsFailureOf(err, name);
      if (f || !secure) return done(f);
      done(refusedAfterHandshake(material));
    });
    sock.once('close', () => done(secure ? refusedAfterHandshake(material) : null));
  });
}

/** A server that closes the connection right after the handshake refused the client certificate; say why when we can tell. */
function refusedAfterHandshake(m: TlsMaterial): TlsFailure {
  if (!m.cert) return { kind: 'client-cert-required', reason: 'the peer requires a client certificate' };
  const t = certificateTimeProblem(m.cert);
  if (t?.problem === 'expired') return { kind: 'client-cert-expired', reason: `the peer refused this side's client certificate: it expired at ${t.at}` };
  if (t?.problem === 'not-yet-valid') return { kind: 'client-cert-not-yet-valid', reason: `the peer refused this side's client certificate: not valid before ${t.at}` };
  return { kind: 'client-cert-refused', reason: "the peer refused this side's client certificate (not signed by the CA it trusts, or not for client use)" };
}
