/**
 * The README's five-minute tour, walked as a user would: `infermesh up
 * --demo` in an empty folder with every port 0, then each command of the
 * tour's ```sh blocks, in order, run by bash in that folder with `npx
 * infermesh` meaning the built CLI. No command gets an address: the CLI
 * finds the mesh through .infermesh/addresses.json, as the tour says. Each
 * command must exit 0, except those documented to fail (`# error: CODE:
 * text`), which must fail with that line. Commands of tools that are not
 * installed (grpcurl) are the only ones skipped. Then, on the same mesh, the ```sh blocks of the
 * sections that operate a running mesh (OPERATE below), the same way.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from './run-cli.js';
import { codeBlocks, readmeSection, shellCommands, type ShellCommand } from './readme-text.js';

const TOUR = codeBlocks(readmeSection('A five-minute tour')).filter((b) => b.lang === 'sh');
const COMMANDS = TOUR.flatMap((b) => shellCommands(b.body));

/**
 * After the tour, on the same mesh, in README order: the sections that operate a running mesh.
 * REST's curl and the later curl loops name the default REST port (localhost:8501); the test
 * points them at the mesh's (`rest` in addresses.json), as it lets the CLI find the rest.
 * "Optimize and compose" and "Keeping the registry in order" have no ```sh blocks (synopses and a
 * table only). Not walked, for they need other infrastructure: "Tracing" (an OTLP collector),
 * "Reliability" (kills processes, several routers), "Security" (openssl, TLS certificates,
 * tokens: a mesh started with them), "Deploying" and "Kubernetes" (Docker, a cluster), "Several
 * hosts" (a second machine joining through NATS), "Configuration" (flags of services started on
 * their own), `bench`/`tune` (minutes of load on meshes of their own).
 */
const OPERATE = [
  'REST (port 8501)',
  'Lifecycle',
  'Optimize and compose',
  'Keeping the registry in order',
  'Drift',
  'Ground truth and online evaluation',
  'Experiments: eval --compare, cost, segments, retraining',
  'Alerts, golden probes and canary analysis',
];
const OPERATE_COMMANDS = OPERATE.flatMap((s) => codeBlocks(readmeSection(s)).filter((b) => b.lang === 'sh')).flatMap((b) => shellCommands(b.body));

/** `npx infermesh …` runs the built CLI; any other npx would reach for the network. */
const PRELUDE = `npx() { if [ "$1" = infermesh ]; then shift; node ${JSON.stringify(CLI)} "$@"; else echo "npx $1: not in the tour" >&2; return 127; fi; }\n`;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * `stopAfterMs`: a command that runs until Ctrl-C (`--watch`) gets SIGINT, to its whole process
 * group, after that long; `running` says it was still running then.
 */
function sh(cwd: string, line: string, timeoutMs = 60_000, stopAfterMs?: number): Promise<Ran & { running?: boolean }> {
  return new Promise((resolve) => {
    const p = spawn('bash', ['-c', PRELUDE + line], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFERMESH_DIR: '' }, detached: stopAfterMs !== undefined });
    let stdout = '';
    let stderr = '';
    let running: boolean | undefined;
    p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const stop = stopAfterMs === undefined ? undefined : setTimeout(() => {
      running = p.exitCode === null;
      if (running) process.kill(-p.pid!, 'SIGINT');
    }, stopAfterMs);
    const t = setTimeout(() => (stopAfterMs === undefined ? p.kill('SIGKILL') : process.kill(-p.pid!, 'SIGKILL')), timeoutMs);
    p.once('close', (code) => {
      clearTimeout(t);
      if (stop) clearTimeout(stop);
      resolve({ code, stdout, stderr, running });
    });
  });
}

const installed = (tool: string) => spawnSync('bash', ['-c', `command -v ${tool}`]).status === 0;

