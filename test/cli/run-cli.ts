/** Runs the built CLI (dist/services/cli/main.js) as a process, for the CLI tests. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'dist/services/cli/main.js');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion. */
export function cli(args: string[], timeoutMs = 20_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`infermesh ${args.join(' ')} timed out\n${stderr}`));
    }, timeoutMs);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Parses stdout as exactly one JSON object. */
export function json(r: Run): Record<string, any> {
  expect(r.code, r.stderr).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, any>;
}

/** A failed run: nothing on stdout, `error: CODE: …` on stderr, no stack trace. */
export function expectCleanError(r: Run, exitCode: number, code: string): void {
  expect(r.code, r.stderr).toBe(exitCode);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(new RegExp(`^error: ${code}: `, 'm'));
  expect(r.stderr).not.toMatch(/^\s+at /m);
}
