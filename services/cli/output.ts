/**
 * How the CLI talks to people and scripts: results on stdout (a table, or
 * exactly one JSON object with --json), progress and errors on stderr as
 * `error: <CODE_NAME>: <details>`, never a stack trace.
 */
import { codeName, isServiceError, Status } from '../../libs/errors/index.js';

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

/**
 * Runs a remote call against `service` at `address`; an unreachable service
 * becomes UNAVAILABLE with a hint naming the address and the flag to change it.
 */
export async function remote<T>(service: 'registry' | 'router' | 'monitor', address: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isServiceError(err) && (err.code === Status.UNAVAILABLE || err.code === Status.DEADLINE_EXCEEDED) && /connect|No connection|Deadline/i.test(err.details)) {
      const why = tlsHint(err.details) ?? err.details.replace(/\.?\s*Resolution note:.*$/s, '');
      throw new CliError(codeName(err.code), `cannot reach the ${service} at ${address} (${why}); is the mesh running? (infermesh up, or --${service} ADDR)`);
    }
    throw err;
  }
}

/**
 * What a failed TLS handshake means for the person at the CLI, in place of
 * OpenSSL's own line (which names OpenSSL's source files); undefined when
 * the details are not a recognised TLS failure.
 */
export function tlsHint(details: string): string | undefined {
  if (/alert certificate required|alert (bad|unknown) certificate/i.test(details)) return 'TLS: the server requires a client certificate signed by its CA (--tls-cert, --tls-key)';
  if (/self[- ]signed certificate|unable to (get local issuer|verify the first) certificate/i.test(details)) return "TLS: the server's certificate is not signed by the CA given with --tls-ca";
  if (/ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames/i.test(details)) return "TLS: the server's certificate does not name this address";
  if (/wrong version number/i.test(details)) return 'TLS: the server speaks plaintext (leave out --tls-ca)';
  return undefined;
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
