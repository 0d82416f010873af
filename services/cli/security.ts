/**
 * The CLI's credentials: TLS (a CA to verify the mesh, a client certificate
 * for mutual TLS) and a bearer token, from the global flags or INFERMESH_TLS_*
 * and INFERMESH_TOKEN. Applied once, before a command runs, to every client
 * the command builds (libs/client setClientDefaults).
 */
import { setClientDefaults } from '../../libs/client/index.js';
import { ConfigError } from '../../libs/config/index.js';
import { readClientTls, type TlsMaterial } from '../../libs/grpc/index.js';
import { envSecurity } from './addresses.js';
import { setDiagnosisTls, UsageError } from './output.js';

export interface SecurityOptions {
  token?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

let appliedTls: TlsMaterial | null = null;

/** The TLS material applyClientSecurity read (null: plaintext), for the CLI's few HTTPS calls (status). */
export function appliedClientTls(): TlsMaterial | null {
  return appliedTls;
}

/**
 * Reads the TLS files and sets the token for the clients of this run.
 * Throws UsageError (exit 2) naming the flag when a file cannot be read or a
 * certificate comes without its key.
 */
export function applyClientSecurity(o: SecurityOptions): void {
  const files = { ca: o.tlsCa ?? envSecurity.tlsCa, cert: o.tlsCert ?? envSecurity.tlsCert, key: o.tlsKey ?? envSecurity.tlsKey };
  try {
    const tls = readClientTls(files, { ca: '--tls-ca (INFERMESH_TLS_CA)', cert: '--tls-cert (INFERMESH_TLS_CERT)', key: '--tls-key (INFERMESH_TLS_KEY)' });
    const token = o.token ?? envSecurity.token;
    if (token !== '' && /\s/.test(token)) throw new ConfigError('--token (INFERMESH_TOKEN): must not contain spaces');
    setClientDefaults({ tls, token: token || undefined });
    setDiagnosisTls(tls);
    appliedTls = tls;
    if (tls) quietIpServerNameWarning();
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
}

/**
 * grpc-js passes an IP address as the TLS server name when the CLI dials
 * one (127.0.0.1:8500), and Node warns about that (DEP0123) on stderr, in
 * the middle of the CLI's output. Certificates are still checked against
 * the IP address (an IP SAN), so the warning says nothing to the user.
 */
function quietIpServerNameWarning(): void {
  const emit = process.emitWarning;
  process.emitWarning = function (this: unknown, warning: string | Error, ...rest: unknown[]) {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    return (emit as (...a: unknown[]) => void).call(process, warning, ...rest);
  } as typeof process.emitWarning;
}

/**
 * For commands that start a mesh of their own on loopback (bench, tune): it
 * runs plaintext and without tokens, so the caller's TLS files, token and
 * NATS credentials (meant for another mesh) are kept from its services and
 * from this run's clients.
 */
export function useOwnPlaintextMesh(): void {
  for (const k of Object.keys(process.env)) if (/^INFERMESH_(TLS_|NATS_(TLS_|CREDS|USER|PASSWORD|TOKEN)|TOKEN$|TOKENS_FILE$)/.test(k)) delete process.env[k];
  setClientDefaults({ tls: null, token: undefined });
  setDiagnosisTls(null);
  appliedTls = null;
}
