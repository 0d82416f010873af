/**
 * The router's REST gateway (port 8501): TensorFlow Serving's REST API and
 * the Open Inference Protocol's REST binding. Every inference goes through
 * the router's one request path (RequestPath.accept), so routing, canary,
 * shadow, batching and samples are the same as over gRPC; HTTP headers are
 * passed as its metadata (lower-case keys).
 *
 * Endpoints:
 *   POST /v1/models/<m>[/versions/<v>|/labels/<l>]:predict
 *   GET  /v1/models/<m>[/versions/<v>|/labels/<l>]            (status)
 *   GET  /v1/models/<m>[/versions/<v>|/labels/<l>]/metadata
 *   POST /v2/models/<m>[/versions/<v>]/infer
 *   GET  /v2/models/<m>[/versions/<v>][/ready]
 *   GET  /v2, /v2/health/live, /v2/health/ready
 *   Triton's config, stats and repository endpoints (triton-rest.ts)
 *   GET  /v2/replicas  (management view, loopback only: replica-view.ts)
 *
 * Every error is `{"error": "<message>"}`: 400 bad input (naming the field),
 * 404 unknown model or path, 405 wrong method, 413 body too large, 415 a POST
 * a web page could send cross-site (checkContentType), 429
 * overloaded, 503 unavailable, 504 deadline exceeded, 500 otherwise.
 */
import http from 'node:http';
import https from 'node:https';
import type { Registry } from 'prom-client';
import { InternalError, InvalidArgumentError, NotFoundError } from '../../libs/errors/index.js';
import type { Logger } from '../../libs/log/index.js';
import { oip, type RegistryClient } from '../../libs/proto/index.js';
import { MeshError } from '../../libs/errors/index.js';
import type { HeaderSource, RequestPath } from './request-path.js';
import { HttpError, httpErrorOf, parseJsonObject, readBody, sendJson, type Out } from './rest-json.js';
import { isReady, modelRef, oipModelRef, resolveRoute, signatureOf, type ModelRef } from './rest-models.js';
import { oipInferRequest, oipMetadata } from './rest-oip.js';
import { tfMetadata, tfPredictRequest, tfPredictResponse, tfStatus } from './rest-tfserving.js';
import { replicaViewAnswer } from './replica-view.js';
import type { RoutingTable } from './routing-table.js';
import { tritonEndpoint } from './triton-rest.js';
import { binaryWants, EncodedAnswer, inferAnswer, readInferBody } from './triton-binary.js';
import { TRITON_EXTENSIONS } from './triton-service.js';

export interface RestOptions {
  /** Largest request body accepted, in bytes (the router's max message size). */
  maxBodyBytes: number;
  /** Served as Prometheus text on GET /metrics. */
  metrics?: Registry;
  /** Deadline of requests that carry no `x-infermesh-timeout-ms` header. */
  defaultTimeoutMs: number;
  serverVersion: string;
  log: Logger;
  /**
   * HTTPS with this certificate and key (the gRPC listener's); with `ca`,
   * clients must present a certificate it signed. Absent: plain HTTP.
   */
  tls?: { cert?: Buffer; key?: Buffer; ca?: Buffer } | null;
  /** Where Triton's repository load moves aliases (triton-rest.ts); absent = load answers 503. */
  registry?: RegistryClient | null;
}

/** Header that sets a request's deadline, in milliseconds from now. */
export const TIMEOUT_HEADER = 'x-infermesh-timeout-ms';

interface Endpoint {
  method: 'GET' | 'POST';
  /** A POST that changes nothing and takes any Content-Type (Triton's repository index and unload). */
  anyContentType?: boolean;
  /** An EncodedAnswer (binary tensors, compression) is written as it is; anything else as JSON. */
  run: () => Promise<[number, Out | EncodedAnswer]>;
}

