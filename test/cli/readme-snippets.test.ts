/**
 * The README tour's code examples (grpc-js, Python grpcio, the typed
 * TypeScript client), each run as shown in an empty folder: the file named
 * on its first line, the `$` lines of its header run in order by bash
 * (`/path/to/infermesh` being this repository), against a real mesh that
 * serves the demo fraud model. The only change to the text is the router's
 * address (the mesh listens on a free port, not 8500). npm runs offline: a
 * package missing from npm's cache is linked from this repository's
 * node_modules instead, as `npm install <folder>` would.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trainFraudModel } from '../../libs/onnx-builder/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { codeBlocks, readmeSection, ROOT } from './readme-text.js';

const SNIPPETS = codeBlocks(readmeSection('A five-minute tour')).filter((b) => ['js', 'python', 'ts'].includes(b.lang));

interface Snippet {
  lang: string;
  file: string;
  steps: string[];
  code: string;
}

/** The file name (first comment line) and the `$` steps of a snippet's header. */
function parse(lang: string, body: string): Snippet {
  const comment = lang === 'python' ? '#' : '//';
  const lines = body.split('\n');
  const file = /^\S+\s+(\S+\.(?:mjs|py|ts))\b/.exec(lines[0]!)?.[1];
  if (!file) throw new Error(`the ${lang} example does not start with its file name: ${lines[0]}`);
  const steps = lines
    .filter((l) => l.startsWith(comment))
    .map((l) => new RegExp(`^${comment}\\s+\\$\\s+(.*?)\\s*(\\(.*\\))?$`).exec(l)?.[1])
    .filter((s): s is string => s !== undefined);
  return { lang, file, steps, code: body };
}

interface Ran {
  code: number | null;
  out: string;
}

function sh(cwd: string, line: string, timeoutMs = 120_000): Promise<Ran> {
  return new Promise((resolve) => {
    // Debian's python3 (with python3-grpcio), as the README says, ahead of any other on PATH.
    const env = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}`, npm_config_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
    const p = spawn('bash', ['-c', line], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

/** What `npm install SPECS` would have put in node_modules, linked from this repository (offline, cache miss). */
async function linkPackages(cwd: string, specs: string[]): Promise<void> {
  for (const spec of specs) {
    const from = spec.startsWith('/') ? spec : path.join(ROOT, 'node_modules', spec);
    const pkg = JSON.parse(await readFile(path.join(from, 'package.json'), 'utf8')) as { name: string; bin?: string | Record<string, string> };
    const to = path.join(cwd, 'node_modules', pkg.name);
    await mkdir(path.dirname(to), { recursive: true });
    if (!existsSync(to)) await symlink(from, to);
    const bins = typeof pkg.bin === 'string' ? { [pkg.name]: pkg.bin } : (pkg.bin ?? {});
    await mkdir(path.join(cwd, 'node_modules/.bin'), { recursive: true });
    for (const [name, rel] of Object.entries(bins)) {
      const link = path.join(cwd, 'node_modules/.bin', name);
      if (!existsSync(link)) await symlink(path.join(from, rel), link);
    }
  }
}

/** Runs a snippet's steps in a new empty folder; returns the last step's output. */
async function runSnippet(s: Snippet, routerAddr: string, folders: string[]): Promise<{ dir: string; out: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `infermesh-snippet-${s.lang}-`));
  folders.push(dir);
  await writeFile(path.join(dir, s.file), s.code.replaceAll('127.0.0.1:8500', routerAddr));
  let last: Ran = { code: 0, out: '' };
  for (const raw of s.steps) {
    const step = raw.replaceAll('/path/to/infermesh', ROOT);
    last = await sh(dir, step);
    const install = /^npm install (.+)$/.exec(step);
    if (last.code !== 0 && install && /ENOTCACHED|offline/i.test(last.out)) {
      // Not in npm's cache (the suite must not need the network): the repository's copies, linked.
      await linkPackages(dir, install[1]!.split(/\s+/));
      last = { code: 0, out: '' };
    }
    expect(last.code, `${s.file}: $ ${step}\n${last.out}`).toBe(0);
  }
  return { dir, out: last.out };
}

/** The line every example prints: request id, model version, fraud probability. */
const ANSWER = /^tx-42 1 (0\.\d+)$/m;

describe('README: the code examples run as shown from an empty folder', () => {
  let mesh: Mesh;
  const folders: string[] = [];

  beforeAll(async () => {
    mesh = await startMesh({ replicas: 1 });
    await mesh.clients.registry.push(trainFraudModel().bytes, { name: 'fraud', alias: 'production' });
    await mesh.waitReady('fraud');
  }, 120_000);
  afterAll(async () => {
    await mesh?.stop();
    await Promise.all(folders.map((d) => rm(d, { recursive: true, force: true })));
  });

  it('the tour has the three examples, each with its file name and steps', () => {
    expect(SNIPPETS.map((b) => b.lang)).toEqual(['js', 'python', 'ts']);
    for (const b of SNIPPETS) expect(parse(b.lang, b.body).steps.length).toBeGreaterThanOrEqual(2);
  });

  it('grpc-js (ES module, a first call before the 100 ms deadline one) answers the demo model', async () => {
    const s = parse('js', SNIPPETS.find((b) => b.lang === 'js')!.body);
    expect(s.code.indexOf('client.ServerReady(')).toBeLessThan(s.code.indexOf('client.ModelInfer('));
    const { out } = await runSnippet(s, mesh.routerAddr, folders);
    expect(Number(ANSWER.exec(out)?.[1]), out).toBeCloseTo(0.99998, 4);
  }, 120_000);

  it('Python grpcio with protoc-generated messages answers the demo model', async () => {
    const s = parse('python', SNIPPETS.find((b) => b.lang === 'python')!.body);
    const { out } = await runSnippet(s, mesh.routerAddr, folders);
    expect(Number(ANSWER.exec(out)?.[1]), out).toBeCloseTo(0.99998, 4);
  }, 120_000);

  it('the typed client installs from the repository, type-checks as TypeScript and runs as JavaScript', async () => {
    const s = parse('ts', SNIPPETS.find((b) => b.lang === 'ts')!.body);
    expect(s.code).toMatch(/from 'infermesh\/client'/);
    const { dir, out } = await runSnippet(s, mesh.routerAddr, folders);
    expect(Number(ANSWER.exec(out)?.[1]), out).toBeCloseTo(0.99998, 4);
    // "also runs as plain JavaScript": the same text as main.mjs.
    await writeFile(path.join(dir, 'main.mjs'), s.code.replaceAll('127.0.0.1:8500', mesh.routerAddr));
    const js = await sh(dir, 'node main.mjs');
    expect(js.code, js.out).toBe(0);
    expect(Number(ANSWER.exec(js.out)?.[1]), js.out).toBeCloseTo(0.99998, 4);
    // The types are the client's: a wrong call does not compile.
    await writeFile(path.join(dir, 'wrong.ts'), "import { InferenceApi } from 'infermesh/client';\nnew InferenceApi(['x:1']).infer('fraud', [{ name: 'features', shape: [1, 8], data: [] }]);\n");
    const bad = await sh(dir, 'npx tsc --module nodenext --target es2022 --strict --skipLibCheck --noEmit wrong.ts');
    expect(bad.code).not.toBe(0);
    expect(bad.out).toMatch(/datatype/);
  }, 180_000);
});
