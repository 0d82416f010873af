/**
 * Prometheus, alert rules, the Grafana dashboard and the OpenTelemetry
 * Collector config parse, and name only metrics and labels that the
 * monitor exports (services/monitor/metrics.ts) on the ports the code uses.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { status as Status } from '@grpc/grpc-js';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT, monitorMetrics, servicePorts, type MetricInfo } from './code-facts.js';

const read = (p: string) => readFileSync(path.join(ROOT, p), 'utf8');
const yamlFile = (p: string): any => parse(read(p));

/** Labels Prometheus adds to every scraped series, or that histogram buckets carry. */
const TARGET_LABELS = new Set(['job', 'instance', 'namespace', 'pod', 'mesh']);

let metrics: Map<string, MetricInfo>;
beforeAll(async () => {
  metrics = await monitorMetrics();
});

/** The exported metric a series name belongs to (histogram series carry a suffix). */
function metricOf(series: string): { info: MetricInfo; bucket: boolean } | undefined {
  const direct = metrics.get(series);
  if (direct) return { info: direct, bucket: false };
  const m = /^(.*)_(bucket|sum|count)$/.exec(series);
  const base = m && metrics.get(m[1]!);
  return base && base.type === 'histogram' ? { info: base, bucket: m![2] === 'bucket' } : undefined;
}

/**
 * Checks a PromQL expression: every infermesh_* series is exported by the
 * monitor, every `name:…` series is a recording rule we define, and every
 * label in matchers and by/on/without clauses exists on those series.
 */
function checkExpr(expr: string, records: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  const withoutStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const labels = new Set(TARGET_LABELS);
  for (const [s] of withoutStrings.matchAll(/\binfermesh[a-zA-Z0-9_:]*/g)) {
    if (s.includes(':')) {
      if (!records.has(s)) problems.push(`${s}: no recording rule defines it`);
      ['model', 'version', 'code', 'le'].forEach((l) => labels.add(l));
      continue;
    }
    const m = metricOf(s);
    if (!m) problems.push(`${s}: not exported by the monitor`);
    else {
      m.info.labelNames.forEach((l) => labels.add(l));
      if (m.bucket) labels.add('le');
    }
  }
  const used = [
    ...[...withoutStrings.matchAll(/\b(?:by|on|without|ignoring)\s*\(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()).filter(Boolean)),
    ...[...withoutStrings.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1]!)),
  ];
  for (const l of used) if (!labels.has(l)) problems.push(`label ${l} is on none of the series in: ${expr}`);
  return problems;
}

describe('deploy/prometheus', () => {
  it('the monitor exports the metrics the rules and dashboard are built on', () => {
    expect(metrics.get('infermesh_requests_total')).toMatchObject({ type: 'counter', labelNames: ['model', 'version', 'code'] });
    expect(metrics.get('infermesh_request_duration_seconds')).toMatchObject({ type: 'histogram', labelNames: ['model', 'version'] });
    // code="OK" in the rules is the status name the monitor records for success.
    expect(Status[Status.OK]).toBe('OK');
  });

  it('prometheus.yml scrapes the monitor\'s metrics port and the router\'s REST port', () => {
    const conf = yamlFile('deploy/prometheus/prometheus.yml');
    const monitor = servicePorts('monitor');
    const metricsPort = monitor.all.find((p) => p !== monitor.grpc)!;
    const router = servicePorts('router');
    const restPort = router.all.find((p) => p !== router.grpc)!;
    const jobs: any[] = conf.scrape_configs;
    const keepsPort = (job: any, port: number) =>
      job.relabel_configs?.some((r: any) => r.action === 'keep' && r.source_labels?.includes('__meta_kubernetes_pod_container_port_number') && new RegExp(`^(?:${r.regex})$`).test(String(port)));
    const keepsApp = (job: any, app: string) =>
      job.relabel_configs?.some((r: any) => r.action === 'keep' && r.source_labels?.includes('__meta_kubernetes_pod_label_app_kubernetes_io_name') && new RegExp(`^(?:${r.regex})$`).test(app));
    const monitorJob = jobs.find((j) => keepsApp(j, 'monitor'));
    const routerJob = jobs.find((j) => keepsApp(j, 'router'));
    expect(monitorJob && keepsPort(monitorJob, metricsPort), `a job scraping monitor:${metricsPort}`).toBe(true);
    expect(routerJob && keepsPort(routerJob, restPort), `a job scraping router:${restPort}`).toBe(true);
    for (const j of [monitorJob, routerJob]) {
      expect(j.metrics_path ?? '/metrics').toBe('/metrics');
      expect(j.kubernetes_sd_configs[0].namespaces.names).toEqual(['infermesh']);
    }
    // The alert InfermeshMonitorDown watches this job by name.
    expect(read('deploy/prometheus/alerts.yml')).toContain(`job="${monitorJob.job_name}"`);
    expect(conf.rule_files).toEqual(['alerts.yml']);
  });

  it('alerts.yml: p99 latency and error-ratio rules on the monitor\'s metrics', () => {
    const rules: any[] = yamlFile('deploy/prometheus/alerts.yml').groups.flatMap((g: any) => g.rules);
    const records = new Set(rules.filter((r) => r.record).map((r) => r.record as string));
    const problems = rules.flatMap((r) => checkExpr(r.expr, records).map((p) => `${r.alert ?? r.record}: ${p}`));
    expect(problems).toEqual([]);
    for (const r of rules.filter((x) => x.alert)) {
      expect(r.labels?.severity, r.alert).toMatch(/^(critical|warning|info)$/);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
    }
    // Expand recording rules so each alert can be read in full.
    const expand = (expr: string) => expr.replace(/\binfermesh:[a-z0-9_:]+/g, (name) => rules.find((r) => r.record === name)?.expr ?? name);
    const alerts = rules.filter((r) => r.alert).map((r) => expand(r.expr).replace(/\s+/g, ' '));
    expect(alerts.some((e) => /histogram_quantile\(\s*0\.99\s*,.*infermesh_request_duration_seconds_bucket/.test(e))).toBe(true);
    expect(alerts.some((e) => /infermesh_requests_total\{[^}]*code!="OK"[^}]*\}.*\/.*infermesh_requests_total/.test(e))).toBe(true);
  });

  it('alerts_test.yml tests the rules file beside it', () => {
    const t = yamlFile('deploy/prometheus/alerts_test.yml');
    expect(t.rule_files).toEqual(['alerts.yml']);
    const alertNames = new Set(yamlFile('deploy/prometheus/alerts.yml').groups.flatMap((g: any) => g.rules.map((r: any) => r.alert).filter(Boolean)));
    for (const test of t.tests) for (const a of test.alert_rule_test) expect(alertNames, a.alertname).toContain(a.alertname);
  });
});

