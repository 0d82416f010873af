/** Tokens files, role guards, and the start-up checks of the TLS and NATS security settings. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../libs/config/index.js';
import { MeshError, Status } from '../../libs/errors/index.js';
import { AccessPolicy, isLoopbackHost, readClientTls, readServerTls, tokenHash } from '../../libs/grpc/index.js';
import { natsSecurityOf } from '../../libs/bus/index.js';
import { makeTestPki, type TestPki } from '../harness/certs.js';

const PUSH = tokenHash('push-token');
const ADMIN = tokenHash('admin-token');
const FILE = `# CI pushes, Alice administers
${PUSH} ci push

${ADMIN}   alice@example.com   admin
`;

function md(auth?: string | string[]): grpc.Metadata {
  const m = new grpc.Metadata();
  for (const a of auth === undefined ? [] : Array.isArray(auth) ? auth : [auth]) m.add('authorization', a);
  return m;
}

/** The gRPC code a guard throws with, or 'OK: <subject>'. */
function outcome(policy: AccessPolicy, role: 'push' | 'promote' | 'outcomes', auth?: string | string[]): string {
  try {
    return `OK: ${policy.guard(role)!(md(auth))}`;
  } catch (err) {
    expect(err).toBeInstanceOf(MeshError);
    return Status[(err as MeshError).code]!;
  }
}

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('tokens file', () => {
  it('parses hashed tokens, subjects and roles; skips comments and blank lines', () => {
    const p = AccessPolicy.parse(FILE, 'tokens');
    expect(p.isOpen).toBe(false);
    expect(p.size).toBe(2);
    expect(tokenHash('push-token')).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('names the line number of a bad line', () => {
    expect(configError(() => AccessPolicy.parse(`# ok\n${PUSH} ci push\nsha256:abc ci push\n`, 'tokens.txt'))).toMatch(/^tokens\.txt line 3: expected "sha256:/);
    expect(configError(() => AccessPolicy.parse(`${PUSH} ci deploy\n`, 'f'))).toMatch(/^f line 1: unknown role "deploy"/);
    expect(configError(() => AccessPolicy.parse(`\n\n${PUSH} ci push,\n`, 'f'))).toMatch(/^f line 3: unknown role ""/);
    expect(configError(() => AccessPolicy.parse(`${PUSH} ci push\n${PUSH} bob promote\n`, 'f'))).toMatch(/^f line 2: .*already listed/);
    expect(configError(() => AccessPolicy.parse(`plaintext-token ci push\n`, 'f'))).toMatch(/^f line 1:/);
    expect(configError(() => AccessPolicy.parse(`${PUSH} ci\n`, 'f'))).toMatch(/^f line 1:/);
    expect(configError(() => AccessPolicy.parse(`${PUSH} c/i push\n`, 'f'))).toMatch(/^f line 1:/);
    expect(configError(() => AccessPolicy.parse('# nothing\n\n', 'f'))).toMatch(/no tokens/);
  });

  it('load: an unreadable file names the flag; no path = open', async () => {
    expect(AccessPolicy.load('').isOpen).toBe(true);
    expect(configError(() => AccessPolicy.load('/nonexistent/tokens'))).toMatch(/^--tokens-file="\/nonexistent\/tokens": cannot read the file \(ENOENT\)/);
  });
});

describe('role guards', () => {
  const policy = AccessPolicy.parse(FILE, 'tokens');

  it('open policy: no guard at all', () => {
    expect(AccessPolicy.open().guard('push')).toBeUndefined();
  });

  it('no token: UNAUTHENTICATED; unknown or malformed token: UNAUTHENTICATED', () => {
    expect(outcome(policy, 'push')).toBe('UNAUTHENTICATED');
    expect(outcome(policy, 'push', 'Bearer nope')).toBe('UNAUTHENTICATED');
    expect(outcome(policy, 'push', 'push-token')).toBe('UNAUTHENTICATED');
    expect(outcome(policy, 'push', 'Basic cHVzaC10b2tlbg==')).toBe('UNAUTHENTICATED');
    expect(outcome(policy, 'push', ['Bearer push-token', 'Bearer admin-token'])).toBe('UNAUTHENTICATED');
    expect(outcome(policy, 'push', `Bearer ${'x'.repeat(10_000)}`)).toBe('UNAUTHENTICATED');
  });

  it('a token without the role: PERMISSION_DENIED; with it (or admin): its subject', () => {
    expect(outcome(policy, 'promote', 'Bearer push-token')).toBe('PERMISSION_DENIED');
    expect(outcome(policy, 'outcomes', 'Bearer push-token')).toBe('PERMISSION_DENIED');
    expect(outcome(policy, 'push', 'Bearer push-token')).toBe('OK: ci');
    expect(outcome(policy, 'push', 'bearer push-token')).toBe('OK: ci');
    for (const role of ['push', 'promote', 'outcomes'] as const) expect(outcome(policy, role, 'Bearer admin-token')).toBe('OK: alice@example.com');
  });

  it('messages name neither tokens nor hashes', () => {
    for (const auth of [undefined, 'Bearer nope', 'Bearer push-token']) {
      try {
        policy.guard('promote')!(md(auth));
      } catch (err) {
        expect((err as Error).message).not.toMatch(/nope|push-token|sha256|[0-9a-f]{16}/);
      }
    }
  });
});

describe('the role table in the policy', () => {
  const policy = AccessPolicy.parse(`${FILE}${tokenHash('promote-token')} release promote\n`, 'tokens');
  const field = (auth: string | undefined, rpc: string, name: string): string => {
    try {
      policy.checkField('Registry', rpc, name, md(auth));
      return 'OK';
    } catch (err) {
      return Status[(err as MeshError).code]!;
    }
  };

  it('an RPC guard comes from the table: reads have none, writes their role', () => {
    expect(policy.rpcGuard('Registry', 'GetModel')).toBeUndefined();
    expect(() => policy.rpcGuard('Registry', 'PushModel')!(md('Bearer promote-token'))).toThrow(/lacks the push role/);
    expect(policy.rpcGuard('Registry', 'SetAlias')!(md('Bearer promote-token'))).toBe('release');
    expect(policy.rpcGuard('Monitor', 'RecordOutcomes')!(md('Bearer admin-token'))).toBe('alice@example.com');
  });

  it('a state-changing field needs its own role, named in the message', () => {
    expect(field('Bearer push-token', 'PushModel', 'header.alias')).toBe('PERMISSION_DENIED');
    expect(field('Bearer promote-token', 'PushModel', 'header.alias')).toBe('OK');
    expect(field('Bearer admin-token', 'PushModel', 'header.alias')).toBe('OK');
    expect(field(undefined, 'SetCanary', 'clear')).toBe('UNAUTHENTICATED');
    expect(() => policy.checkField('Registry', 'PushModel', 'header.alias', md('Bearer push-token'))).toThrow(/header\.alias needs the promote role/);
    // Open: no check at all.
    expect(() => AccessPolicy.open().checkField('Registry', 'PushModel', 'header.alias', md())).not.toThrow();
  });

  it('an RPC or field missing from the table is a programming error, never open', () => {
    expect(() => policy.rpcGuard('Registry', 'DropEverything')).toThrow(/no row for Registry.DropEverything/);
    expect(() => AccessPolicy.open().checkField('Registry', 'SetAlias', 'version', md())).toThrow(/no row/);
    const def = { drop: { path: '/infermesh.v1.Registry/DropEverything' } } as unknown as grpc.ServiceDefinition;
    expect(() => AccessPolicy.open().guardService('Registry', def, { drop: () => undefined })).toThrow(/no row/);
  });
});

describe('management listeners off loopback', () => {
  it('loopback: 127.0.0.0/8, ::1, localhost', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'registry.infermesh.svc', '', '127.0.0.256']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('open off loopback stops start-up naming the flags, unless --insecure-management (then a warning)', () => {
    const warnings: string[] = [];
    const o = { tokensFile: '', insecure: false, warn: (m: string) => warnings.push(m) };
    expect(AccessPolicy.forListener({ ...o, host: '127.0.0.1' }).isOpen).toBe(true);
    expect(configError(() => AccessPolicy.forListener({ ...o, host: '0.0.0.0' }))).toMatch(/^--host 0\.0\.0\.0 is not a loopback address and no --tokens-file is set: .*--insecure-management/);
    expect(warnings).toEqual([]);
    expect(AccessPolicy.forListener({ ...o, host: '0.0.0.0', insecure: true }).isOpen).toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^INSECURE: .*--insecure-management/);
  });
});

describe('TLS and NATS settings', () => {
  let dir: string;
  let pem: string;
  let pki: TestPki;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-access-'));
    pki = await makeTestPki(dir);
    pem = pki.ca;
    await writeFile(path.join(dir, 'not.pem'), 'hello');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('listener TLS: none is plaintext; half a pair, a CA alone or a bad file stop start-up naming the flag', () => {
    expect(readServerTls({ cert: '', key: '', ca: '' })).toBeNull();
    expect(readServerTls({ cert: pki.serverCert, key: pki.serverKey, ca: '' })!.ca).toBeUndefined();
    expect(readServerTls({ cert: pki.serverCert, key: pki.serverKey, ca: pki.ca })!.ca).toBeInstanceOf(Buffer);
    expect(configError(() => readServerTls({ cert: pki.serverCert, key: pki.clientKey, ca: '' }))).toMatch(/^--tls-cert \(INFERMESH_TLS_CERT\), --tls-key \(INFERMESH_TLS_KEY\): unusable \(.*key values mismatch\)/);
    expect(configError(() => readServerTls({ cert: pem, key: '', ca: '' }))).toMatch(/^--tls-key \(INFERMESH_TLS_KEY\): required with --tls-cert/);
    expect(configError(() => readServerTls({ cert: '', key: pem, ca: '' }))).toMatch(/^--tls-cert \(INFERMESH_TLS_CERT\): required/);
    expect(configError(() => readServerTls({ cert: '', key: '', ca: pem }))).toMatch(/^--tls-ca \(INFERMESH_TLS_CA\): needs --tls-cert/);
    expect(configError(() => readServerTls({ cert: path.join(dir, 'missing.pem'), key: pki.serverKey, ca: '' }))).toMatch(/^--tls-cert .*cannot read the file \(ENOENT\)/);
    expect(configError(() => readServerTls({ cert: path.join(dir, 'not.pem'), key: pki.serverKey, ca: '' }))).toMatch(/^--tls-cert .*not a PEM file/);
    expect(configError(() => readServerTls({ cert: pki.serverCert, key: pki.serverKey, ca: pki.serverKey }))).toMatch(/^--tls-ca .*holds no certificate/);
    expect(configError(() => readServerTls({ cert: pki.serverCert, key: pki.serverCert, ca: '' }))).toMatch(/^--tls-key .*holds no private key/);
  });

  it('client TLS: a CA alone is enough; a certificate needs its key', () => {
    expect(readClientTls({ cert: '', key: '', ca: pem })!.cert).toBeUndefined();
    expect(readClientTls({ cert: pki.clientCert, key: pki.clientKey, ca: pem })!.key).toBeInstanceOf(Buffer);
    expect(configError(() => readClientTls({ cert: pem, key: '', ca: pem }))).toMatch(/^--tls-key .*required with --tls-cert/);
  });

  it('NATS: one kind of credential, user with password, files readable', () => {
    const none = { natsTlsCa: '', natsTlsCert: '', natsTlsKey: '', natsCreds: '', natsUser: '', natsPassword: '', natsToken: '' };
    expect(natsSecurityOf(none)).toEqual({});
    expect(natsSecurityOf({ ...none, natsUser: 'mesh', natsPassword: 'pw', natsTlsCa: pem })).toEqual({ user: 'mesh', password: 'pw', tls: { caFile: pem } });
    expect(natsSecurityOf({ ...none, natsToken: 't' })).toEqual({ token: 't' });
    expect(configError(() => natsSecurityOf({ ...none, natsUser: 'mesh' }))).toMatch(/^--nats-password .*required with --nats-user/);
    expect(configError(() => natsSecurityOf({ ...none, natsPassword: 'pw' }))).toMatch(/^--nats-user .*required with --nats-password/);
    expect(configError(() => natsSecurityOf({ ...none, natsToken: 't', natsUser: 'u', natsPassword: 'p' }))).toMatch(/one kind of NATS credential/);
    expect(configError(() => natsSecurityOf({ ...none, natsCreds: path.join(dir, 'missing.creds') }))).toMatch(/^--nats-creds=.*cannot read the file/);
    expect(configError(() => natsSecurityOf({ ...none, natsTlsCert: pem }))).toMatch(/^--nats-tls-key .*required with --nats-tls-cert/);
    expect(configError(() => natsSecurityOf({ ...none, natsTlsCa: path.join(dir, 'missing.pem') }))).toMatch(/^--nats-tls-ca=.*cannot read/);
  });
});
