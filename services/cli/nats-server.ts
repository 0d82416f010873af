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
  const dirs = [...(childEnv().PATH ?? '').split(path.delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const p = path.join(dir, BIN);
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
export async function ensureNatsServer(): Promise<string> {
  const found = findNatsServer();
  if (found) return found;
  if (process.getuid?.() !== 0) throw new CliError('FAILED_PRECONDITION', HOW_TO_INSTALL);
  progress('nats-server not found; installing the Debian package nats-server (apt-get)…\n');
  await run('apt-get', ['update']);
  await run('apt-get', ['install', '-y', BIN]);
  const installed = findNatsServer();
  if (!installed) throw new CliError('FAILED_PRECONDITION', `apt-get installed ${BIN} but it is still not found\n${HOW_TO_INSTALL}`);
  progress(`installed ${installed}\n`);
  return installed;
}

/** Runs a command with its output on our stderr (stdout stays for results). */
function run(command: string, args: string[]): Promise<void> {
  progress(`$ ${command} ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const p = spawn(command, args, { stdio: ['ignore', 2, 2], env: childEnv({ DEBIAN_FRONTEND: 'noninteractive' }) });
    p.once('error', (err) => reject(new CliError('FAILED_PRECONDITION', `${command} could not run (${err.message})\n${HOW_TO_INSTALL}`)));
    p.once('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new CliError('FAILED_PRECONDITION', `${command} ${args.join(' ')} failed (${signal ?? `status ${code}`})\n${HOW_TO_INSTALL}`)),
    );
  });
}
