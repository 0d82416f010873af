/**
 * Renders the Kubernetes overlays with `kubectl kustomize` (kubectl 1.20's
 * built-in kustomize is enough), validates every object offline against the
 * Kubernetes schemas, and checks that the manifests agree with the code:
 * ports, probes, INFERMESH_* variables, one image, security settings, the
 * NATS cluster and the network policy.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT, SERVICES, serviceFields, serviceOfContainer, servicePorts } from './code-facts.js';
import { fieldErrors, schemaErrors, type K8sObject } from './k8s-schema.js';
import { K8S_NATS_USERS, NATS_SECRET, natsAuthConf, passwordVariable } from './nats-auth-conf.js';

// Manifests are data: typed loosely and checked field by field.
type Obj = K8sObject & Record<string, any>;

const NAMESPACE = 'infermesh';
const NATS_URL = 'nats://nats.infermesh.svc:4222';
const OVERLAYS = ['cpu', 'gpu'] as const;
type Overlay = (typeof OVERLAYS)[number];
const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet']);
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'PersistentVolume', 'StorageClass']);

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status === 0;
}

/** kubectl (or $KUBECTL); installs Debian's kubernetes-client when missing and running as root. */
function ensureKubectl(): string {
  const kubectl = process.env.KUBECTL || 'kubectl';
  if (onPath(kubectl)) return kubectl;
  if (process.getuid?.() !== 0) {
    throw new Error(
      `${kubectl} not found: the deployment tests render the overlays with \`kubectl kustomize\`. ` +
        'Install it (Debian: sudo apt-get install -y kubernetes-client) or set KUBECTL=/path/to/kubectl.',
    );
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync('apt-get', ['install', '-y', '-qq', 'kubernetes-client'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  if (!onPath('kubectl')) throw new Error('apt-get install kubernetes-client did not provide kubectl');
  return 'kubectl';
}

function render(kubectl: string, overlay: Overlay): Obj[] {
  const dir = path.join(ROOT, 'deploy', 'k8s', 'overlays', overlay);
  const res = spawnSync(kubectl, ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (res.status !== 0) throw new Error(`kubectl kustomize ${dir} failed:\n${res.stderr || res.error}`);
  const docs = parseAllDocuments(res.stdout);
  const objs: Obj[] = [];
  for (const doc of docs) {
    if (doc.errors.length) throw new Error(`rendered YAML of ${overlay} does not parse: ${doc.errors[0]!.message}`);
    const o = doc.toJS();
    if (o != null) objs.push(o);
  }
  return objs;
}

const rendered = {} as Record<Overlay, Obj[]>;

beforeAll(() => {
  const kubectl = ensureKubectl();
  for (const o of OVERLAYS) rendered[o] = render(kubectl, o);
}, 600_000);

// ---- helpers over rendered objects -----------------------------------------

const ofKind = (objs: Obj[], kind: string): Obj[] => objs.filter((o) => o.kind === kind);
const named = (objs: Obj[], kind: string, name: string): Obj | undefined => objs.find((o) => o.kind === kind && o.metadata.name === name);
const workloads = (objs: Obj[]): Obj[] => objs.filter((o) => WORKLOAD_KINDS.has(o.kind));
const podSpec = (w: Obj): any => w.spec.template.spec;
const containersOf = (w: Obj): any[] => [...(podSpec(w).initContainers ?? []), ...podSpec(w).containers];

/** The Deployment (and its container) that runs `service`; exactly one each. */
function serviceWorkload(objs: Obj[], service: string): { w: Obj; c: any } {
  const found = workloads(objs).flatMap((w) => podSpec(w).containers.filter((c: any) => serviceOfContainer(c) === service).map((c: any) => ({ w, c })));
  expect(found, `exactly one container runs ${service}`).toHaveLength(1);
  return found[0]!;
}

function selects(selector: any, labels: Record<string, string>): boolean {
  if (!selector) return true;
  const exact = selector.matchLabels ?? {};
  if (!Object.entries(exact).every(([k, v]) => labels[k] === v)) return false;
  return (selector.matchExpressions ?? []).every((e: any) => {
    const has = e.key in labels;
    switch (e.operator) {
      case 'In': return has && e.values.includes(labels[e.key]);
      case 'NotIn': return !has || !e.values.includes(labels[e.key]);
      case 'Exists': return has;
      case 'DoesNotExist': return !has;
      default: return false;
    }
  });
}

/** A selector written as `matchLabels` only, for Services (which take a plain map). */
const serviceSelects = (svc: Obj, labels: Record<string, string>) => svc.spec.selector && selects({ matchLabels: svc.spec.selector }, labels);

type Reach = 'open' | 'opt-in' | 'closed';

/**
 * Whether a container port of a pod with `labels`, in a namespace with
 * `namespaceLabels`, can be reached by a peer:
 * `inside` (any pod of the namespace) or `outside` (another namespace or
 * outside the cluster). For outside, `opt-in` means only from namespaces
 * carrying a specific label.
 */
function reach(
  policies: Obj[],
  namespaceLabels: Record<string, string>,
  labels: Record<string, string>,
  port: { containerPort: number; name?: string },
  peer: 'inside' | 'outside',
): Reach {
  const applying = policies.filter((p) => selects(p.spec.podSelector, labels) && (p.spec.policyTypes ?? ['Ingress']).includes('Ingress'));
  if (applying.length === 0) return 'open';
  let best: Reach = 'closed';
  for (const p of applying) {
    for (const rule of p.spec.ingress ?? []) {
      const portOk =
        !rule.ports?.length ||
        rule.ports.some((rp: any) => (rp.protocol ?? 'TCP') === 'TCP' && (rp.port === undefined || rp.port === port.containerPort || rp.port === port.name));
      if (!portOk) continue;
      if (!rule.from?.length) return 'open';
      for (const from of rule.from) {
        if (from.ipBlock) return 'open';
        if (peer === 'inside') {
          // Any pod of this namespace, whatever its labels: only an all-pods selector admits every such pod.
          const allPods = !from.podSelector || Object.keys(from.podSelector).length === 0;
          const thisNamespace = from.namespaceSelector ? selects(from.namespaceSelector, namespaceLabels) : !!from.podSelector;
          if (allPods && thisNamespace) return 'open';
        } else if (from.namespaceSelector) {
          const ns = from.namespaceSelector;
          if (ns.matchLabels?.['kubernetes.io/metadata.name'] === NAMESPACE) continue; // this namespace only
          if (!ns.matchLabels && !ns.matchExpressions) return 'open';
          best = 'opt-in';
        }
      }
    }
  }
  return best;
}

// ---- tests ------------------------------------------------------------------

describe.each(OVERLAYS)('deploy/k8s/overlays/%s', (overlay) => {
  const objs = () => rendered[overlay];

  it('renders a complete set of objects, all in namespace infermesh', () => {
    const kinds = new Set(objs().map((o) => o.kind));
    for (const k of ['Namespace', 'ConfigMap', 'Service', 'Deployment', 'StatefulSet', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'NetworkPolicy']) {
      expect(kinds, k).toContain(k);
    }
    expect(named(objs(), 'Namespace', NAMESPACE)).toBeDefined();
    for (const o of objs()) {
      if (!CLUSTER_SCOPED.has(o.kind)) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe(NAMESPACE);
    }
    // One Deployment per service of the code base (services/*/main.ts, less the CLI).
    expect(SERVICES, 'a new service needs its Deployment in deploy/k8s/base').toEqual(['inference', 'monitor', 'registry', 'router']);
    for (const s of SERVICES) expect(serviceWorkload(objs(), s).w.kind).toBe('Deployment');
  });

  it('validates every object against the Kubernetes schemas (offline)', () => {
    const bad = objs().flatMap((o) => schemaErrors(o).map((e) => `${o.kind}/${o.metadata.name}: ${e}`));
    expect(bad).toEqual([]);
  });

  it('uses no field the Kubernetes API does not define', () => {
    // A misspelt field is silently dropped by the API server; catch it here.
    // The last object is a control with a typo, to prove the check bites.
    const deployment = structuredClone(ofKind(objs(), 'Deployment')[0]!);
    deployment.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true;
    const all = [...objs(), deployment];
    const errors = fieldErrors(all);
    expect(errors.get(all.length - 1)?.join('\n')).toMatch(/readOnlyRootFileSystem/);
    errors.delete(all.length - 1);
    expect([...errors].map(([i, e]) => `${all[i]!.kind}/${all[i]!.metadata.name}: ${e.join('; ')}`)).toEqual([]);
  });

  it('the schema check bites too', () => {
    const deployment = structuredClone(ofKind(objs(), 'Deployment')[0]!);
    deployment.spec.template.spec.containers[0].readinessProbe = { grpc: { port: 'grpc' } };
    expect(schemaErrors(deployment).join('\n')).toMatch(/grpc\/port must be integer/);
  });

  it('container ports, Service ports and probes match the services\' default ports', () => {
    for (const service of SERVICES) {
      const ports = servicePorts(service);
      const { w, c } = serviceWorkload(objs(), service);
      expect(c.ports.map((p: any) => p.containerPort).sort(), `${service} container ports`).toEqual(ports.all);
      expect(c.ports.find((p: any) => p.name === 'grpc')?.containerPort, `${service} grpc port`).toBe(ports.grpc);
      for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        if (probe === 'startupProbe' && !c[probe]) continue;
        // Kubernetes' grpc probe calls grpc.health.v1.Health/Check, which every service serves.
        expect(c[probe], `${service} ${probe}`).toMatchObject({ grpc: { port: ports.grpc } });
        expect(Object.keys(c[probe]).filter((k) => ['grpc', 'httpGet', 'tcpSocket', 'exec'].includes(k)), `${service} ${probe}`).toEqual(['grpc']);
      }
      // The Service in front of it exposes every port, by name or number.
      const labels = w.spec.template.metadata.labels;
      const svcs = ofKind(objs(), 'Service').filter((s) => serviceSelects(s, labels));
      expect(svcs.map((s) => s.metadata.name), `Service for ${service}`).toContain(service);
      const svc = named(objs(), 'Service', service)!;
      const target = (sp: any) => (typeof sp.targetPort === 'string' ? c.ports.find((p: any) => p.name === sp.targetPort)?.containerPort : (sp.targetPort ?? sp.port));
      expect(svc.spec.ports.map(target).sort(), `Service ${service} targets`).toEqual(ports.all);
      expect(svc.spec.ports.map((p: any) => p.port).sort(), `Service ${service} ports`).toEqual(ports.all);
    }
    expect(named(objs(), 'Service', 'inference')!.spec.clusterIP).toBe('None');
  });

  it('sets only INFERMESH_* variables that the service reads, with the mesh addresses', () => {
    for (const service of SERVICES) {
      const known = new Set(serviceFields(service).map((f) => f.env));
      const { c } = serviceWorkload(objs(), service);
      const env: any[] = c.env ?? [];
      const names = env.map((e) => e.name);
      expect(new Set(names).size, `${service}: duplicate env`).toBe(names.length);
      for (const name of names.filter((n) => n.startsWith('INFERMESH_'))) {
        expect(known, `${service} does not read ${name} (services/${service}, libs/config)`).toContain(name);
      }
      const value = (n: string) => env.find((e) => e.name === n)?.value;
      expect(value('INFERMESH_NATS_URL'), service).toBe(NATS_URL);
      expect(value('INFERMESH_HOST'), service).toBe('0.0.0.0');
      // $(VAR) references resolve only to variables defined earlier in the list.
      env.forEach((e, i) => {
        for (const [, ref] of String(e.value ?? '').matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
          expect(names.slice(0, i), `${service} ${e.name} refers to $(${ref})`).toContain(ref);
        }
      });
      expect(c.envFrom, `${service}: no envFrom (its variables would escape this check)`).toBeUndefined();
    }
    // Replicas announce their pod IP: the downward API feeds INFERMESH_INFERENCE_ADVERTISE.
    const { c } = serviceWorkload(objs(), 'inference');
    expect(c.env.find((e: any) => e.name === 'POD_IP')).toMatchObject({ valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } });
    expect(c.env.find((e: any) => e.name === 'INFERMESH_INFERENCE_ADVERTISE')?.value).toBe(`$(POD_IP):${servicePorts('inference').grpc}`);
    // The client URL points at a Service that serves NATS clients.
    const nats = named(objs(), 'Service', 'nats')!;
    expect(nats.spec.ports.map((p: any) => p.port)).toContain(4222);
  });

  it('runs every service from one image, with the service as the argument', () => {
    const images = new Set(SERVICES.map((s) => serviceWorkload(objs(), s).c.image));
    expect(images.size, [...images].join(', ')).toBe(1);
    const [image] = images;
    expect(image, 'the overlay pins a tag').toMatch(/^[^@\s]+:[\w.-]+$|@sha256:/);
  });

  it('runs everything as non-root with a read-only root filesystem and a writable /tmp', () => {
    for (const w of workloads(objs())) {
      const spec = podSpec(w);
      const id = `${w.kind}/${w.metadata.name}`;
      expect(spec.securityContext?.runAsNonRoot, id).toBe(true);
      expect(spec.hostNetwork ?? false, id).toBe(false);
      for (const c of containersOf(w)) {
        const sc = c.securityContext ?? {};
        expect(sc.readOnlyRootFilesystem, `${id} ${c.name}`).toBe(true);
        expect(sc.allowPrivilegeEscalation, `${id} ${c.name}`).toBe(false);
        expect(sc.privileged ?? false, `${id} ${c.name}`).toBe(false);
        expect(sc.runAsUser ?? spec.securityContext.runAsUser, `${id} ${c.name} runs as uid 0`).not.toBe(0);
        expect(sc.capabilities?.drop, `${id} ${c.name}`).toContain('ALL');
        const tmp = (c.volumeMounts ?? []).find((m: any) => m.mountPath === '/tmp');
        expect(tmp, `${id} ${c.name}: /tmp`).toBeDefined();
        expect(spec.volumes.find((v: any) => v.name === tmp.name)?.emptyDir, `${id}: /tmp is an emptyDir`).toBeDefined();
        for (const kind of ['requests', 'limits']) {
          for (const r of ['cpu', 'memory']) expect(c.resources?.[kind]?.[r], `${id} ${c.name} ${kind}.${r}`).toBeDefined();
        }
      }
    }
  });

  it('autoscales the router and guards router and inference with PodDisruptionBudgets', () => {
    const router = serviceWorkload(objs(), 'router').w;
    const hpa = ofKind(objs(), 'HorizontalPodAutoscaler').find((h) => h.spec.scaleTargetRef.name === router.metadata.name);
    expect(hpa?.spec.scaleTargetRef.kind).toBe('Deployment');
    expect(hpa!.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(hpa!.spec.maxReplicas).toBeGreaterThan(hpa!.spec.minReplicas);
    expect(router.spec.replicas, 'the HPA owns the router replica count').toBeUndefined();
    for (const s of ['router', 'inference']) {
      const labels = serviceWorkload(objs(), s).w.spec.template.metadata.labels;
      expect(ofKind(objs(), 'PodDisruptionBudget').filter((p) => selects(p.spec.selector, labels)), `PDB for ${s}`).toHaveLength(1);
    }
    // Every selector of a workload matches its own pods.
    for (const w of workloads(objs())) expect(selects(w.spec.selector, w.spec.template.metadata.labels), w.metadata.name).toBe(true);
  });

  it('runs NATS as a 3-node JetStream cluster routed through a headless Service', () => {
    const sts = named(objs(), 'StatefulSet', 'nats')!;
    expect(sts.spec.replicas).toBe(3);
    const headless = named(objs(), 'Service', sts.spec.serviceName)!;
    expect(headless.spec.clusterIP).toBe('None');
    expect(headless.spec.publishNotReadyAddresses).toBe(true);
    expect(serviceSelects(headless, sts.spec.template.metadata.labels)).toBe(true);
    expect(serviceSelects(named(objs(), 'Service', 'nats')!, sts.spec.template.metadata.labels)).toBe(true);

    const c = podSpec(sts).containers[0];
    const confMount = c.volumeMounts.find((m: any) => podSpec(sts).volumes.find((v: any) => v.name === m.name)?.configMap);
    const cmName = podSpec(sts).volumes.find((v: any) => v.name === confMount.name).configMap.name;
    const conf: string = named(objs(), 'ConfigMap', cmName)!.data['nats.conf'];
    expect([...c.command, ...(c.args ?? [])].join(' ')).toContain(`${confMount.mountPath}/nats.conf`);

    expect(conf).toMatch(/^\s*jetstream\s*\{/m);
    const storeDir = /store_dir:\s*"?([^\s"]+)/.exec(conf)?.[1];
    const dataMount = c.volumeMounts.find((m: any) => storeDir?.startsWith(m.mountPath + '/'));
    expect(sts.spec.volumeClaimTemplates.map((t: any) => t.metadata.name), 'JetStream store on a PVC').toContain(dataMount?.name);
    expect(conf).toMatch(/server_name:\s*\$SERVER_NAME/);
    expect(c.env.find((e: any) => e.name === 'SERVER_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
    const routes = [...conf.matchAll(/nats:\/\/([^\s:]+):(\d+)/g)].map((m) => `${m[1]}:${m[2]}`);
    const clusterPort = c.ports.find((p: any) => p.name === 'cluster').containerPort;
    expect(routes.sort()).toEqual([0, 1, 2].map((i) => `nats-${i}.${headless.metadata.name}.${NAMESPACE}.svc:${clusterPort}`));
    expect(named(objs(), 'PodDisruptionBudget', 'nats')?.spec.maxUnavailable).toBe(1);
  });

  it('nats-server accepts the rendered nats.conf', () => {
    if (!onPath('nats-server')) return void console.warn('nats-server not installed (deploy/local/ensure-deps.sh nats): nats.conf syntax not checked');
    const sts = named(objs(), 'StatefulSet', 'nats')!;
    const cm = ofKind(objs(), 'ConfigMap').find((m) => podSpec(sts).volumes.some((v: any) => v.configMap?.name === m.metadata.name))!;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-nats-conf-'));
    try {
      // Every file of the ConfigMap (nats.conf includes nats-auth.conf), passwords as the Secret would give them.
      for (const [file, text] of Object.entries(cm.data as Record<string, string>)) {
        writeFileSync(path.join(dir, file), text.replaceAll('/data/', `${dir}/data/`).replaceAll('/var/run/nats/', `${dir}/`));
      }
      const passwords = Object.fromEntries(K8S_NATS_USERS.map((u) => [passwordVariable(u), `pw-${u}-Zq9/x+y=`]));
      const res = spawnSync('nats-server', ['-c', path.join(dir, 'nats.conf'), '-t'], { encoding: 'utf8', env: { ...process.env, SERVER_NAME: 'nats-0', ...passwords } });
      expect(res.status, res.stderr + res.stdout).toBe(0);
      // Without the Secret's passwords the server does not start (a user without a password would be open).
      const bare = spawnSync('nats-server', ['-c', path.join(dir, 'nats.conf'), '-t'], { encoding: 'utf8', env: { ...process.env, SERVER_NAME: 'nats-0' } });
      expect(bare.status).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes management tokens and NATS passwords from Secrets, and ships none', () => {
    // No Secret objects (with their data) in the manifests: the operator creates them.
    expect(ofKind(objs(), 'Secret').map((o) => o.metadata.name)).toEqual([]);
    const fromSecret = (e: any, name: string, key: string) => {
      expect(e?.value, `${e?.name} has no literal value`).toBeUndefined();
      expect(e?.valueFrom?.secretKeyRef, e?.name).toEqual({ name, key });
    };
    for (const service of SERVICES) {
      const { w, c } = serviceWorkload(objs(), service);
      const env = (n: string) => c.env.find((e: any) => e.name === n);
      // Each service is its own NATS user, with the permissions of nats-auth.conf and an inbox of its own.
      expect(env('INFERMESH_NATS_USER')?.value, service).toBe(service);
      fromSecret(env('INFERMESH_NATS_PASSWORD'), NATS_SECRET, service);
      expect(env('INFERMESH_NATS_INBOX_PREFIX')?.value, service).toBe(`_INBOX.${service}`);
      expect(K8S_NATS_USERS as readonly string[]).toContain(service);
      for (const n of ['INFERMESH_NATS_TOKEN', 'INFERMESH_NATS_CREDS', 'INFERMESH_INSECURE_MANAGEMENT']) expect(env(n), `${service} ${n}`).toBeUndefined();
      if (service !== 'registry' && service !== 'monitor') continue;
      // The management plane binds 0.0.0.0, so it needs its tokens file: mounted from the Secret infermesh-tokens.
      const file: string = env('INFERMESH_TOKENS_FILE')?.value;
      expect(file, `${service} INFERMESH_TOKENS_FILE`).toMatch(/^\//);
      const mount = c.volumeMounts.find((m: any) => file.startsWith(`${m.mountPath}/`));
      const vol = podSpec(w).volumes.find((v: any) => v.name === mount?.name);
      expect(vol?.secret?.secretName, `${service}: the tokens file comes from a Secret`).toBe('infermesh-tokens');
      expect(vol.secret.optional ?? false, `${service}: no Secret, no start`).toBe(false);
      expect(vol.secret.items.map((i: any) => `${mount.mountPath}/${i.path}`)).toContain(file);
      expect(mount.readOnly).toBe(true);
      if (service === 'monitor') fromSecret(env('INFERMESH_REGISTRY_TOKEN'), 'infermesh-tokens', 'monitor-registry-token');
    }
    // The NATS servers: one user per service (and admin), passwords only from the Secret.
    const sts = named(objs(), 'StatefulSet', 'nats')!;
    const c = podSpec(sts).containers[0];
    const cm = ofKind(objs(), 'ConfigMap').find((m) => podSpec(sts).volumes.some((v: any) => v.configMap?.name === m.metadata.name))!;
    expect(cm.data['nats.conf']).toMatch(/^include \.\/nats-auth\.conf$/m);
    const auth: string = cm.data['nats-auth.conf'];
    expect(auth).not.toMatch(/password:\s*"/);
    for (const user of K8S_NATS_USERS) {
      expect(auth).toContain(`password: $${passwordVariable(user)}`);
      fromSecret(c.env.find((e: any) => e.name === passwordVariable(user)), NATS_SECRET, user);
    }
    expect(c.envFrom).toBeUndefined();
  });

  it("mirrors `up`'s NATS permissions per service (services/cli/nats-auth.ts)", () => {
    const sts = named(objs(), 'StatefulSet', 'nats')!;
    const cm = ofKind(objs(), 'ConfigMap').find((m) => podSpec(sts).volumes.some((v: any) => v.configMap?.name === m.metadata.name))!;
    // Regenerate with: npx vite-node test/deploy/print-nats-auth-conf.ts > deploy/k8s/base/nats-auth.conf
    expect(cm.data['nats-auth.conf']).toBe(natsAuthConf());
  });

  it('lets only the router be reached from outside the namespace', () => {
    const policies = ofKind(objs(), 'NetworkPolicy');
    expect(policies.length).toBeGreaterThan(0);
    const ns = { ...named(objs(), 'Namespace', NAMESPACE)!.metadata.labels, 'kubernetes.io/metadata.name': NAMESPACE };
    const publicPorts = new Set(servicePorts('router').all);
    const monitor = servicePorts('monitor');
    const metricsPorts = new Set(monitor.all.filter((p) => p !== monitor.grpc));
    for (const w of workloads(objs())) {
      const labels = w.spec.template.metadata.labels;
      const isRouter = serviceOfContainer(podSpec(w).containers[0]) === 'router';
      for (const c of podSpec(w).containers) {
        for (const p of c.ports ?? []) {
          const id = `${w.metadata.name}:${p.containerPort}`;
          expect(reach(policies, ns, labels, p, 'inside'), `${id} from inside the namespace`).toBe('open');
          const outside = reach(policies, ns, labels, p, 'outside');
          if (isRouter && publicPorts.has(p.containerPort)) expect(outside, id).toBe('open');
          else if (serviceOfContainer(c) === 'monitor' && metricsPorts.has(p.containerPort)) {
            // Prometheus elsewhere may scrape /metrics from namespaces that opt in by label.
            expect(outside, id).not.toBe('open');
          } else expect(outside, `${id} from outside the namespace`).toBe('closed');
        }
      }
    }
    // A pod nobody declared (e.g. kubectl run in another namespace) is denied by default.
    expect(reach(policies, ns, { 'app.kubernetes.io/name': 'other' }, { containerPort: 1234 }, 'outside')).toBe('closed');
  });
});

describe('overlays', () => {
  it('gpu: inference gets one NVIDIA GPU, CUDA and a place on GPU nodes', () => {
    const { w, c } = serviceWorkload(rendered.gpu, 'inference');
    expect(String(c.resources.limits['nvidia.com/gpu'])).toBe('1');
    expect(c.env.find((e: any) => e.name === 'INFERMESH_DEVICE')?.value).toBe('cuda');
    expect(Object.keys(podSpec(w).nodeSelector ?? {}).some((k) => k.startsWith('nvidia.com/'))).toBe(true);
    expect((podSpec(w).tolerations ?? []).map((t: any) => t.key)).toContain('nvidia.com/gpu');
    for (const s of SERVICES.filter((x) => x !== 'inference')) {
      expect(serviceWorkload(rendered.gpu, s).c.resources.limits['nvidia.com/gpu'], `${s} asks for no GPU`).toBeUndefined();
    }
  });

  it('cpu: inference runs on the CPU and nothing asks for a GPU', () => {
    const { c } = serviceWorkload(rendered.cpu, 'inference');
    expect(c.env.find((e: any) => e.name === 'INFERMESH_DEVICE')?.value).toBe('cpu');
    expect(JSON.stringify(rendered.cpu)).not.toContain('nvidia.com/gpu');
  });

  it('differ only in the inference replicas\' device and the image tag', () => {
    const strip = (objs: Obj[]) =>
      objs
        .filter((o) => !(o.kind === 'Deployment' && o.metadata.name === 'inference'))
        .map((o) => {
          const copy = structuredClone(o);
          if (WORKLOAD_KINDS.has(copy.kind)) for (const c of podSpec(copy).containers) if (serviceOfContainer(c)) c.image = '(the infermesh image)';
          return copy;
        });
    expect(strip(rendered.gpu)).toEqual(strip(rendered.cpu));
  });
});
