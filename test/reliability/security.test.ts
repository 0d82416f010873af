/**
 * Security against real processes: one mesh whose gRPC listeners (and the
 * router's REST port) speak mutual TLS with certificates made by openssl,
 * whose NATS requires TLS with client certificates plus a user and password,
 * and whose registry and monitor take hashed bearer tokens with roles.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceApi, MonitorApi, RegistryApi } from '../../libs/client/index.js';
import { Status } from '../../libs/errors/index.js';
import { tokenHash, type TlsMaterial } from '../../libs/grpc/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent_Kind } from '../../libs/proto/index.js';
import { makeTestPki, type TestPki } from '../harness/certs.js';
import { startMesh, startService, type Mesh } from '../harness/mesh.js';
import { CLI } from '../cli/run-cli.js';
import { spawn } from 'node:child_process';

const TOKENS = { ci: 'ci-token-1', release: 'release-token-2', labeller: 'labeller-token-3', root: 'root-token-4' };
const NATS_PASSWORD = `pw-${randomBytes(6).toString('hex')}`;

let dir: string;
let pki: TestPki;
let mesh: Mesh;
let env: Record<string, string>;
let tls: TlsMaterial;
const model = mlpModel({ inputs: 4, hidden: [8], outputs: 1 });
const row = [0.1, 0.2, 0.3, 0.4];
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: row }];
const opened: { close(): void }[] = [];

function registry(token?: string, t: TlsMaterial | null = tls): RegistryApi {
  const api = new RegistryApi(mesh.registryAddr, { timeoutMs: 10_000, tls: t, token });
  opened.push(api);
  return api;
}

/** The gRPC code a promise rejects with ('OK' when it resolves), and how long it took. */
async function codeOf(p: Promise<unknown>): Promise<{ code: string; details: string; ms: number }> {
  const t0 = Date.now();
  try {
    await p;
    return { code: 'OK', details: '', ms: Date.now() - t0 };
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: Status[e.code] ?? String(e.code), details: e.details ?? String(err), ms: Date.now() - t0 };
  }
}

/** No file paths, stack frames or token material in what a caller is told. */
function expectNoInternals(details: string): void {
  expect(details).not.toMatch(/\/tmp\/|\/work\/|\.pem|\.key|\.js:|\.ts:|\n\s+at |sha256:|token-\d/);
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-security-'));
  pki = await makeTestPki(dir);
  const tokensFile = path.join(dir, 'tokens');
  await writeFile(
    tokensFile,
    [
      '# infermesh tokens: sha256 of the token, subject, roles',
      `${tokenHash(TOKENS.ci)} ci push`,
      `${tokenHash(TOKENS.release)} release-bot promote`,
      `${tokenHash(TOKENS.labeller)} labeller outcomes`,
      `${tokenHash(TOKENS.root)} root admin`,
      '',
    ].join('\n'),
  );
  env = {
    INFERMESH_TLS_CERT: pki.serverCert,
    INFERMESH_TLS_KEY: pki.serverKey,
    INFERMESH_TLS_CA: pki.ca,
    INFERMESH_TOKENS_FILE: tokensFile,
    INFERMESH_REGISTRY_TOKEN: TOKENS.release,
    INFERMESH_NATS_TLS_CA: pki.ca,
    INFERMESH_NATS_TLS_CERT: pki.serverCert,
    INFERMESH_NATS_TLS_KEY: pki.serverKey,
    INFERMESH_NATS_USER: 'mesh',
    INFERMESH_NATS_PASSWORD: NATS_PASSWORD,
  };
  tls = { ca: await readFile(pki.ca), cert: await readFile(pki.clientCert), key: await readFile(pki.clientKey) };
  mesh = await startMesh({
    replicas: 1,
    env,
    client: { tls },
    nats: {
      config: [
        `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}", ca_file: "${pki.ca}", verify: true, timeout: 2 }`,
        `authorization { user: mesh, password: "${NATS_PASSWORD}" }`,
      ].join('\n'),
    },
  });
  for (const s of [mesh.registry, mesh.router, mesh.replicas[0]!]) expect(s.info.tls).toBe('mutual');
  // The model every case below uses: pushed by `ci`, promoted by `release-bot`.
  const v = await registry(TOKENS.ci).push(model.bytes, { name: 'secure' });
  expect(v.version).toBe(1);
  expect(v.createdBy).toBe('ci');
  await registry(TOKENS.release).setAlias('secure', 1, 'production');
  await mesh.waitReady('secure');
});

