/**
 * The container image, checked without a Docker engine: the Dockerfile's
 * stages and settings, the ignore file against what the build copies, and
 * the entrypoint run for real (with a stand-in `node` that prints its
 * arguments) to show it starts each service with SERVICE_NODE_FLAGS.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SERVICE_NODE_FLAGS } from '../../libs/config/index.js';
import { ROOT, SERVICES, servicePorts } from './code-facts.js';

const DOCKERFILE = readFileSync(path.join(ROOT, 'deploy/docker/Dockerfile'), 'utf8');
const ENTRYPOINT = path.join(ROOT, 'deploy/docker/entrypoint.sh');

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function instructions(text: string): Instruction[] {
  const logical = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim());
  return logical.map((l) => {
    const [, op, args] = /^\s*(\S+)\s*(.*)$/.exec(l)!;
    return { op: op!.toUpperCase(), args: args!.trim() };
  });
}

interface Stage {
  from: string;
  name?: string;
  body: Instruction[];
}

function stages(ins: Instruction[]): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const out: Stage[] = [];
  for (const i of ins) {
    if (i.op === 'ARG' && out.length === 0) {
      const [k, v] = i.args.split('=');
      args.set(k!, v ?? '');
    } else if (i.op === 'FROM') {
      const m = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args)!;
      const from = m[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => args.get(a ?? b) ?? '');
      out.push({ from, name: m[2], body: [] });
    } else out.at(-1)?.body.push(i);
  }
  return { args, stages: out };
}

const parsed = stages(instructions(DOCKERFILE));
const final = parsed.stages.at(-1)!;
const stageByName = (n: string) => parsed.stages.find((s) => s.name === n);
const runs = (s: Stage) => s.body.filter((i) => i.op === 'RUN').map((i) => i.args.replace(/\s+/g, ' '));

describe('deploy/docker/Dockerfile', () => {
  it('builds with npm ci and tsc, and runs on Node 20 with production dependencies only', () => {
    expect(parsed.stages.length).toBeGreaterThanOrEqual(2);
    const build = parsed.stages.find((s) => runs(s).some((r) => r.includes('npx tsc -p tsconfig.json')));
    expect(build, 'a stage compiles with npx tsc -p tsconfig.json').toBeDefined();
    expect(runs(build!).some((r) => /\bnpm ci\b/.test(r) && !r.includes('--omit=dev'))).toBe(true);
    expect(final.from, 'the runtime base').toMatch(/^node:20(-|$)/);
    // node_modules in the final image come from a stage that installed production dependencies only.
    const nm = final.body.find((i) => i.op === 'COPY' && /\bnode_modules\b/.test(i.args));
    const from = /--from=(\S+)/.exec(nm?.args ?? '')?.[1];
    expect(from, 'node_modules copied from a stage').toBeDefined();
    expect(runs(stageByName(from!)!).some((r) => /\bnpm ci\b.*--omit=dev/.test(r))).toBe(true);
    expect(final.body.some((i) => i.op === 'COPY' && new RegExp(`--from=${build!.name}\\b.*\\bdist\\b`).test(i.args))).toBe(true);
    // The services load proto/ at run time (reflection, health): PROTO_DIR resolves /app/proto from dist/libs/proto.
    expect(final.body.some((i) => i.op === 'COPY' && /^(--\S+\s+)*proto\s/.test(i.args))).toBe(true);
    expect(final.body.some((i) => i.op === 'COPY' && /^(--\S+\s+)*package\.json\s/.test(i.args)), 'package.json ("type": "module")').toBe(true);
    expect(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).type).toBe('module');
  });

  it('installs without dependency install scripts (no CUDA download) and with .npmrc copied before npm ci', () => {
    // npm 11 runs no dependency install script that allowScripts does not allow; onnxruntime-node's is denied.
    expect(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).allowScripts).toMatchObject({ 'onnxruntime-node': false });
    // No key npm does not know (npm 11 warns about one on every npm and npx command).
    expect(readFileSync(path.join(ROOT, '.npmrc'), 'utf8')).not.toMatch(/^[^#\s]/m);
    for (const s of parsed.stages.filter((x) => runs(x).some((r) => /\bnpm ci\b/.test(r)))) {
      const copyNpmrc = s.body.findIndex((i) => i.op === 'COPY' && /\.npmrc\b/.test(i.args));
      const npmCi = s.body.findIndex((i) => i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
      expect(copyNpmrc, `${s.name}: .npmrc before npm ci`).toBeGreaterThanOrEqual(0);
      expect(copyNpmrc).toBeLessThan(npmCi);
      // `prepare` runs tsc: before the sources are copied in one stage, without TypeScript in the other.
      expect(s.body[npmCi]!.args, s.name).toContain('--ignore-scripts');
    }
  });

  it('runs as a non-root user and writes nothing outside /tmp', () => {
    const users = final.body.filter((i) => i.op === 'USER').map((i) => i.args);
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)!.split(':')[0]).not.toMatch(/^(root|0)$/);
    // Nothing is declared as a volume (the pod mounts an emptyDir at /tmp) and TMPDIR is /tmp.
    expect(final.body.some((i) => i.op === 'VOLUME')).toBe(false);
    expect(final.body.some((i) => i.op === 'ENV' && /\bTMPDIR=\/tmp\b/.test(i.args))).toBe(true);
  });

  it('exposes every default port and starts through the entrypoint', () => {
    const exposed = final.body.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map(Number));
    for (const s of SERVICES) for (const p of servicePorts(s).all) expect(exposed, `${s} port ${p}`).toContain(p);
    const entry = final.body.find((i) => i.op === 'ENTRYPOINT')!;
    expect(JSON.parse(entry.args)).toEqual(['/app/deploy/docker/entrypoint.sh']);
    expect(final.body.some((i) => i.op === 'COPY' && i.args.endsWith('deploy/docker/entrypoint.sh ./deploy/docker/entrypoint.sh'))).toBe(true);
    expect(final.body.some((i) => i.op === 'WORKDIR' && i.args === '/app')).toBe(true);
  });
});

/** Docker ignore-file semantics: the last pattern matching the path or one of its parents wins. */
function ignored(patterns: string[], file: string): boolean {
  const toRe = (glob: string) =>
    new RegExp(
      '^' +
        glob
          .replace(/^\/+/, '')
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replace(/\*\*\/?/g, '\u0000')
          .replace(/\*/g, '[^/]*')
          .replace(/\?/g, '[^/]')
          .replace(/\u0000/g, '(?:.*/)?') +
        '$',
    );
  const parts = file.split('/');
  const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
  let out = false;
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const re = toRe(negate ? raw.slice(1) : raw);
    if (candidates.some((c) => re.test(c))) out = !negate;
  }
  return out;
}

