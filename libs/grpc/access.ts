/**
 * Bearer tokens with roles for the management plane. A tokens file holds one
 * token per line as the SHA-256 of the token, never the token itself:
 *
 *     # comment
 *     sha256:<64 hex digits> <subject> <role>[,<role>…]
 *
 * Roles: `push` (PushModel, SetProbe), `promote` (alias moves, rollback,
 * canary, shadow, an alias set by a push), `outcomes` (RecordOutcomes),
 * `admin` (all of them); which RPC and which request field needs which role
 * is one table, management-roles.ts. A caller sends `authorization: Bearer
 * <token>` metadata. Reads need no token. Without a tokens file the
 * management plane is open, which only a loopback listener may be without
 * --insecure-management (AccessPolicy.forListener).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../config/index.js';
import { PermissionDeniedError, UnauthenticatedError } from '../errors/index.js';
import { guarded } from './handler.js';
import { fieldRole, rpcRole, type ManagedService } from './management-roles.js';

export const ROLES = ['push', 'promote', 'outcomes', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/**
 * Checks a call's metadata before its handler runs. Returns the caller's
 * subject (who the call is recorded as). Throws UnauthenticatedError when
 * the call carries no valid token, PermissionDeniedError when its token
 * lacks the role.
 */
export type Guard = (metadata: grpc.Metadata) => string;

interface Entry {
  readonly hash: Buffer;
  readonly subject: string;
  readonly roles: ReadonlySet<Role>;
}

/** What a subject may look like (no spaces: it is one field of a tokens-file line). */
export const SUBJECT_RE = /^[A-Za-z0-9_.@:-]{1,128}$/;
const LINE_RE = /^sha256:([0-9a-fA-F]{64})\s+([A-Za-z0-9_.@:-]{1,128})\s+([a-z,]+)$/;
const BEARER_RE = /^Bearer\s+(\S+)\s*$/i;
/** Longest token accepted; a longer header is refused before hashing. */
const MAX_TOKEN_CHARS = 4096;