/** The REST gateway's HTTP server (not yet listening). It never throws on bad input and never crashes on it. */
export function createRestServer(table: RoutingTable, path: RequestPath, o: RestOptions): http.Server | https.Server {
  const call = (req: http.IncomingMessage, buf: Buffer): Promise<oip.ModelInferResponse> => {
    // JSON numbers can encode larger than they read ("0," is 2 bytes, an FP64 is 8): the encoded
    // request must fit the same limit as a gRPC caller's.
    if (buf.length > o.maxBodyBytes) return Promise.reject(new HttpError(413, `request: tensors encode to ${buf.length} bytes, more than the limit of ${o.maxBodyBytes} bytes`));
    const remainingMs = timeoutOf(req, o.defaultTimeoutMs);
    return new Promise((resolve, reject) => {
      // REST is one more front door of the one request path.
      path.accept(buf, headerSource(req), remainingMs, (r) => {
        if (r instanceof MeshError) return reject(r);
        try {
          resolve(oip.ModelInferResponse.decode(r));
        } catch (err) {
          reject(new InternalError('undecodable answer from the replica', { cause: err }));
        }
      });
    });
  };

  const body = async (req: http.IncomingMessage) => parseJsonObject(await readBody(req, o.maxBodyBytes));

  const v1 = (req: http.IncomingMessage, s: string[]): Endpoint | null => {
    // The verb rides on the last segment: /v1/models/m:predict, /v1/models/m/versions/2:predict.
    const last = s[s.length - 1]!;
    const colon = last.indexOf(':');
    const verb = colon < 0 ? '' : last.slice(colon + 1);
    if (colon >= 0) s = [...s.slice(0, -1), last.slice(0, colon)];
    let rest = s.slice(4);
    let kind: 'version' | 'label' | '' = '';
    let selector = '';
    if ((rest[0] === 'versions' || rest[0] === 'labels') && rest.length >= 2) {
      kind = rest[0] === 'versions' ? 'version' : 'label';
      selector = rest[1]!;
      rest = rest.slice(2);
    }
    const ref = () => modelRef(s[3]!, kind, selector);
    if (verb) {
      if (verb !== 'predict' || rest.length) return null;
      return {
        method: 'POST',
        run: async () => {
          const r = ref();
          const b = await body(req);
          const p = tfPredictRequest(signatureOf(resolveRoute(table, r)), r, b);
          return [200, tfPredictResponse(await call(req, p.request), p)];
        },
      };
    }
    if (rest.length === 0) return { method: 'GET', run: async () => [200, tfStatus(table, ref())] };
    if (rest.length === 1 && rest[0] === 'metadata') return { method: 'GET', run: async () => [200, tfMetadata(signatureOf(resolveRoute(table, ref())))] };
    return null;
  };

  const v2 = (req: http.IncomingMessage, s: string[]): Endpoint | null => {
    if (s.length === 2) return { method: 'GET', run: async () => [200, { name: 'infermesh', version: o.serverVersion, extensions: TRITON_EXTENSIONS }] };
    // Triton's extensions: config, stats, repository (triton-rest.ts).
    const triton = tritonEndpoint({ table, registry: o.registry ?? null }, req, s, o.maxBodyBytes, () => deadlineOf(req, o.defaultTimeoutMs));
    if (triton) return triton;
    if (s[2] === 'health' && s.length === 4 && s[3] === 'live') return { method: 'GET', run: async () => [200, { live: true }] };
    if (s[2] === 'replicas' && s.length === 3) return { method: 'GET', run: async () => replicaViewAnswer(table, req) };
    if (s[2] === 'health' && s.length === 4 && s[3] === 'ready') {
      return { method: 'GET', run: async () => {
        const why = table.notReadyReason();
        return why ? [503, { ready: false, error: why }] : [200, { ready: true }];
      } };
    }
    if (s[2] !== 'models' || s.length < 4) return null;
    let rest = s.slice(4);
    let version = '';
    if (rest[0] === 'versions' && rest.length >= 2) {
      version = rest[1]!;
      rest = rest.slice(2);
    }
    const ref = () => oipModelRef(s[3]!, version);
    if (rest.length === 0) return { method: 'GET', run: async () => [200, oipMetadata(table, routeWithSignature(table, ref()))] };
    if (rest.length === 1 && rest[0] === 'ready') {
      return {
        method: 'GET',
        run: async () => {
          const r = ref();
          if (!table.model(r.name)) throw new NotFoundError(`model ${r.name} not found`);
          const route = table.resolve(r.name, r.selector);
          if (!route && r.selector) resolveRoute(table, r);
          const ready = !!route && isReady(table, r.name, route.record.version);
          return ready ? [200, { name: r.name, ready }] : [503, { name: r.name, ready, error: `model ${r.name}${r.selector ? ` version ${r.selector}` : ''} is not ready` }];
        },
      };
    }
    if (rest.length === 1 && rest[0] === 'infer') {
      return {
        method: 'POST',
        run: async () => {
          const r = ref();
          // JSON, or JSON and binary tensors (Inference-Header-Content-Length), maybe compressed: triton-binary.ts.
          const { json, binary } = await readInferBody(req, o.maxBodyBytes);
          const buf = oipInferRequest(r, json, binary);
          return [200, await inferAnswer(req, await call(req, buf), binaryWants(json))];
        },
      };
    }
    return null;
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = req.url ?? '/';
    if (o.metrics && (url === '/metrics' || url.startsWith('/metrics?')) && (req.method === 'GET' || req.method === 'HEAD')) {
      const text = await o.metrics.metrics();
      res.writeHead(200, { 'content-type': o.metrics.contentType });
      res.end(text);
      return;
    }
    const q = url.indexOf('?');
    let path = q < 0 ? url : url.slice(0, q);
    if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
    let s: string[];
    try {
      s = path.split('/').map(decodeURIComponent);
    } catch {
      throw new HttpError(400, 'path: malformed percent-encoding');
    }
    const ep = s[0] !== '' ? null : s[1] === 'v1' && s[2] === 'models' && s.length >= 4 ? v1(req, s) : s[1] === 'v2' ? v2(req, s) : null;
    if (!ep) throw new HttpError(404, `no endpoint ${req.method} ${path}`);
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    if (method !== ep.method) throw new HttpError(405, `${req.method} is not allowed on ${path}; use ${ep.method}`, { allow: ep.method === 'GET' ? 'GET, HEAD' : 'POST' });
    if (method === 'POST' && !ep.anyContentType) checkContentType(req);
    const [status, out] = await ep.run();
    if (!(out instanceof EncodedAnswer)) return sendJson(res, status, out);
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { ...out.headers, 'content-length': out.body.length });
    res.end(out.body);
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    handle(req, res).catch((err: unknown) => {
      const e = httpErrorOf(err);
      if (e.internal) o.log.error({ err, method: req.method, url: req.url }, 'REST request failed');
      sendJson(res, e.status, { error: e.message }, e.headers);
    });
  };
  const server = o.tls
    ? https.createServer({ cert: o.tls.cert, key: o.tls.key, ca: o.tls.ca, requestCert: o.tls.ca !== undefined, rejectUnauthorized: o.tls.ca !== undefined }, onRequest)
    : http.createServer(onRequest);
  // Requests Node cannot parse still get a JSON answer.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') return void socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const text = JSON.stringify({ error: status === 431 ? 'request headers too large' : status === 408 ? 'request timed out' : 'malformed HTTP request' });
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
  });
  return server;
}