afterAll(async () => {
  for (const c of opened) c.close();
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('mutual TLS on every gRPC listener', () => {
  it('a client with the CA and a client certificate infers end to end (router → replica over mTLS too)', async () => {
    const { outputs } = await mesh.clients.router.infer('secure', input, { timeoutMs: 5_000 });
    expect(outputs[0]!.data[0]).toBeCloseTo(model.forward(row)[0]!, 5);
    // The replica's own listener also refuses plaintext: the router reached it over mTLS.
    const direct = new InferenceApi(`127.0.0.1:${mesh.replicas[0]!.info.grpcPort}`, { tls, retries: 0 });
    opened.push(direct);
    expect(await direct.modelReady('secure', '1')).toBe(true);
  });

  it('a plaintext client fails fast with UNAVAILABLE (the handshake fails; no hang)', async () => {
    for (const addr of [mesh.routerAddr, mesh.registryAddr, mesh.monitorAddr]) {
      const plain = new InferenceApi(addr, { tls: null, retries: 0, timeoutMs: 5_000 });
      opened.push(plain);
      const r = await codeOf(plain.ready());
      expect(r.code, addr).toBe('UNAVAILABLE');
      expect(r.ms).toBeLessThan(4_000);
      console.log(`security: plaintext client → ${r.code} in ${r.ms} ms (${addr === mesh.routerAddr ? 'router' : addr === mesh.registryAddr ? 'registry' : 'monitor'})`);
    }
  });

  it('a TLS client without a client certificate, or with one from another CA, is refused', async () => {
    const rogue = { ca: tls.ca, cert: await readFile(pki.rogueCert), key: await readFile(pki.rogueKey) };
    for (const t of [{ ca: tls.ca }, rogue]) {
      const c = new InferenceApi(mesh.routerAddr, { tls: t, retries: 0, timeoutMs: 5_000 });
      opened.push(c);
      const r = await codeOf(c.infer('secure', input));
      expect(r.code).toBe('UNAVAILABLE');
      expect(r.ms).toBeLessThan(4_000);
      expectNoInternals(r.details);
      console.log(`security: ${t === rogue ? 'client certificate from another CA' : 'no client certificate'} → ${r.code} in ${r.ms} ms: ${r.details}`);
    }
  });

  it('a client that does not trust the CA, or expects another server name, refuses the server', async () => {
    for (const o of [{ tls: { cert: tls.cert, key: tls.key } }, { tls, serverName: 'elsewhere.example' }]) {
      const c = new InferenceApi(mesh.routerAddr, { ...o, retries: 0, timeoutMs: 5_000 });
      opened.push(c);
      const r = await codeOf(c.ready());
      expect(r.code).toBe('UNAVAILABLE');
      expect(r.ms).toBeLessThan(4_000);
    }
    // --tls-server-name: the certificate's DNS name instead of the address's IP.
    const named = new InferenceApi(mesh.routerAddr, { tls, serverName: 'localhost', retries: 0 });
    opened.push(named);
    expect(await named.ready()).toBe(true);
  });

  it('REST (8501) serves HTTPS with the same certificate and asks for a client certificate', async () => {
    const post = (o: https.RequestOptions) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = https.request(
          { host: '127.0.0.1', port: Number(mesh.router.info.restPort), method: 'POST', path: '/v1/models/secure:predict', headers: { 'content-type': 'application/json' }, ca: tls.ca, servername: 'localhost', ...o },
          (res) => {
            let body = '';
            res.on('data', (b: Buffer) => (body += b.toString()));
            res.on('end', () => resolve({ status: res.statusCode!, body }));
          },
        );
        req.on('error', reject);
        req.end(JSON.stringify({ instances: [row] }));
      });
    const ok = await post({ cert: tls.cert, key: tls.key });
    expect(ok.status).toBe(200);
    expect((JSON.parse(ok.body) as { predictions: number[][] }).predictions[0]![0]).toBeCloseTo(model.forward(row)[0]!, 5);
    await expect(post({})).rejects.toThrow();
  });
});