describe('deploy/docker/Dockerfile.dockerignore', () => {
  const patterns = readFileSync(path.join(ROOT, 'deploy/docker/Dockerfile.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));

  it('sends what the build copies and leaves out the rest', () => {
    const copied = parsed.stages
      .flatMap((s) => s.body)
      .filter((i) => i.op === 'COPY' && !/--from=/.test(i.args))
      .flatMap((i) => i.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1));
    for (const src of copied) {
      expect(existsSync(path.join(ROOT, src)), src).toBe(true);
      expect(ignored(patterns, src), `${src} is sent to the build`).toBe(false);
    }
    for (const f of ['proto/inference/grpc_service.proto', 'libs/config/index.ts', 'services/router/main.ts']) expect(ignored(patterns, f), f).toBe(false);
    for (const f of ['node_modules/yaml/package.json', 'dist/services/router/main.js', 'test/deploy/docker.test.ts', '.git/HEAD', 'deploy/k8s/base/nats.yaml']) {
      expect(ignored(patterns, f), f).toBe(true);
    }
  });
});

describe('deploy/docker/entrypoint.sh', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-entry-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  // A stand-in node that prints its working directory and arguments, one a line.
  writeFileSync(path.join(dir, 'node'), '#!/bin/sh\npwd\nfor a in "$@"; do echo "$a"; done\n');
  chmodSync(path.join(dir, 'node'), 0o755);
  const run = (...args: string[]) =>
    spawnSync('sh', [ENTRYPOINT, ...args], { encoding: 'utf8', env: { ...process.env, PATH: `${dir}:${process.env.PATH}` } });

  it.each(SERVICES)('starts %s with SERVICE_NODE_FLAGS and passes its flags on', (service) => {
    const res = run(service, '--port', '0', '--log-level=debug');
    expect(res.status, res.stderr).toBe(0);
    const [cwd, ...argv] = res.stdout.trim().split('\n');
    expect(path.resolve(cwd!)).toBe(path.resolve(ROOT));
    expect(argv).toEqual([...SERVICE_NODE_FLAGS, `dist/services/${service}/main.js`, '--port', '0', '--log-level=debug']);
    expect(existsSync(path.join(ROOT, 'services', service, 'main.ts'))).toBe(true);
  });

  it('runs the CLI and refuses an unknown service', () => {
    expect(run('cli', 'models', 'list').stdout.trim().split('\n').slice(1)).toEqual(['dist/services/cli/main.js', 'models', 'list']);
    const bad = run('gateway');
    expect(bad.status).toBe(64);
    expect(bad.stderr).toMatch(/unknown service 'gateway'/);
  });

  it('is executable and POSIX sh', () => {
    expect(statSync(ENTRYPOINT).mode & 0o111).not.toBe(0);
    expect(readFileSync(ENTRYPOINT, 'utf8').startsWith('#!/bin/sh\n')).toBe(true);
    expect(spawnSync('sh', ['-n', ENTRYPOINT]).status).toBe(0);
  });
});
