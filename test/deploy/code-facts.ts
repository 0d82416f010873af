/**
 * What the deployment files must agree with, read from the code at test time:
 * the services, their INFERMESH_* variables and default ports, and the
 * monitor's Prometheus metrics.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MonitorMetrics } from '../../services/monitor/metrics.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Service folders with a main.ts that run as processes in the mesh (the CLI is a tool, not a service). */
export const SERVICES: readonly string[] = readdirSync(path.join(ROOT, 'services'))
  .filter((d) => d !== 'cli' && existsSync(path.join(ROOT, 'services', d, 'main.ts')))
  .sort();

export interface ConfigField {
  env: string;
  flag?: string;
  /** The default, when it is a plain integer literal. */
  default?: number;
}

/** The config fields declared in `src` (`int({ env: 'INFERMESH_…', flag: '…', default: 8500, … })` and the like). */
function fieldsIn(src: string): ConfigField[] {
  const chunks = src.split(/\benv:\s*'/).slice(1);
  return chunks.flatMap((chunk) => {
    const env = /^(INFERMESH_[A-Z0-9_]+)'/.exec(chunk)?.[1];
    if (!env) return [];
    const flag = /\bflag:\s*'([^']+)'/.exec(chunk)?.[1];
    const def = /\bdefault:\s*(\d[\d_]*)\s*[,}]/.exec(chunk)?.[1];
    return [{ env, flag, default: def === undefined ? undefined : Number(def.replaceAll('_', '')) }];
  });
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
  );
}

/** Fields every service shares (libs/config/index.ts). */
export const COMMON_FIELDS: readonly ConfigField[] = fieldsIn(readFileSync(path.join(ROOT, 'libs/config/index.ts'), 'utf8'));

/** All config fields a service reads: the shared ones plus those declared in its own folder. */
export function serviceFields(service: string): ConfigField[] {
  const own = tsFiles(path.join(ROOT, 'services', service)).flatMap((f) => fieldsIn(readFileSync(f, 'utf8')));
  return [...COMMON_FIELDS, ...own];
}

export interface ServicePorts {
  /** The gRPC port (the field whose flag is --port). */
  grpc: number;
  /** Every port the service listens on by default (gRPC, REST, metrics). */
  all: number[];
}

/** A service's default ports: every *_PORT field's default. */
export function servicePorts(service: string): ServicePorts {
  const ports = serviceFields(service).filter((f) => f.env.endsWith('_PORT') && f.default !== undefined);
  const grpc = ports.find((f) => f.flag === 'port')?.default;
  if (grpc === undefined) throw new Error(`services/${service}: no --port field with a numeric default`);
  return { grpc, all: [...new Set(ports.map((f) => f.default!))].sort() };
}

export interface MetricInfo {
  type: string;
  labelNames: readonly string[];
}

/** The metrics on the monitor's /metrics, by name (its own and prom-client's default process metrics). */
export async function monitorMetrics(): Promise<Map<string, MetricInfo>> {
  const m = new MonitorMetrics();
  const byName = new Map<string, MetricInfo>();
  const json = await m.registry.getMetricsAsJSON();
  for (const metric of m.registry.getMetricsAsArray()) {
    const name = (metric as unknown as { name: string }).name;
    const labelNames = (metric as unknown as { labelNames?: string[] }).labelNames ?? [];
    byName.set(name, { type: String(json.find((j) => j.name === name)?.type ?? 'untyped'), labelNames });
  }
  return byName;
}

/** The service a container runs: the image's entrypoint takes it as the first argument. */
export function serviceOfContainer(c: { args?: string[]; command?: string[] }): string | undefined {
  const first = c.args?.[0];
  return first !== undefined && SERVICES.includes(first) && c.command === undefined ? first : undefined;
}