describe('tokens with roles on the management plane', () => {
  it('registry writes: no token → UNAUTHENTICATED, unknown token → UNAUTHENTICATED, without the role → PERMISSION_DENIED', async () => {
    const cases: [RegistryApi, string][] = [
      [registry(), 'UNAUTHENTICATED'],
      [registry('not-a-token'), 'UNAUTHENTICATED'],
      [registry(TOKENS.labeller), 'PERMISSION_DENIED'],
    ];
    for (const [api, code] of cases) {
      for (const call of [
        () => api.push(model.bytes, { name: 'secure' }),
        () => api.setAlias('secure', 1, 'staging'),
        () => api.rollback('secure'),
        () => api.setCanary('secure', 1, 10),
        () => api.setShadow('secure', 1, 10),
      ]) {
        const r = await codeOf(call());
        expect(r.code).toBe(code);
        expectNoInternals(r.details);
      }
    }
    // push is not promote, and promote is not push.
    expect((await codeOf(registry(TOKENS.ci).setAlias('secure', 1, 'staging'))).code).toBe('PERMISSION_DENIED');
    expect((await codeOf(registry(TOKENS.release).push(model.bytes, { name: 'secure' }))).code).toBe('PERMISSION_DENIED');
    // Nothing was written by the refused calls.
    const info = await mesh.clients.registry.get('secure');
    expect(info.versions.map((v) => v.version)).toEqual([1]);
    expect(info.traffic?.aliases).toEqual({ production: 1 });
    expect(info.traffic?.canary).toBeUndefined();
    expect(info.traffic?.updatedBy).toBe('release-bot');
  });

  it('the right role → OK, and the lifecycle history names the token subject as the actor', async () => {
    const moved = await registry(TOKENS.release).setAlias('secure', 1, 'staging');
    expect(moved.traffic?.aliases).toMatchObject({ staging: 1 });
    expect(moved.traffic?.updatedBy).toBe('release-bot');
    await registry(TOKENS.root).setShadow('secure', 1, 5);
    await registry(TOKENS.root).clearShadow('secure');
    const events = await mesh.clients.registry.history('secure');
    const actorOf = (kind: ModelEvent_Kind, alias = '') => events.find((e) => e.kind === kind && (alias === '' || e.alias === alias))?.actor;
    expect(actorOf(ModelEvent_Kind.REGISTERED)).toBe('ci');
    expect(actorOf(ModelEvent_Kind.PROMOTED, 'production')).toBe('release-bot');
    expect(actorOf(ModelEvent_Kind.PROMOTED, 'staging')).toBe('release-bot');
    expect(actorOf(ModelEvent_Kind.SHADOWED)).toBe('root');
  });

  it('reads need no token', async () => {
    const anon = registry();
    expect((await anon.list()).map((m) => m.name)).toContain('secure');
    expect((await anon.get('secure')).name).toBe('secure');
    expect((await anon.history('secure')).length).toBeGreaterThan(0);
    const mon = new MonitorApi(mesh.monitorAddr, { tls });
    opened.push(mon);
    expect(['OK', 'NOT_FOUND']).toContain((await codeOf(mon.stats('secure'))).code);
  });

  it('monitor RecordOutcomes needs the outcomes role', async () => {
    const outcomes = [{ requestId: 'r-1', label: 1 }];
    const as = (token?: string) => {
      const m = new MonitorApi(mesh.monitorAddr, { tls, token });
      opened.push(m);
      return m.recordOutcomes('secure', outcomes);
    };
    expect((await codeOf(as())).code).toBe('UNAUTHENTICATED');
    expect((await codeOf(as(TOKENS.ci))).code).toBe('PERMISSION_DENIED');
    expect((await codeOf(as(TOKENS.labeller))).code).toBe('OK');
    expect((await codeOf(as(TOKENS.root))).code).toBe('OK');
  });
});