function routeWithSignature(table: RoutingTable, ref: ModelRef) {
  const route = resolveRoute(table, ref);
  signatureOf(route);
  return route;
}

/** The milliseconds a request gives itself: `x-infermesh-timeout-ms`, else `defaultMs`. */
function timeoutOf(req: http.IncomingMessage, defaultMs: number): number {
  const h = req.headers[TIMEOUT_HEADER];
  if (h === undefined) return defaultMs;
  const ms = Number(Array.isArray(h) ? h[0] : h);
  if (!(ms > 0) || !Number.isFinite(ms)) throw new InvalidArgumentError(TIMEOUT_HEADER, 'must be a positive number of milliseconds');
  return ms;
}

/** The request's deadline as epoch ms (for calls that take a wall-clock deadline): now + timeoutOf. */
function deadlineOf(req: http.IncomingMessage, defaultMs: number): number {
  return Date.now() + timeoutOf(req, defaultMs);
}

/** HTTP headers as the request path's metadata (Node gives lower-case keys). */
function headerSource(req: http.IncomingMessage): HeaderSource {
  return {
    get(key: string) {
      const v = req.headers[key];
      return v === undefined ? [] : Array.isArray(v) ? v : [v];
    },
  };
}

/**
 * A POST must say it is JSON (`application/json`), or the binary-tensor type
 * (`application/octet-stream`), or carry `Inference-Header-Content-Length`
 * (the binary-data extension; Triton's Python client sends no Content-Type).
 * Each of these makes a browser ask first (a CORS preflight, which this
 * gateway never grants), so a web page cannot make a visitor's browser score
 * on a mesh it can reach: the simple types (text/plain, form encodings) get 415.
 * A POST without any Content-Type is what tritonclient.http sends in JSON mode
 * and what a page can send with a typeless Blob; browsers always add `Origin`
 * to a POST, so it is served only without one.
 */
function checkContentType(req: http.IncomingMessage): void {
  if (req.headers['inference-header-content-length'] !== undefined) return;
  const raw = req.headers['content-type'];
  if (raw === undefined && req.headers.origin === undefined) return;
  const type = (raw ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (type === 'application/json' || type === 'application/octet-stream') return;
  throw new HttpError(415, `content-type: expected application/json, got ${type ? JSON.stringify(type.slice(0, 64)) : 'none'}`, { accept: 'application/json' });
}
