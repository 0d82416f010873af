/**
 * A plain HTTP server for GET /metrics (404 elsewhere). The registry speaks
 * OpenMetrics (the format that carries exemplars); a scraper that does not
 * ask for it (`Accept: application/openmetrics-text`) gets the Prometheus
 * text format 0.0.4, which has no exemplars.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry, RegistryContentType } from 'prom-client';

export interface MetricsServer {
  readonly port: number;
  /** Stops listening and closes open connections. Idempotent. */
  close(): Promise<void>;
}

/** Binds `host:port` (0 = any free port). */
export async function serveMetrics(registry: Registry<RegistryContentType>, host: string, port: number): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?', 1)[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const openMetrics = registry.contentType.startsWith('application/openmetrics-text') && /application\/openmetrics-text/i.test(req.headers.accept ?? '');
    registry.metrics().then(
      (body) => {
        const out = openMetrics || !registry.contentType.startsWith('application/openmetrics-text') ? body : toPrometheusText(body);
        res.writeHead(200, { 'content-type': openMetrics ? registry.contentType : PROMETHEUS_TEXT }).end(req.method === 'HEAD' ? undefined : out);
      },
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  let closed: Promise<void> | null = null;
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}

const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * OpenMetrics as prom-client writes it → Prometheus text 0.0.4: exemplars and
 * `# EOF` dropped, and counter families named with their `_total` suffix (in
 * OpenMetrics the family is `x` and the sample `x_total`; in the text format
 * both are `x_total`).
 */
export function toPrometheusText(om: string): string {
  const counters = new Set<string>();
  for (const m of om.matchAll(/^# TYPE (\S+) counter$/gm)) counters.add(m[1]!);
  const out: string[] = [];
  for (const line of om.split('\n')) {
    if (line === '# EOF' || line === '') continue;
    if (line.startsWith('# ')) {
      const m = /^# (HELP|TYPE) (\S+)( .*)?$/.exec(line);
      if (m && counters.has(m[2]!)) {
        if (m[1] === 'HELP') out.push('');
        out.push(`# ${m[1]} ${m[2]}_total${m[3] ?? ''}`);
        continue;
      }
      if (m?.[1] === 'HELP' && out.length) out.push('');
      out.push(line);
      continue;
    }
    const hash = line.indexOf(' # {');
    out.push(hash < 0 ? line : line.slice(0, hash));
  }
  return `${out.join('\n').replace(/^\n+/, '')}\n`;
}
