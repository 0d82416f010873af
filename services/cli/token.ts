/**
 * `infermesh token hash`: the tokens-file line for a bearer token, so that no
 * plaintext token is stored on a server. The token is read from stdin, or
 * generated (32 random bytes, base64url) when stdin is a terminal or empty.
 */
import { randomBytes } from 'node:crypto';
import { ROLES, SUBJECT_RE, tokenHash } from '../../libs/grpc/index.js';
import { printJson, printText, UsageError } from './output.js';

export interface TokenHashOptions {
  subject?: string;
  roles?: string;
  json?: boolean;
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/**
 * Prints `sha256:<hex>`, or the whole tokens-file line with --subject and
 * --roles; a generated token is printed too (it is shown only this once).
 */
export async function tokenHashCommand(o: TokenHashOptions): Promise<void> {
  if ((o.subject === undefined) !== (o.roles === undefined)) throw new UsageError('--subject and --roles go together');
  if (o.subject !== undefined && !SUBJECT_RE.test(o.subject)) throw new UsageError(`--subject: expected 1–128 of A-Z a-z 0-9 _ . @ : -`);
  const roles = o.roles?.split(',').map((r) => r.trim()).filter((r) => r !== '');
  if (roles !== undefined) {
    if (roles.length === 0) throw new UsageError('--roles: at least one role');
    const bad = roles.find((r) => !(ROLES as readonly string[]).includes(r));
    if (bad !== undefined) throw new UsageError(`--roles: unknown role ${JSON.stringify(bad)} (roles: ${ROLES.join(', ')})`);
  }
  let token = await readStdin();
  const generated = token === '';
  if (generated) token = randomBytes(32).toString('base64url');
  if (/\s/.test(token)) throw new UsageError('stdin: a token must not contain spaces or newlines');
  const hash = tokenHash(token);
  const line = o.subject !== undefined && roles ? `${hash} ${o.subject} ${roles.join(',')}` : undefined;
  if (o.json) {
    printJson({ ...(generated ? { token } : {}), hash, ...(line ? { line } : {}) });
    return;
  }
  // From stdin: the bare line, ready to append to a tokens file. Generated: the token too, labelled.
  if (!generated) return printText(line ?? hash);
  printText(`token: ${token}`);
  printText(line ? `line:  ${line}` : `hash:  ${hash}`);
}
