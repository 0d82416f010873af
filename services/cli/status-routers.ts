/**
 * What the routers of an `up` mesh say about its replicas, for `infermesh
 * status`: each running router's management view (GET /v2/replicas on its
 * REST port, loopback only; HTTPS with the CLI's TLS files when it has them),
 * matched to the replica processes. A replica is `ready` when every router
 * that answered sends it work, `not ready: <reason>` when one does not (a
 * certificate it cannot verify: `TLS: certificate signed by unknown
 * authority`), and `unknown` when no router answered.
 */
import http from 'node:http';
import https from 'node:https';
import type { TlsMaterial } from '../../libs/grpc/index.js';
import type { ReplicaViewEntry } from '../router/replica-view.js';
import type { ProcessEntry } from './status-file.js';

/** How long one router may take to answer. */
const VIEW_TIMEOUT_MS = 2_000;
/** Largest view read (a few hundred bytes per replica). */
const VIEW_MAX_BYTES = 1 << 20;

/** One replica in a router's view (the JSON of GET /v2/replicas, as the router writes it). */
export type ViewedReplica = ReplicaViewEntry;

/** One router's answer: its replicas, or why it gave none. */
export interface RouterAnswer {
  router: string;
  replicas: ViewedReplica[] | null;
  error: string;
}

/** The routers' verdict on one replica process; `ready` null = unknown (no router answered). */
export interface RouterView {
  ready: boolean | null;
  /** '' when ready or unknown; else the first reason a router gave. */
  reason: string;
  /** Each router's own verdict. */
  routers: { router: string; ready: boolean | null; reason: string }[];
}

/** GET /v2/replicas of the router on 127.0.0.1:`port`. Never throws. */
export function fetchRouterView(router: string, port: number, tls: TlsMaterial | null): Promise<RouterAnswer> {
  return new Promise((resolve) => {
    const done = (replicas: ViewedReplica[] | null, error: string) => resolve({ router, replicas, error });
    const options = { host: '127.0.0.1', port, path: '/v2/replicas', timeout: VIEW_TIMEOUT_MS, ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {}) };
    const req = (tls ? https : http).get(options, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
        if (body.length > VIEW_MAX_BYTES) req.destroy(new Error('answer too large'));
      });
      res.on('end', () => {
        if (res.statusCode !== 200) return done(null, `HTTP ${res.statusCode}`);
        try {
          const v = JSON.parse(body) as { replicas?: unknown };
          if (!Array.isArray(v.replicas)) return done(null, 'not a replica view');
          done(v.replicas as ViewedReplica[], '');
        } catch {
          done(null, 'not a replica view');
        }
      });
      res.on('error', (err) => done(null, err.message));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${VIEW_TIMEOUT_MS} ms`)));
    req.on('error', (err) => done(null, err.message));
  });
}

/** The replica of `p` in one router's view: by id (under `up`, the process name), else by the port it listens on. */
function find(view: ViewedReplica[], p: ProcessEntry): ViewedReplica | undefined {
  return view.find((r) => r.id === p.name) ?? (p.port > 0 ? view.find((r) => r.address.endsWith(`:${p.port}`)) : undefined);
}

/** What the routers that answered say about the replica process `p`. */
export function routerViewOf(p: ProcessEntry, answers: RouterAnswer[]): RouterView {
  const routers = answers.map(({ router, replicas }) => {
    if (!replicas) return { router, ready: null, reason: '' };
    const r = find(replicas, p);
    if (!r) return { router, ready: false, reason: 'the router does not know it (no heartbeat)' };
    return { router, ready: r.ready === true, reason: r.ready === true ? '' : String(r.reason || 'not ready') };
  });
  const known = routers.filter((r) => r.ready !== null);
  if (known.length === 0) return { ready: null, reason: '', routers };
  const not = known.find((r) => r.ready === false);
  return not ? { ready: false, reason: answers.length > 1 ? `${not.reason} (${not.router})` : not.reason, routers } : { ready: true, reason: '', routers };
}

/** The ROUTER VIEW cell: `ready`, `not ready: <reason>`, `unknown`. */
export function routerViewText(v: RouterView): string {
  return v.ready === null ? 'unknown' : v.ready ? 'ready' : `not ready: ${v.reason}`;
}
