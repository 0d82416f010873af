/**
 * The infermesh CLI as a process (dist/services/cli/main.js) against a real
 * mesh from the harness, plus `up --demo` starting a whole mesh of its own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { CLI, cli, expectCleanError, json } from './run-cli.js';

describe('cli against a running mesh', () => {
  let mesh: Mesh;
  let dir: string;
  let g: string[];
  const m1 = mlpModel({ inputs: 4, hidden: [8], outputs: 2, seed: 1 });
  const m2 = mlpModel({ inputs: 4, hidden: [8], outputs: 2, seed: 2 });
  const NAME = 'clitest';

  beforeAll(async () => {
    mesh = await startMesh({ replicas: 1 });
    g = ['--registry', mesh.registryAddr, '--router', mesh.routerAddr, '--monitor', mesh.monitorAddr];
    dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-cli-'));
    await writeFile(path.join(dir, 'm1.onnx'), m1.bytes);
    await writeFile(path.join(dir, 'm2.onnx'), m2.bytes);
  });
  afterAll(async () => {
    await mesh?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('models push --json returns the new version record', async () => {
    const v = json(await cli(['models', 'push', path.join(dir, 'm1.onnx'), '--name', NAME, '--alias', 'production', '--json', ...g]));
    expect(v).toMatchObject({ name: NAME, version: 1, sizeBytes: m1.bytes.byteLength, batchable: true });
    expect(v.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(v.inputs).toEqual([{ name: 'features', datatype: 'FP32', shape: [-1, 4] }]);
    expect(v.outputs).toEqual([{ name: 'score', datatype: 'FP32', shape: [-1, 2] }]);
  });

  it('models push prints a table for people', async () => {
    const r = await cli(['models', 'push', path.join(dir, 'm2.onnx'), '--name', NAME, '--description', 'second', '--max-batch', '8', ...g]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^version\s+2$/m);
    expect(r.stdout).toMatch(/^inputs\s+features FP32\[-1,4\]$/m);
  });

  it('models list and show', async () => {
    const list = json(await cli(['models', 'list', '--json', ...g]));
    expect(list.models).toContainEqual({ name: NAME, versions: [1, 2], latest: 2, aliases: { production: 1 }, archived: [] });
    const table = await cli(['models', 'list', ...g]);
    expect(table.stdout).toMatch(new RegExp(`^MODEL\\s+VERSIONS\\s+LATEST\\s+ALIASES\\n(.*\\n)*${NAME}\\s+2\\s+2\\s+production=1$`, 'm'));

    const show = json(await cli(['models', 'show', NAME, '--json', ...g]));
    expect(show.aliases).toEqual({ production: 1 });
    expect(show.versions.map((v: { version: number }) => v.version)).toEqual([1, 2]);
    expect(show.versions[1]).toMatchObject({ description: 'second', batching: { maxBatchSize: 8 } });
    const people = await cli(['models', 'show', NAME, ...g]);
    expect(people.code).toBe(0);
    expect(people.stdout).toContain(show.versions[0].sha256.slice(0, 12));
    expect(people.stdout).toMatch(/^\s*1\s+[0-9a-f]{12}\s.*features FP32\[-1,4\].*production\s+-\s+-$/m);
  });

  it('infer with the object form fills in datatype and shape from the metadata', async () => {
    await mesh.waitReady(NAME, '1');
    const rows = [
      [0.1, 0.2, 0.3, 0.4],
      [-1, 0.5, 2, 0],
    ];
    const out = json(await cli(['infer', NAME, '--input', JSON.stringify({ features: rows }), '--id', 'obj-1', '--json', ...g]));
    expect(out).toMatchObject({ model_name: NAME, model_version: '1', id: 'obj-1' });
    expect(out.outputs).toHaveLength(1);
    expect(out.outputs[0]).toMatchObject({ name: 'score', datatype: 'FP32', shape: [2, 2] });
    const want = m1.forward(rows.flat());
    (out.outputs[0].data as number[]).forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 5));

    // One row without the batch dimension is taken as batch 1.
    const one = json(await cli(['infer', NAME, '--input', JSON.stringify({ features: rows[0] }), '--json', ...g]));
    expect(one.outputs[0].shape).toEqual([1, 2]);
  });

  it('infer with OIP tensors, a version and a table', async () => {
    await mesh.waitReady(NAME, '2');
    const row = [0.5, -0.25, 1, 2];
    const tensors = [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: row }];
    const out = json(await cli(['infer', NAME, '--input', JSON.stringify(tensors), '--version', '2', '--id', 't-7', '--json', ...g]));
    expect(out).toMatchObject({ model_version: '2', id: 't-7' });
    const want = m2.forward(row);
    (out.outputs[0].data as number[]).forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 5));

    const table = await cli(['infer', NAME, '--input', JSON.stringify(tensors), '--output', 'score', ...g]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^OUTPUT\s+DATATYPE\s+SHAPE\s+VALUES$/m);
    expect(table.stdout).toMatch(/^score\s+FP32\s+\[1,2\]\s+[-\d.e]+ [-\d.e]+$/m);
  });

  it('models promote moves the alias', async () => {
    const p = json(await cli(['models', 'promote', NAME, '2', '--json', ...g]));
    expect(p).toEqual({ name: NAME, alias: 'production', version: 2, previous: 1 });
    const show = json(await cli(['models', 'show', NAME, '--json', ...g]));
    expect(show.aliases).toEqual({ production: 2 });
    const staging = await cli(['models', 'promote', NAME, '1', '--alias', 'staging', ...g]);
    expect(staging.stdout.trim()).toBe(`${NAME}: staging → 1`);
  });

  it('stats shows the traffic per version', async () => {
    let versions: { name: string; version: number; requests: number }[] = [];
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      const r = await cli(['stats', NAME, '--json', ...g]);
      if (r.code === 0) {
        versions = json(r).versions;
        // Three calls went to v1 (production then) and one asked for v2.
        if (versions.some((v) => v.version === 1 && v.requests >= 3) && versions.some((v) => v.version === 2 && v.requests >= 1)) break;
      }
      await new Promise((res) => setTimeout(res, 250));
    }
    expect(versions.find((v) => v.version === 1)?.requests).toBe(3);
    expect(versions.find((v) => v.version === 2)?.requests).toBe(1);
    const table = await cli(['stats', ...g]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^MODEL\s+VERSION\s+REQUESTS\s+ERRORS\s+ERROR_%\s+P50_MS\s+P95_MS\s+P99_MS\s+RPS$/m);
    expect(table.stdout).toMatch(new RegExp(`^${NAME}\\s+1\\s+[1-9]\\d*\\s+0\\s`, 'm'));
  });

  it('models unload stops the model serving (infer UNAVAILABLE naming the unload), models load serves it again; both in the history', async () => {
    const input = ['--input', JSON.stringify({ features: [[1, 0, 1, 0]] })];
    const off = await cli(['models', 'unload', NAME, '--reason', 'cli test', ...g]);
    expect(off.stdout.trim()).toBe(`${NAME}: unloaded (every router answers UNAVAILABLE until \`models load ${NAME}\`; replicas keep it warm)`);
    // The router applies the registry's mark as it sees the KV change.
    let refused = await cli(['infer', NAME, ...input, ...g]);
    for (let i = 0; i < 50 && refused.code === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      refused = await cli(['infer', NAME, ...input, ...g]);
    }
    expectCleanError(refused, 1, 'UNAVAILABLE');
    expect(refused.stderr).toMatch(/unloaded \(RepositoryModelUnload\); load it to serve/);
    expect(json(await cli(['models', 'load', NAME, '--json', ...g]))).toMatchObject({ name: NAME, serving: true });
    let served = await cli(['infer', NAME, ...input, ...g]);
    for (let i = 0; i < 50 && served.code !== 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      served = await cli(['infer', NAME, ...input, ...g]);
    }
    expect(served.code, served.stderr).toBe(0);
    const history = (await cli(['models', 'history', NAME, ...g])).stdout;
    expect(history).toMatch(/serving_stopped/);
    expect(history).toMatch(/serving_resumed/);
  });

  it('errors: unknown model, bad input, bad flags, unreachable service', async () => {
    expectCleanError(await cli(['infer', 'nosuchmodel', '--input', '{"features":[[1,2,3,4]]}', ...g]), 1, 'NOT_FOUND');
    expectCleanError(await cli(['infer', 'nosuchmodel', '--input', '[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]', '--json', ...g]), 1, 'NOT_FOUND');
    expectCleanError(await cli(['models', 'show', 'nosuchmodel', ...g]), 1, 'NOT_FOUND');

    const bad = await cli(['infer', NAME, '--input', '{features: [1,2', ...g]);
    expectCleanError(bad, 2, 'INVALID_ARGUMENT');
    expect(bad.stderr).toContain('--input is not valid JSON');
    const noSuchInput = await cli(['infer', NAME, '--input', '{"pixels":[1,2,3,4]}', ...g]);
    expectCleanError(noSuchInput, 2, 'INVALID_ARGUMENT');
    expect(noSuchInput.stderr).toContain('no input "pixels" (inputs: features)');
    expectCleanError(await cli(['infer', NAME, '--input', '[{"name":"features","datatype":"FP32","shape":[1,4],"data":[1,2,3]}]', ...g]), 2, 'INVALID_ARGUMENT');

    expectCleanError(await cli(['models', 'promote', NAME, 'two', ...g]), 2, 'INVALID_ARGUMENT');
    expectCleanError(await cli(['models', 'push', path.join(dir, 'm1.onnx'), ...g]), 2, 'INVALID_ARGUMENT');
    expectCleanError(await cli(['models', 'list', '--registry', '127.0.0.1:1']), 1, 'UNAVAILABLE');
  });
});

describe('up --demo', () => {
  let dir: string;
  let proc: ChildProcess | undefined;
  afterAll(async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('starts a mesh, serves demo traffic, prints stats and stops cleanly on SIGINT', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-up-'));
    const [nats, router, rest, registry, monitor, metrics, inference] = await freePorts(7);
    const p = spawn(
      process.execPath,
      [CLI, 'up', '--dir', dir, '--replicas', '1', '--demo', '--demo-requests', '300',
        '--nats-port', String(nats), '--router-port', String(router), '--rest-port', String(rest), '--registry-port', String(registry),
        '--monitor-port', String(monitor), '--metrics-port', String(metrics), '--inference-port', String(inference)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    proc = p;
    let stdout = '';
    let stderr = '';
    p.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    const requests = await new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no demo stats within 60 s\nstdout:\n${stdout}\nstderr:\n${stderr}`)), 60_000);
      p.stdout!.on('data', (b: Buffer) => {
        stdout += b.toString();
        const row = /^fraud\s+\d+\s+\d+ callers\s+(\d+)\s/m.exec(stdout);
        if (row) {
          clearTimeout(t);
          resolve(Number(row[1]));
        }
      });
      void exited.then((code) => reject(new Error(`up exited (${code})\n${stderr}`)));
    });
    expect(requests).toBeGreaterThan(0);
    expect(stdout).toMatch(new RegExp(`^infermesh ready: router 127\\.0\\.0\\.1:${router}\\b`, 'm'));
    // What the demo's callers saw beside the router's own latency.
    expect(stdout).toMatch(/^MODEL\s+VERSION\s+SEEN_BY\s+REQUESTS\s+ERRORS\s+P50_MS\s+P95_MS\s+P99_MS\s+REQ\/S$/m);
    expect(stdout).toMatch(/^fraud\s+1\s+router\s+\d+\s+0\s/m);
    expect(stderr).toMatch(new RegExp(`^starting registry… ok \\(:${registry}\\)$`, 'm'));

    const children = descendants(p.pid!);
    // nats-server, registry, monitor, one replica, router.
    expect(children.length).toBeGreaterThanOrEqual(5);

    p.kill('SIGINT');
    expect(await exited).toBe(0);
    for (const pid of children) expect(alive(pid), `pid ${pid} still running`).toBe(false);
    expect(readFileSync(path.join(dir, 'logs', 'router.log'), 'utf8')).toContain('"msg":"listening"');
  }, 90_000);
});

function freePorts(n: number): Promise<number[]> {
  // Hold all servers open until each has a port, so the ports differ.
  const servers = Array.from({ length: n }, () => net.createServer());
  return Promise.all(
    servers.map((s) => new Promise<number>((resolve, reject) => {
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port));
    })),
  ).finally(() => servers.forEach((s) => s.close()));
}

/** Every process below `root`, from /proc. */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the ")" that ends the command name: state, ppid, …
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(entry), ppid);
    } catch {
      // Exited while we looked.
    }
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    for (const [child, pp] of parent) if (pp === pid) {
      out.push(child);
      walk(child);
    }
  };
  walk(root);
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers signal 0; it is gone for our purposes.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