describe('README: a five-minute tour, on a fresh up --demo', () => {
  let dir: string;
  let up: ChildProcess | undefined;
  let upErr = '';
  let upOut = '';

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-tour-'));
    const zero = ['--router-port', '--rest-port', '--registry-port', '--monitor-port', '--metrics-port', '--inference-port', '--nats-port'].flatMap((f) => [f, '0']);
    // One replica keeps the machine's two cores for the rest; the tour's commands are the same with two.
    up = spawn(process.execPath, [CLI, 'up', '--demo', '--demo-requests', '200', '--replicas', '1', '--workers', '1', ...zero], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    up.stderr!.on('data', (b: Buffer) => (upErr += b.toString()));
    up.stdout!.on('data', (b: Buffer) => (upOut += b.toString()));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`up --demo not ready in 90 s:\n${upErr}`)), 90_000);
      // The demo's table (stdout) can arrive after the ready line (stderr): wait for both.
      const check = () => {
        if (/press Ctrl-C to stop/.test(upErr) && /^fraud\s+1\s+router\s/m.test(upOut)) {
          clearTimeout(t);
          resolve();
        }
      };
      up!.stderr!.on('data', check);
      up!.stdout!.on('data', check);
      up!.once('exit', (code) => reject(new Error(`up exited (${code}):\n${upErr}`)));
    });
  }, 120_000);

  afterAll(async () => {
    if (up && up.exitCode === null) {
      const exited = new Promise((r) => up!.once('exit', r));
      up.kill('SIGINT');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      if (up.exitCode === null) up.kill('SIGKILL');
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the tour has commands, and the demo prints what the README shows', () => {
    expect(COMMANDS.length).toBeGreaterThan(15);
    // Two commands: the ready line with absolute paths, the callers' and the router's latency.
    expect(upOut).toMatch(new RegExp(`logs in ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/\\.infermesh/logs, sampled spans in .*/\\.infermesh/traces$`, 'm'));
    expect(upOut).toMatch(/^MODEL\s+VERSION\s+SEEN_BY\s+REQUESTS\s+ERRORS\s+P50_MS\s+P95_MS\s+P99_MS\s+REQ\/S$/m);
    expect(upOut).toMatch(/^fraud\s+1\s+4 callers\s+200\s+0\s/m);
    expect(upOut).toMatch(/^fraud\s+1\s+router\s+201\s+0\s/m);
  });

  it('up passes --workers to the replicas and --sample-rate (default 1) to the routers', async () => {
    const file = JSON.parse(await readFile(path.join(dir, '.infermesh/processes.json'), 'utf8')) as { processes: { name: string; pid: number }[] };
    const args = (name: string) => (readFileSync(`/proc/${file.processes.find((p) => p.name === name)!.pid}/cmdline`, 'utf8')).split('\0');
    const flag = (a: string[], f: string) => a[a.indexOf(f) + 1];
    expect(flag(args('inference-1'), '--workers')).toBe('1');
    expect(flag(args('router'), '--sample-rate')).toBe('1');
  });

  it('every command runs in order, with no address given: exit 0, or the documented error', async () => {
    const outputs = new Map<string, string>();
    for (const c of COMMANDS) {
      const tool = c.line.split(/\s+/)[0]!;
      if (tool !== 'npx' && tool !== 'echo' && !installed(tool)) continue; // grpcurl: not in Debian's archive
      const r = await sh(dir, c.line);
      const what = `${c.line}\nexit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
      if (c.expectError) expectDocumentedError(r, c, what);
      else {
        expect(r.code, what).toBe(0);
        expect(r.stderr, what).not.toMatch(/^error: /m);
      }
      outputs.set(c.line, r.stdout);
    }
    const out = (prefix: string) => [...outputs.entries()].find(([line]) => line.startsWith(prefix))?.[1] ?? '';
    // What the prose around the commands says they show.
    expect(out('npx infermesh models show fraud')).toMatch(/features FP32\[-1,8\]\s+fraud_probability FP32\[-1,1\]/);
    expect(Number(/^fraud_probability\s+FP32\s+\[1,1\]\s+(\S+)$/m.exec(out("npx infermesh infer fraud --input '{\"features\""))?.[1])).toBeCloseTo(0.99998, 4);
    expect(out('npx infermesh models example --out my-model.onnx')).toMatch(/input\s+features FP32 \[batch, 8\]/);
    expect(out('npx infermesh infer fraud@staging')).toMatch(/^model fraud\s+version 2$/m);
    expect(out('npx infermesh infer fraud --version 1')).toMatch(/^model fraud\s+version 1$/m);
    expect(out('npx infermesh traces show --slowest fraud')).toMatch(/^ModelInfer\s+router\s+0\.000\s/m);
    expect(JSON.parse(await readFile(path.join(dir, 'golden.json'), 'utf8'))).toEqual({ features: [[120, 23, 0.7, 800, 5, 30, 1, 0]] });
  }, 180_000);

  it('then every command of the sections that operate a running mesh, in README order, on the same mesh', async () => {
    expect(OPERATE_COMMANDS.length).toBeGreaterThan(30);
    const rest = (JSON.parse(await readFile(path.join(dir, '.infermesh/addresses.json'), 'utf8')) as { rest: string }).rest;
    const outputs = new Map<string, string>();
    for (const c of OPERATE_COMMANDS) {
      const line = c.line.replaceAll('localhost:8501', rest);
      if (/--watch\b/.test(line)) {
        // Runs until Ctrl-C: still running after 3 s with no error, then stopped by SIGINT.
        const r = await sh(dir, line, 20_000, 3_000);
        const what = `${line}\nexit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
        expect(r.running, what).toBe(true);
        expect(r.stderr, what).not.toMatch(/^error: /m);
        outputs.set(c.line, r.stdout);
        continue;
      }
      const r = await sh(dir, line);
      const what = `${line}\nexit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
      if (c.expectError) expectDocumentedError(r, c, what);
      else {
        expect(r.code, what).toBe(0);
        expect(r.stderr, what).not.toMatch(/^error: /m);
      }
      outputs.set(c.line, r.stdout);
    }
    const out = (prefix: string) => [...outputs.entries()].find(([line]) => line.startsWith(prefix))?.[1] ?? '';
    // What the prose says they show.
    expect(out('curl -s localhost:8501/v1/models/fraud:predict')).toMatch(/^\{"predictions":\[\[0\.9999\d*\]\]\}/);
    expect(out('npx infermesh models shadow fraud 2')).toMatch(/shadow → v2 mirroring 50%/);
    expect(out('npx infermesh outcomes fraud labels.csv')).toMatch(/^recorded\s+200$/m);
    expect(out('npx infermesh eval fraud --compare 1 2 --json')).toMatch(/^\{/);
    expect(out('npx infermesh eval fraud --by-segment')).toMatch(/\bapp\b[\s\S]*\bweb\b|\bweb\b[\s\S]*\bapp\b/);
    expect(out('npx infermesh stats fraud --watch')).toMatch(/VERSION/);
    expect(readFileSync(path.join(dir, 'v2.jsonl'), 'utf8').trim().split('\n').length).toBeGreaterThan(50);
  }, 240_000);

  it('traces show draws a sampled request end to end from the span files up keeps: router, replica, queue, batch, onnx.run, encode', async () => {
    // A request the head sampler kept (5 %) has replica spans; up wrote them to .infermesh/traces/inference-1.jsonl.
    const replicaSpans = (await readFile(path.join(dir, '.infermesh/traces/inference-1.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { name: string; traceId: string });
    const traceId = replicaSpans.find((s) => s.name === 'inference')?.traceId;
    expect(traceId, 'no sampled request among the tour\'s').toMatch(/^[0-9a-f]{32}$/);
    const r = await sh(dir, `npx infermesh traces show ${traceId}`);
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n');
    expect(rows[0]).toMatch(new RegExp(`^trace ${traceId}: \\d+ spans over \\d+\\.\\d{3} ms$`));
    // Indented by depth; start and duration in ms; a bar inside |…|.
    const names = rows.slice(2).map((l) => /^(\s*)(\S+)\s+(\S+)\s+(\d+\.\d{3})\s+(\d+\.\d{3})\s+\|[ █]+\|/.exec(l)).map((m) => m && `${m[1]!.length / 2}:${m[2]}@${m[3]}`);
    expect(names).toEqual(['0:ModelInfer@router', '1:forward@router', '2:inference@inference-1', '3:queue@inference-1', '3:batch@inference-1', '4:onnx.run@inference-1', '3:encode@inference-1']);
    expectDocumentedError(await sh(dir, 'npx infermesh traces show 0123456789abcdef0123456789abcdef'), { line: '', expectError: { code: 'NOT_FOUND', text: 'trace 0123456789abcdef0123456789abcdef is not in' } }, 'unknown trace');
  });
});

function expectDocumentedError(r: Ran, c: ShellCommand, what: string): void {
  expect(r.code, what).toBe(1);
  expect(r.stdout, what).toBe('');
  expect(r.stderr.startsWith(`error: ${c.expectError!.code}: ${c.expectError!.text}`), what).toBe(true);
}
