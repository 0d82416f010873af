/**
 * How the CLI talks to people and scripts: results on stdout (a table, or
 * exactly one JSON object with --json), progress and errors on stderr as
 * `error: <CODE_NAME>: <details>`, never a stack trace.
 */
import { codeName, isServiceError, Status } from '../../libs/errors/index.js';
import type { TlsFailure, TlsMaterial } from '../../libs/grpc/index.js';

/** An error the CLI reports itself; `exitCode` 2 marks a usage error. */
export class CliError extends Error {
  constructor(readonly code: string, message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'CliError';
  }
}

/** A bad flag, argument or input value: exit status 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message, 2);
  }
}

/** The one line printed for `err` and the exit status that goes with it. */
export function describeError(err: unknown): { line: string; exitCode: number } {
  if (err instanceof CliError) return { line: `error: ${err.code}: ${err.message}`, exitCode: err.exitCode };
  if (isServiceError(err)) return { line: `error: ${codeName(err.code)}: ${err.details || codeName(err.code)}`, exitCode: 1 };
  const msg = err instanceof Error ? err.message : String(err);
  return { line: `error: INTERNAL: ${msg.split('\n')[0]}`, exitCode: 1 };
}

/** The CLI's TLS material (applyClientSecurity), for diagnosing failed connections; null = plaintext. */
let cliTls: TlsMaterial | null = null;

/** Sets the TLS material {@link remote} diagnoses failed connections with (the one the clients use). */
export function setDiagnosisTls(tls: TlsMaterial | null): void {
  cliTls = tls;
}

/**
 * Runs a remote call against `service` at `address`. A failed connection
 * becomes UNAVAILABLE with a line that says what failed: a TLS failure
 * (plaintext against TLS or the reverse, an untrusted or misnamed server
 * certificate, a client certificate refused, missing or expired) is named as
 * one, with the flag to change; otherwise the service is unreachable and
 * the hint names the address and the flag to change it.
 */
export async function remote<T>(service: 'registry' | 'router' | 'monitor', address: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isServiceError(err) && notConnected(err.code, err.details)) {
      const host = address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
      // Loaded only on this path, so that the CLI's start-up stays quick.
      const { diagnoseTls, tlsFailureOf } = await import('../../libs/grpc/tls-diagnosis.js');
      const f = tlsFailureOf(err.details, host) ?? (await diagnoseTls({ address, tls: cliTls, timeoutMs: 2_000 }));
      if (f) throw new CliError('UNAVAILABLE', tlsSentence(service, address, f));
      const why = err.details.replace(/\.?\s*Resolution note:.*$/s, '');
      throw new CliError(codeName(err.code), `cannot reach the ${service} at ${address} (${why}); is the mesh running? (infermesh up, or --${service} ADDR)`);
    }
    throw err;
  }
}

/**
 * Whether a failed call never reached the service. grpc-js says a call that
 * timed out waiting for a connection was "Waiting for LB pick"; one that
 * reached the service names its `remote_addr`, and the service's own
 * DEADLINE_EXCEEDED is plain "Deadline exceeded": those are the call's
 * answer, not a connection problem (nor a TLS one).
 */
export function notConnected(code: number, details: string): boolean {
  if (code === Status.UNAVAILABLE) return /connect|No connection/i.test(details);
  return code === Status.DEADLINE_EXCEEDED && /Waiting for LB pick/i.test(details);
}

/**
 * What a failed TLS handshake means for the person at the CLI, naming the
 * flag to change, in place of OpenSSL's own line (which names OpenSSL's
 * source files).
 */
export function tlsSentence(service: string, address: string, f: TlsFailure): string {
  const at = `the ${service} at ${address}`;
  switch (f.kind) {
    case 'server-tls':
      return `TLS: ${at} speaks TLS and this command plaintext; give --tls-ca (and --tls-cert, --tls-key for mutual TLS), or INFERMESH_TLS_*`;
    case 'server-plaintext':
      return `TLS: ${at} speaks plaintext; leave out --tls-ca, --tls-cert and --tls-key (INFERMESH_TLS_*)`;
    case 'untrusted':
      return `TLS: the certificate of ${at} is not signed by the CA given with --tls-ca (certificate signed by unknown authority)`;
    case 'expired':
    case 'not-yet-valid':
      return `TLS: the certificate of ${at} ${f.kind === 'expired' ? 'has expired' : 'is not yet valid'}`;
    case 'name-mismatch':
      return `TLS: the certificate of ${at} does not name this address (${f.reason})`;
    case 'purpose':
      return `TLS: the certificate of ${at} is not usable for this (extendedKeyUsage)`;
    case 'client-cert-required':
      return `TLS: ${at} requires a client certificate signed by its CA; give --tls-cert and --tls-key`;
    case 'client-cert-expired':
    case 'client-cert-not-yet-valid':
      return `TLS: ${at} refused the client certificate (--tls-cert): ${f.reason.replace(/^.*?: /, '')}`;
    case 'client-cert-refused':
      return `TLS: ${at} refused the client certificate (--tls-cert): not signed by the CA it trusts, or not for client use (extendedKeyUsage clientAuth)`;
  }
}

/** Writes one JSON object and a newline on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Writes text (with a trailing newline) on stdout. */
export function printText(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** Progress for people, on stderr so stdout stays the result. */
export function progress(text: string): void {
  process.stderr.write(text);
}

/**
 * Shows `label… ` on stderr, runs `fn`, then completes the line with
 * `ok` (plus what `detail` says about the result) or `failed`.
 */
export async function step<T>(label: string, fn: () => Promise<T>, detail?: (result: T) => string): Promise<T> {
  progress(`${label}… `);
  try {
    const result = await fn();
    const d = detail?.(result);
    progress(d ? `ok (${d})\n` : 'ok\n');
    return result;
  } catch (err) {
    progress('failed\n');
    throw err;
  }
}
