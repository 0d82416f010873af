/**
 * The README's five-minute tour, walked as a user would: `infermesh up
 * --demo` in an empty folder with every port 0, then each command of the
 * tour's ```sh blocks, in order, run by bash in that folder with `npx
 * infermesh` meaning the built CLI. No command gets an address: the CLI
 * finds the mesh through .infermesh/addresses.json, as the tour says. Each
 * command must exit 0, except those documented to fail (`# error: CODE:
 * text`), which must fail with that line. Commands of tools that are not
 * installed (grpcurl) are the only ones skipped.
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

/** `npx infermesh …` runs the built CLI; any other npx would reach for the network. */
const PRELUDE = `npx() { if [ "$1" = infermesh ]; then shift; node ${JSON.stringify(CLI)} "$@"; else echo "npx $1: not in the tour" >&2; return 127; fi; }\n`;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sh(cwd: string, line: string, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve) => {
    const p = spawn('bash', ['-c', PRELUDE + line], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFERMESH_DIR: '' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
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
      const check = () => {
        if (/press Ctrl-C to stop/.test(upErr)) {
          clearTimeout(t);
          resolve();
        }
      };
      up!.stderr!.on('data', check);
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
