/**
 * The CLI's configuration from the environment, read in this one place:
 * where the mesh's services are when no flag says otherwise.
 */

/** Default service addresses: INFERMESH_*_ADDR, else the ports of DESIGN.md on loopback. */
export const defaultAddresses = Object.freeze({
  registry: fromEnv('INFERMESH_REGISTRY_ADDR', '127.0.0.1:8600'),
  router: fromEnv('INFERMESH_ROUTER_ADDR', '127.0.0.1:8500'),
  monitor: fromEnv('INFERMESH_MONITOR_ADDR', '127.0.0.1:8700'),
});

/** The options every command takes (see main.ts). */
export interface GlobalOptions {
  registry: string;
  router: string;
  monitor: string;
  json?: boolean;
}

/** The environment for a child process: this process's, plus `extra`. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...extra };
}

function fromEnv(name: string, fallback: string): string {
  const v = process.env[name];
  return v && v.trim() !== '' ? v.trim() : fallback;
}