describe('deploy/grafana/infermesh-dashboard.json', () => {
  const dash = JSON.parse(read('deploy/grafana/infermesh-dashboard.json'));
  const panels: any[] = dash.panels.filter((p: any) => p.type !== 'row');
  const exprs = panels.flatMap((p) => p.targets.map((t: any) => ({ title: p.title, expr: t.expr as string })));
  const concrete = (e: string) => e.replaceAll('$__rate_interval', '5m').replaceAll('$__range', '1h');

  it('queries only what the monitor exports', () => {
    expect(exprs.flatMap(({ title, expr }) => checkExpr(concrete(expr), new Set()).map((p) => `${title}: ${p}`))).toEqual([]);
  });

  it('has rps, error-rate and p50/p95/p99 panels per model and version', () => {
    const perModelVersion = (e: string) => /\bby \(model, version\b/.test(e);
    const has = (re: RegExp) => exprs.some(({ expr }) => re.test(expr) && perModelVersion(expr));
    expect(has(/^sum by \(model, version\) \(rate\(infermesh_requests_total\{[^}]*\}\[/)).toBe(true);
    expect(has(/infermesh_requests_total\{[^}]*code!="OK"[^}]*\}.*\/.*infermesh_requests_total/)).toBe(true);
    for (const q of ['0.5', '0.95', '0.99']) {
      expect(has(new RegExp(`histogram_quantile\\(${q.replace('.', '\\.')}, .*infermesh_request_duration_seconds_bucket`)), `p${Number(q) * 100}`).toBe(true);
    }
    const units = Object.fromEntries(panels.map((p) => [p.title, p.fieldConfig.defaults.unit]));
    expect(units).toMatchObject({ 'Requests per second': 'reqps', 'Error rate': 'percentunit', 'p99 latency': 's' });
  });

  it('is an importable dashboard: unique panel ids, a Prometheus data source variable, model and version filters', () => {
    const ids = dash.panels.map((p: any) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(dash.uid).toBeTruthy();
    const vars = Object.fromEntries(dash.templating.list.map((v: any) => [v.name, v]));
    expect(vars.datasource).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.model.definition).toContain('infermesh_requests_total');
    expect(vars.version.definition).toContain('infermesh_requests_total');
    for (const p of panels) expect(p.datasource.uid, p.title).toBe('${datasource}');
  });
});

describe('deploy/otel/collector.yaml', () => {
  const conf = yamlFile('deploy/otel/collector.yaml');

  it('receives OTLP over gRPC on 4317, batches, and exports to Jaeger over OTLP', () => {
    expect(conf.receivers.otlp.protocols.grpc.endpoint).toMatch(/:4317$/);
    const traces = conf.service.pipelines.traces;
    expect(traces.receivers).toContain('otlp');
    expect(traces.processors).toContain('batch');
    expect(traces.processors.at(0), 'memory_limiter comes first').toBe('memory_limiter');
    expect(traces.exporters.some((e: string) => /^(otlp|jaeger)(\/|$)/.test(e))).toBe(true);
  });

  it('every component in a pipeline is configured', () => {
    const known = (kind: string, name: string) => Object.hasOwn(conf[kind] ?? {}, name);
    for (const [name, p] of Object.entries<any>(conf.service.pipelines)) {
      for (const kind of ['receivers', 'processors', 'exporters']) {
        for (const c of p[kind] ?? []) expect(known(kind, c), `${name}: ${kind} ${c}`).toBe(true);
      }
    }
    for (const e of conf.service.extensions ?? []) expect(known('extensions', e), e).toBe(true);
  });
});
