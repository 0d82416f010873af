/**
 * Finding (and, as root on Debian/Ubuntu, installing) the `nats-server`
 * binary that `infermesh up` starts when no --nats URL is given.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { childEnv } from './addresses.js';
import { CliError, progress } from './output.js';

const BIN = 'nats-server';
// Debian installs it in /usr/sbin, which is often not on a non-root PATH.
const EXTRA_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/local/bin', '/usr/bin'];

/** The path of an executable nats-server, or null. */
export function findNatsServer(): string | null {
  return findBinary(BIN);
}

/** The path of an executable `bin` on PATH or in the sbin/bin folders, or null. */
export function findBinary(bin: string): string | null {
  const dirs = [...(childEnv().PATH ?? '').split(path.delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const p = path.join(dir, bin);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // Not here.
    }
  }
  return null;
}

const HOW_TO_INSTALL = [
  'nats-server is not installed (not on PATH, nor in /usr/sbin). Install it and run infermesh up again:',
  '  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y nats-server',
  '  elsewhere:      download it from https://github.com/nats-io/nats-server/releases and put it on PATH',
  'or use a running server with JetStream enabled: infermesh up --nats nats://HOST:4222',
].join('\n');

/**
 * Returns the nats-server path; when it is missing and we are root, installs
 * the Debian package first (apt-get's progress goes to stderr). Throws
 * FAILED_PRECONDITION with install instructions otherwise.
 */
export function ensureNatsServer(): Promise<string> {
  return ensureBinary(BIN, BIN, HOW_TO_INSTALL);
}

/**
 * Returns the path of `bin`; when it is missing and we are root, installs the
 * Debian package `pkg` first. Throws FAILED_PRECONDITION with `howTo` otherwise.
 */
export async function ensureBinary(bin: string, pkg: string, howTo: string): Promise<string> {
  const found = findBinary(bin);
  if (found) return found;
  if (process.getuid?.() !== 0) throw new CliError('FAILED_PRECONDITION', howTo);
  progress(`${bin} not found; installing the Debian package ${pkg} (apt-get)…\n`);
  await run('apt-get', ['update'], howTo);
  await run('apt-get', ['install', '-y', pkg], howTo);
  const installed = findBinary(bin);
  if (!installed) throw new CliError('FAILED_PRECONDITION', `apt-get installed ${pkg} but ${bin} is still not found\n${howTo}`);
  progress(`installed ${installed}\n`);
  return installed;
}

/** Runs a command with its output on our stderr (stdout stays for results). */
function run(command: string, args: string[], howTo: string): Promise<void> {
  progress(`$ ${command} ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const p = spawn(command, args, { stdio: ['ignore', 2, 2], env: childEnv({ DEBIAN_FRONTEND: 'noninteractive' }) });
    p.once('error', (err) => reject(new CliError('FAILED_PRECONDITION', `${command} could not run (${err.message})\n${howTo}`)));
    p.once('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new CliError('FAILED_PRECONDITION', `${command} ${args.join(' ')} failed (${signal ?? `status ${code}`})\n${howTo}`)),
    );
  });
}
