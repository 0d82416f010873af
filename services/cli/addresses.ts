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