describe('NATS with TLS and a user/password', () => {
  it('the services connected over TLS with credentials (the model above was pushed, loaded and served through it)', async () => {
    // Everything the mesh did above went through this NATS; check it refuses what lacks TLS or credentials.
    const { connect } = await import('nats');
    await expect(connect({ servers: mesh.nats.url, user: 'mesh', pass: NATS_PASSWORD, reconnect: false, timeout: 3_000 })).rejects.toThrow();
    const nc = await connect({
      servers: mesh.nats.url,
      user: 'mesh',
      pass: NATS_PASSWORD,
      tls: { caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey },
      reconnect: false,
      timeout: 3_000,
    });
    await nc.close();
  });

  it('a service given a wrong password exits non-zero at once, naming the NATS credential problem', async () => {
    const t0 = Date.now();
    const err = await startService('registry', ['--nats', mesh.nats.url, '--host', '127.0.0.1', '--port', '0'], { ...env, INFERMESH_NATS_PASSWORD: 'wrong' }, 20_000).then(
      () => null,
      (e: Error) => e,
    );
    expect(err).not.toBeNull();
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(err!.message).toMatch(/exited \(1\) before listening/);
    expect(err!.message).toMatch(/NATS at nats:\/\/127\.0\.0\.1:\d+ refused this service's credentials \(authorization violation\)/);
    expect(err!.message).not.toContain('wrong');
    console.log(`security: wrong NATS password → registry exited 1 after ${Date.now() - t0} ms`);
  });
});

describe('the CLI on a secured mesh', () => {
  function run(args: string[], extraEnv: Record<string, string> = {}, stdin = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...extraEnv }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      p.once('close', (code) => resolve({ code, stdout, stderr }));
      p.stdin.end(stdin);
    });
  }
  const addrs = () => ['--registry', mesh.registryAddr, '--router', mesh.routerAddr, '--monitor', mesh.monitorAddr];

  it('--tls-* flags and INFERMESH_TOKEN: promote with a token, infer over mTLS; refused without the token', async () => {
    const tlsFlags = ['--tls-ca', pki.ca, '--tls-cert', pki.clientCert, '--tls-key', pki.clientKey];
    const denied = await run(['models', 'promote', 'secure', '1', '--alias', 'cli', ...addrs(), ...tlsFlags]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/^error: UNAUTHENTICATED: /m);
    const ok = await run(['models', 'promote', 'secure', '1', '--alias', 'cli', '--json', ...addrs(), ...tlsFlags], { INFERMESH_TOKEN: TOKENS.release });
    expect(ok.code, ok.stderr).toBe(0);
    const inferred = await run(['infer', 'secure', '--input', JSON.stringify({ features: [row] }), '--json', ...addrs()], {
      INFERMESH_TLS_CA: pki.ca,
      INFERMESH_TLS_CERT: pki.clientCert,
      INFERMESH_TLS_KEY: pki.clientKey,
    });
    expect(inferred.code, inferred.stderr).toBe(0);
    expect(inferred.stdout).toContain(String(model.forward(row)[0]!).slice(0, 5));
    // Without a client certificate: a clean line that says what is missing, no OpenSSL internals.
    const noCert = await run(['infer', 'secure', '--input', JSON.stringify({ features: [row] }), ...addrs(), '--tls-ca', pki.ca]);
    expect(noCert.code).toBe(1);
    expect(noCert.stderr).toMatch(/^error: UNAVAILABLE: TLS: the router at 127\.0\.0\.1:\d+ requires a client certificate signed by its CA; give --tls-cert and --tls-key$/m);
    expect(noCert.stderr).not.toMatch(/openssl|\.c:\d+/);
    const badFile = await run(['models', 'list', ...addrs(), '--tls-ca', path.join(dir, 'missing.pem')]);
    expect(badFile.code).toBe(2);
    expect(badFile.stderr).toMatch(/^error: INVALID_ARGUMENT: --tls-ca \(INFERMESH_TLS_CA\)=.*cannot read the file \(ENOENT\)/m);
  });

  it('token hash: the sha256 line for a token from stdin, or a new random token', async () => {
    const fromStdin = await run(['token', 'hash', '--subject', 'ci', '--roles', 'push,promote'], {}, 'my-secret\n');
    expect(fromStdin.code, fromStdin.stderr).toBe(0);
    expect(fromStdin.stdout).toBe(`${tokenHash('my-secret')} ci push,promote\n`);
    const generated = await run(['token', 'hash', '--json']);
    const j = JSON.parse(generated.stdout) as { token: string; hash: string };
    expect(j.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(j.hash).toBe(tokenHash(j.token));
    const bad = await run(['token', 'hash', '--subject', 'ci', '--roles', 'deploy']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: INVALID_ARGUMENT: --roles: unknown role "deploy"/m);
  });
});