/** `sha256:<hex>` of a token, as a tokens file line starts. */
export function tokenHash(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

/** Who may do what on a management listener: open (no tokens file) or a table of hashed tokens. */
export class AccessPolicy {
  private constructor(private readonly entries: readonly Entry[] | null) {}

  /** No tokens configured: every call is allowed and carries no subject. */
  static open(): AccessPolicy {
    return new AccessPolicy(null);
  }

  /**
   * Parses a tokens file's text. `source` names the file in messages.
   * Throws ConfigError naming the line number for a malformed line, an unknown
   * role or a hash that appears twice.
   */
  static parse(text: string, source: string): AccessPolicy {
    const entries: Entry[] = [];
    const seen = new Set<string>();
    const lines = text.split(/\r?\n/);
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '' || line.startsWith('#')) continue;
      const at = `${source} line ${i + 1}`;
      const m = LINE_RE.exec(line);
      if (!m) throw new ConfigError(`${at}: expected "sha256:<64 hex digits> <subject> <role>[,<role>…]"`);
      const hex = m[1]!.toLowerCase();
      if (seen.has(hex)) throw new ConfigError(`${at}: this token hash is already listed`);
      seen.add(hex);
      const roles = new Set<Role>();
      for (const r of m[3]!.split(',')) {
        if (!(ROLES as readonly string[]).includes(r)) throw new ConfigError(`${at}: unknown role ${JSON.stringify(r)} (roles: ${ROLES.join(', ')})`);
        roles.add(r as Role);
      }
      entries.push({ hash: Buffer.from(hex, 'hex'), subject: m[2]!, roles });
    }
    if (entries.length === 0) throw new ConfigError(`${source}: no tokens (an empty tokens file would lock every write out)`);
    return new AccessPolicy(entries);
  }

  /**
   * Reads the tokens file at `path` ('' = open). `name` is the flag or
   * variable for messages. Throws ConfigError when it cannot be read or parsed.
   */
  static load(path: string, name = '--tokens-file'): AccessPolicy {
    if (!path) return AccessPolicy.open();
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`${name}=${JSON.stringify(path)}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    return AccessPolicy.parse(text, `${name} ${path}`);
  }

  /**
   * The policy of a management listener on `host`: the tokens file at
   * `tokensFile`, or open. Open is refused off loopback (ConfigError naming
   * --tokens-file and --insecure-management) unless `insecure` is set, in which
   * case `warn` is told so loudly.
   */
  static forListener(o: { tokensFile: string; host: string; insecure: boolean; warn: (msg: string) => void }): AccessPolicy {
    const policy = AccessPolicy.load(o.tokensFile);
    if (!policy.isOpen || isLoopbackHost(o.host)) return policy;
    if (!o.insecure) {
      throw new ConfigError(
        `--host ${o.host} is not a loopback address and no --tokens-file is set: anyone who reaches this management API could write to it (push, promote, record outcomes); give --tokens-file, or --insecure-management to run without tokens`,
      );
    }
    o.warn(`INSECURE: the management API on ${o.host} takes no tokens (--insecure-management): anyone who reaches it can write to it (push, promote, roll back, record outcomes)`);
    return policy;
  }

  /** True when no tokens are configured. */
  get isOpen(): boolean {
    return this.entries === null;
  }

  /** Number of tokens configured (0 when open). */
  get size(): number {
    return this.entries?.length ?? 0;
  }

  /** The guard for calls that need `role` (admin always qualifies); undefined when open. */
  guard(role: Role): Guard | undefined {
    if (this.entries === null) return undefined;
    return (md) => {
      const e = this.authenticate(md);
      if (!e.roles.has(role) && !e.roles.has('admin')) throw new PermissionDeniedError(`the token of ${e.subject} lacks the ${role} role`);
      return e.subject;
    };
  }

  /**
   * Puts the role table's guard in front of every handler of `impl`, the
   * implementation of `definition` (the generated grpc-js service). Throws (a
   * programming error, at start-up) when the table has no row for one of the
   * service's RPCs, so a new RPC cannot be served before its role is decided.
   */
  guardService<T extends object>(service: ManagedService, definition: grpc.ServiceDefinition, impl: T): T {
    const out = { ...impl } as Record<string, unknown>;
    for (const [key, method] of Object.entries(definition)) {
      const path = method.path;
      if (path.slice(1, path.lastIndexOf('/')) !== `infermesh.v1.${service}`) throw new Error(`management-roles: ${path} is not a method of ${service}`);
      const handler = out[key];
      if (typeof handler !== 'function') throw new Error(`management-roles: ${service} has no handler for ${path}`);
      out[key] = guarded(handler as (call: never) => void, this.rpcGuard(service, path.slice(path.lastIndexOf('/') + 1)));
    }
    return out as T;
  }

  /**
   * The guard of an RPC, by the role table (management-roles.ts); undefined
   * when open or when the RPC is a read. Throws (a programming error) when the
   * table has no row for it.
   */
  rpcGuard(service: ManagedService, rpc: string): Guard | undefined {
    const role = rpcRole(service, rpc);
    return role === 'none' ? undefined : this.guard(role);
  }

  /**
   * Checks, inside a handler whose RPC guard already passed, that the caller
   * may also set `field` (management-roles.ts says which role that takes).
   * Call it before anything is stored. Throws UnauthenticatedError or
   * PermissionDeniedError (naming the field); nothing when open.
   */
  checkField(service: ManagedService, rpc: string, field: string, metadata: grpc.Metadata): void {
    const role = fieldRole(service, rpc, field);
    if (this.entries === null) return;
    const e = this.authenticate(metadata);
    if (!e.roles.has(role) && !e.roles.has('admin')) throw new PermissionDeniedError(`setting ${field} needs the ${role} role, which the token of ${e.subject} lacks`);
  }

  /** The entry whose hash matches the call's bearer token; compares every entry in constant time. */
  private authenticate(md: grpc.Metadata): Entry {
    const values = md.get('authorization');
    if (values.length === 0) throw new UnauthenticatedError('this call needs a token: send "authorization: Bearer <token>" metadata');
    const m = values.length === 1 && typeof values[0] === 'string' && values[0].length <= MAX_TOKEN_CHARS + 7 ? BEARER_RE.exec(values[0]) : null;
    if (!m) throw new UnauthenticatedError('authorization: expected "Bearer <token>"');
    const presented = createHash('sha256').update(m[1]!, 'utf8').digest();
    let found: Entry | undefined;
    for (const e of this.entries!) {
      if (timingSafeEqual(e.hash, presented) && !found) found = e;
    }
    if (!found) throw new UnauthenticatedError('unknown token');
    return found;
  }
}

/** True for `localhost`, 127.0.0.0/8 and ::1 (also IPv4-mapped): addresses only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(v4);
  return !!m && Number(m[1]) === 127 && m.slice(2).every((o) => Number(o) <= 255);
}
