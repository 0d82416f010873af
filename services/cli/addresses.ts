/**
 * The CLI's configuration from the environment, read in this one place:
 * where the mesh's services are when no flag says otherwise. In order: the
 * flag, INFERMESH_*_ADDR, the addresses a running `infermesh up` wrote into
 * its state directory (`--dir`, else INFERMESH_DIR, else `.infermesh` in the
 * working directory), the default ports.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The ports of DESIGN.md on loopback. */
const BUILT_IN = Object.freeze({ registry: '127.0.0.1:8600', router: '127.0.0.1:8500', monitor: '127.0.0.1:8700' });
const ENV_NAMES = Object.freeze({ registry: 'INFERMESH_REGISTRY_ADDR', router: 'INFERMESH_ROUTER_ADDR', monitor: 'INFERMESH_MONITOR_ADDR' });

/** Default service addresses: INFERMESH_*_ADDR, else the ports of DESIGN.md on loopback (before any addresses file). */
export const defaultAddresses = Object.freeze({
  registry: fromEnv(ENV_NAMES.registry, BUILT_IN.registry),
  router: fromEnv(ENV_NAMES.router, BUILT_IN.router),
  monitor: fromEnv(ENV_NAMES.monitor, BUILT_IN.monitor),
});

/** The state directory of `infermesh up` the CLI looks in: INFERMESH_DIR, else `.infermesh`. */
export const defaultStateDir = fromEnv('INFERMESH_DIR', '.infermesh');

export const ADDRESSES_FILE = 'addresses.json';

/** `<dir>/addresses.json`: where the mesh `infermesh up` runs can be reached (written once it is ready, removed when it stops). */
export interface MeshAddresses {
  /** The `infermesh up` process: a file whose process is gone is ignored. */
  pid: number;
  router: string;
  routers: string[];
  rest: string;
  registry: string;
  monitor: string;
  metrics: string;
  nats: string;
  logs: string;
  /** Where the services write their sampled spans (`infermesh traces show`), '' when off. */
  traces: string;
}

/** Writes `<dir>/addresses.json` (tmp file + rename: a reader never sees half of it). */
export function writeAddressesFile(dir: string, a: MeshAddresses): void {
  const file = path.join(dir, ADDRESSES_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(a, null, 1)}\n`);
  renameSync(tmp, file);
}

/** Removes `<dir>/addresses.json` when it is this process's. */
export function removeAddressesFile(dir: string): void {
  const a = readAddressesFile(dir);
  if (a?.pid === process.pid) rmSync(path.join(dir, ADDRESSES_FILE), { force: true });
}

/** The addresses of the `infermesh up` running with state directory `dir`; null when none runs there. */
export function readAddressesFile(dir: string): MeshAddresses | null {
  let v: MeshAddresses;
  try {
    v = JSON.parse(readFileSync(path.join(dir, ADDRESSES_FILE), 'utf8')) as MeshAddresses;
  } catch {
    return null;
  }
  if (typeof v?.pid !== 'number' || typeof v.router !== 'string' || typeof v.registry !== 'string' || typeof v.monitor !== 'string') return null;
  return alive(v.pid) ? v : null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

type Service = keyof typeof BUILT_IN;

/**
 * Fills `--registry`, `--router` and `--monitor` that neither a flag nor
 * INFERMESH_*_ADDR set from the addresses file of a running `up` (in
 * `o.dir`, else INFERMESH_DIR, else `.infermesh`); `source(key)` says where
 * commander took each value from ('cli' for a flag).
 */
export function resolveAddresses(o: Partial<Record<Service, string>> & { dir?: string }, source: (key: string) => string | undefined): void {
  let file: MeshAddresses | null | undefined;
  for (const key of Object.keys(BUILT_IN) as Service[]) {
    if (!(key in o) || source(key) !== 'default' || process.env[ENV_NAMES[key]]?.trim()) continue;
    file ??= readAddressesFile(o.dir ?? defaultStateDir);
    if (file) o[key] = file[key];
  }
}

/**
 * TLS files and the bearer token from INFERMESH_TLS_CA / _CERT / _KEY and
 * INFERMESH_TOKEN ('' = none); the --tls-* and --token flags override them.
 */
export const envSecurity = Object.freeze({
  tlsCa: fromEnv('INFERMESH_TLS_CA', ''),
  tlsCert: fromEnv('INFERMESH_TLS_CERT', ''),
  tlsKey: fromEnv('INFERMESH_TLS_KEY', ''),
  token: fromEnv('INFERMESH_TOKEN', ''),
});

/** The options every command takes (see main.ts). */
export interface GlobalOptions {
  /** The state directory of a local `infermesh up` (addresses, traces). */
  dir?: string;
  registry: string;
  router: string;
  monitor: string;
  json?: boolean;
  /** Bearer token sent on every call (applied once for all clients, see security.ts). */
  token?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** The environment for a child process: this process's, plus `extra`. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...extra };
}

function fromEnv(name: string, fallback: string): string {
  const v = process.env[name];
  return v && v.trim() !== '' ? v.trim() : fallback;
}
