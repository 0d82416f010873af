/**
 * Service identity and failures that say what they are, against real
 * processes and certificates made by openssl: one mutual-TLS mesh whose
 * services carry service certificates (URI SAN spiffe://infermesh/service/…)
 * and whose scoring clients carry client certificates from the same CA.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceApi, RegistryApi } from '../../libs/client/index.js';
import { SERVICE_NODE_FLAGS } from '../../libs/config/index.js';
import { Status } from '../../libs/errors/index.js';
import type { TlsMaterial } from '../../libs/grpc/index.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { RuntimeClient } from '../../libs/proto/index.js';
import { makeCert, makeTestPki, type TestPki } from '../harness/certs.js';
import { startMesh, type Mesh, type ServiceProc } from '../harness/mesh.js';
import { CLI } from '../cli/run-cli.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SERVICES = ['registry', 'inference', 'router', 'monitor'] as const;

let dir: string;
let pki: TestPki;
let mesh: Mesh;
let clientTls: TlsMaterial;
let certs: Record<'untrustedService' | 'expiredService' | 'futureService' | 'expiredClient' | 'plainClient', { cert: string; key: string }>;
const opened: { close(): void }[] = [];
const model = mlpModel({ inputs: 4, hidden: [8], outputs: 1 });
const input = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [0.1, 0.2, 0.3, 0.4] }];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node <script> args` to completion with `env` added (no INFERMESH_TLS_* from the caller's environment). */
function runNode(script: string, args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('INFERMESH_')));
    const p = spawn(process.execPath, [...SERVICE_NODE_FLAGS, script, ...args], { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`${script} ${args.join(' ')} did not exit in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

const service = (name: string) => path.join(ROOT, 'dist/services', name, 'main.js');
const cli = (args: string[]) => runNode(CLI, args);

/** The gRPC code name a callback-style unary call ends with ('OK' when it succeeds). */
function codeOf(call: (cb: (err: grpc.ServiceError | null) => void) => void): Promise<{ code: string; details: string }> {
  return new Promise((resolve) => call((err) => resolve({ code: err ? Status[err.code]! : 'OK', details: err?.details ?? '' })));
}

function runtime(port: number, cert: Buffer, key: Buffer): RuntimeClient {
  const c = new RuntimeClient(`127.0.0.1:${port}`, grpc.credentials.createSsl(clientTls.ca!, key, cert));
  opened.push(c);
  return c;
}

/** GET on the router's HTTPS port with the client certificate: status and parsed or raw body. */
function restGet(p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: Number(mesh.router.info.restPort), path: p, ca: clientTls.ca, cert: clientTls.cert, key: clientTls.key, servername: 'localhost' },
      (res) => {
        let body = '';
        res.on('data', (b: Buffer) => (body += b.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-identity-'));
  pki = await makeTestPki(dir);
  const [untrustedService, expiredService, futureService, expiredClient] = await Promise.all([
    makeCert(pki, 'untrusted-replica', { ca: 'rogue-ca', service: 'inference' }),
    makeCert(pki, 'expired-service', { service: 'registry', notBefore: '20200101000000Z', notAfter: '20200102000000Z' }),
    makeCert(pki, 'future-service', { service: 'router', notBefore: '20991231000000Z', notAfter: '21000101000000Z' }),
    makeCert(pki, 'expired-client', { notBefore: '20200101000000Z', notAfter: '20200102000000Z' }),
  ]);
  certs = { untrustedService, expiredService, futureService, expiredClient, plainClient: { cert: pki.clientCert, key: pki.clientKey } };
  clientTls = { ca: await readFile(pki.ca), cert: await readFile(pki.clientCert), key: await readFile(pki.clientKey) };
  mesh = await startMesh({
    replicas: 1,
    env: { INFERMESH_TLS_CERT: pki.serverCert, INFERMESH_TLS_KEY: pki.serverKey, INFERMESH_TLS_CA: pki.ca },
    client: { tls: clientTls },
  });
  for (const s of [mesh.registry, mesh.router, mesh.replicas[0]!]) expect(s.info.tls).toBe('mutual');
  expect((await mesh.clients.registry.push(model.bytes, { name: 'ident', alias: 'production' })).version).toBe(1);
  await mesh.waitReady('ident');
}, 60_000);

afterAll(async () => {
  for (const c of opened) c.close();
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('service identity: the replicas’ Runtime API accepts only the mesh’s services', () => {
  it('a scoring client’s certificate (same CA) gets PERMISSION_DENIED from Load, Unload, Status and the Infer stream; the router still serves', async () => {
    const port = Number(mesh.replicas[0]!.info.grpcPort);
    const asClient = runtime(port, clientTls.cert!, clientTls.key!);
    const calls = {
      Load: (cb: (e: grpc.ServiceError | null) => void) => asClient.load({ model: 'ident', version: 1 }, cb),
      Unload: (cb: (e: grpc.ServiceError | null) => void) => asClient.unload({ model: 'ident', version: 1 }, cb),
      Status: (cb: (e: grpc.ServiceError | null) => void) => asClient.status({}, cb),
    };
    for (const [name, call] of Object.entries(calls)) {
      const r = await codeOf(call);
      expect(r.code, name).toBe('PERMISSION_DENIED');
      expect(r.details).toMatch(/only the mesh's services/);
    }
    const stream = asClient.infer();
    const streamCode = await new Promise<string>((resolve) => {
      stream.on('error', (e: grpc.ServiceError) => resolve(Status[e.code]!));
      stream.on('data', () => resolve('DATA'));
      stream.on('end', () => resolve('END'));
    });
    expect(streamCode).toBe('PERMISSION_DENIED');

    // A service certificate passes; the router → replica stream works (it is one).
    const asService = runtime(port, await readFile(pki.serverCert), await readFile(pki.serverKey));
    expect((await codeOf((cb) => asService.status({}, cb))).code).toBe('OK');
    const { outputs } = await mesh.clients.router.infer('ident', input, { timeoutMs: 5_000 });
    expect(outputs[0]!.data[0]).toBeCloseTo(model.forward(input[0]!.data)[0]!, 5);
  });

  it('a router given a client certificate under mutual TLS refuses to start, naming --tls-cert', async () => {
    const r = await runNode(service('router'), ['--port', '0', '--rest-port', '0', '--tls-cert', certs.plainClient.cert, '--tls-key', certs.plainClient.key, '--tls-ca', pki.ca]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^infermesh-router: --tls-cert \(INFERMESH_TLS_CERT\): .*no URI SAN spiffe:\/\/infermesh\/service\/<name>/);
  });
});

describe('a replica the router cannot verify', () => {
  let untrusted: ServiceProc;

  it('is logged once with the peer and the reason, is not ready (ModelReady, health, ServerReady), counts in the metrics; callers get a clean UNAVAILABLE', async () => {
    untrusted = await mesh.addReplica(['--tls-cert', certs.untrustedService.cert, '--tls-key', certs.untrustedService.key]);
    const address = String(untrusted.info.address);
    const line = await until('the router’s TLS log line', () =>
      mesh.router.logs.find((l) => l.includes(`replica ${address}: TLS: certificate signed by unknown authority`)),
    );
    expect(JSON.parse(line)).toMatchObject({ level: 50, address, reason: 'certificate signed by unknown authority' });
    // The good replica leaves: only the untrusted one is left serving the model.
    await mesh.replicas[0]!.stop();
    // Not ready: false, or NOT_FOUND once the router has no version of it to serve.
    await until('ModelReady false', async () => !(await mesh.clients.router.modelReady('ident', '').catch((e: grpc.ServiceError) => (e.code === Status.NOT_FOUND ? false : Promise.reject(e)))));
    const health = await until('health not ready', async () => {
      const h = await restGet('/v2/health/ready');
      return h.status === 503 && h;
    });
    expect(JSON.parse(health.body)).toMatchObject({ ready: false });
    expect(health.body).toMatch(/TLS/);
    expect(health.body).not.toContain(String(untrusted.info.replica ?? 'inf-'));
    expect(await mesh.clients.router.ready()).toBe(false);
    expect((await restGet('/v2/models/ident/ready')).status).toBe(503);
    const metrics = (await restGet('/metrics')).body;
    expect(metrics).toMatch(/^infermesh_router_tls_failing_replicas 1$/m);
    expect(Number(/^infermesh_router_replica_tls_failures_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
    // Callers: UNAVAILABLE that names no internal replica id.
    const err = await mesh.clients.router.infer('ident', input, { timeoutMs: 3_000 }).then(
      () => null,
      (e: grpc.ServiceError) => e,
    );
    expect(err && Status[err.code]).toBe('UNAVAILABLE');
    expect(err!.details).not.toMatch(/inf-[0-9a-f]{8}/);
    // Once per peer: the router keeps retrying the connection, but says it once.
    await new Promise((r) => setTimeout(r, 2_500));
    expect(mesh.router.logs.filter((l) => l.includes(`replica ${address}: TLS:`))).toHaveLength(1);
  });

  it('shows in the router’s replica view (GET /v2/replicas) and in `infermesh status` as not ready with the TLS reason; status exits 1', async () => {
    const address = String(untrusted.info.address);
    const view = await restGet('/v2/replicas');
    expect(view.status).toBe(200);
    const entry = (JSON.parse(view.body) as { replicas: { address: string }[] }).replicas.find((r) => r.address === address);
    expect(entry).toMatchObject({ ready: false, reason: 'TLS: certificate signed by unknown authority', ejected: false, inFlight: 0, connection: 'transient_failure' });

    // `status` reads the processes.json `up` keeps: here one naming these real processes (the untrusted replica, the router and its REST port).
    const state = path.join(dir, 'status-state');
    await mkdir(state, { recursive: true });
    const entryOf = (name: string, s: ServiceProc, extra: Record<string, number> = {}) => ({
      name, pid: s.proc.pid, state: 'running', startedAtMs: Date.now() - 5_000, restarts: 0, lastExit: '', lastExitAtMs: 0, port: Number(s.info.grpcPort), logFile: '', ...extra,
    });
    await writeFile(
      path.join(state, 'processes.json'),
      JSON.stringify({
        pid: process.pid, startedAtMs: Date.now() - 5_000, updatedAtMs: Date.now(), routers: [`127.0.0.1:${mesh.router.info.grpcPort}`],
        processes: [entryOf('router', mesh.router, { restPort: Number(mesh.router.info.restPort) }), entryOf('inference-1', untrusted)],
      }),
    );
    const tlsEnv = { INFERMESH_TLS_CA: pki.ca, INFERMESH_TLS_CERT: pki.clientCert, INFERMESH_TLS_KEY: pki.clientKey };
    const table = await runNode(CLI, ['status', '--dir', state], tlsEnv);
    expect(table.code, table.stderr).toBe(1);
    expect(table.stdout).toMatch(/^NAME\s+PID\s+STATE\s+UPTIME\s+RESTARTS\s+PORT\s+LAST EXIT\s+ROUTER VIEW$/m);
    expect(table.stdout).toMatch(/^inference-1\s.*\s-\s+not ready: TLS: certificate signed by unknown authority$/m);
    const json = await runNode(CLI, ['status', '--dir', state, '--json'], tlsEnv);
    expect(json.code).toBe(1);
    const s = JSON.parse(json.stdout) as { healthy: boolean; processes: { name: string; routerView: unknown }[] };
    expect(s.healthy).toBe(false);
    expect(s.processes.find((p) => p.name === 'inference-1')!.routerView).toMatchObject({ ready: false, reason: 'TLS: certificate signed by unknown authority' });
    // Without the CLI's TLS files the router's view cannot be read: unknown, never a false "ready".
    const blind = await runNode(CLI, ['status', '--dir', state]);
    expect(blind.stdout).toMatch(/^inference-1\s.*\s-\s+unknown$/m);
  });
});

describe('the CLI names TLS failures as TLS failures', () => {
  const addrs = () => ['--registry', mesh.registryAddr, '--router', mesh.routerAddr, '--monitor', mesh.monitorAddr];

  it('plaintext against TLS, an untrusted server certificate, a refused client certificate, an expired client certificate', async () => {
    const [plain, untrusted, refused, expired] = await Promise.all([
      cli(['models', 'list', ...addrs()]),
      cli(['models', 'list', ...addrs(), '--tls-ca', path.join(dir, 'rogue-ca.pem'), '--tls-cert', pki.clientCert, '--tls-key', pki.clientKey]),
      cli(['models', 'list', ...addrs(), '--tls-ca', pki.ca, '--tls-cert', pki.rogueCert, '--tls-key', pki.rogueKey]),
      cli(['models', 'list', ...addrs(), '--tls-ca', pki.ca, '--tls-cert', certs.expiredClient.cert, '--tls-key', certs.expiredClient.key]),
    ]);
    for (const r of [plain, untrusted, refused, expired]) {
      console.log(`security-identity: CLI → ${r.stderr.trim()}`);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(/is the mesh running|openssl|\.c:\d+|^\s+at /m);
    }
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/^error: UNAVAILABLE: TLS: the registry at 127\.0\.0\.1:\d+ speaks TLS and this command plaintext; give --tls-ca/);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/^error: UNAVAILABLE: TLS: the certificate of the registry at .* is not signed by the CA given with --tls-ca \(certificate signed by unknown authority\)/);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error: UNAVAILABLE: TLS: the registry at .* refused the client certificate \(--tls-cert\): not signed by the CA it trusts/);
    expect(expired.code).toBe(2);
    expect(expired.stderr).toMatch(/^error: INVALID_ARGUMENT: --tls-cert \(INFERMESH_TLS_CERT\)=".*expired-client\.pem": TLS: the certificate expired at 2020-01-02T00:00:00\.000Z/);
  });
});

describe('start-up of every service', () => {
  it('--help prints the usage and exits 0', async () => {
    const runs = await Promise.all(SERVICES.map((s) => runNode(service(s), ['--help'])));
    runs.forEach((r, i) => {
      expect(r.code, `${SERVICES[i]}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^usage: node dist/services/${SERVICES[i]}/main\\.js`));
      expect(r.stdout).toMatch(/--tls-cert VALUE\s+INFERMESH_TLS_CERT/);
      expect(r.stdout).toMatch(/--port N\s+INFERMESH_\w+_PORT \(default \d+\)/);
    });
  });

  it('a bad value or unknown flag: one line naming it, exit 2, no stack trace', async () => {
    const runs = await Promise.all(SERVICES.flatMap((s) => [runNode(service(s), ['--port', 'eighty']), runNode(service(s), ['--colour', 'blue'])]));
    runs.forEach((r, i) => {
      const s = SERVICES[i >> 1]!;
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(i % 2 === 0 ? new RegExp(`^infermesh-${s}: --port="eighty": expected an integer`) : new RegExp(`^infermesh-${s}: unknown flag --colour`));
    });
  });

  it('a port in use: one line naming the address and the flags, exit 1', async () => {
    const r = await runNode(service('router'), ['--nats', mesh.nats.url, '--port', String(mesh.registry.info.grpcPort), '--rest-port', '0']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toBe(`infermesh-router: cannot listen on 127.0.0.1:${mesh.registry.info.grpcPort} (--host, --port): address already in use\n`);
  });

  it('its own expired or not-yet-valid certificate stops start-up naming the flag', async () => {
    const tlsArgs = (c: { cert: string; key: string }) => ['--port', '0', '--tls-cert', c.cert, '--tls-key', c.key, '--tls-ca', pki.ca];
    const [expired, future] = await Promise.all([
      runNode(service('registry'), tlsArgs(certs.expiredService)),
      runNode(service('router'), [...tlsArgs(certs.futureService), '--rest-port', '0']),
    ]);
    expect(expired.code).toBe(2);
    expect(expired.stderr.trim().split('\n')).toHaveLength(1);
    expect(expired.stderr).toMatch(/^infermesh-registry: --tls-cert \(INFERMESH_TLS_CERT\)=".*expired-service\.pem": TLS: the certificate expired at 2020-01-02T00:00:00\.000Z$/m);
    expect(future.code).toBe(2);
    expect(future.stderr).toMatch(/^infermesh-router: --tls-cert \(INFERMESH_TLS_CERT\)=".*future-service\.pem": TLS: the certificate is not valid before 2099-12-31T00:00:00\.000Z$/m);
  });
});
