/** The router: the mesh's front door (OIP gRPC on 8500; REST — TF Serving and OIP — plus /metrics on 8501). */
import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { bool, commonSpec, int, loadServiceConfig, num, serviceStarted, str } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { startTelemetry } from '../../libs/telemetry/index.js';
import { connectNats, natsSecurityOf, openBuckets } from '../../libs/bus/index.js';
import { addHealthAndReflection, createGrpcServer, listen, peerCredentials, peerTls, requireServiceCertificate, serverCredentials, serverTlsOf, serveRawUnary, shutdownServer } from '../../libs/grpc/index.js';
import { frontHandlers, PUSHBACK_TRAILERS, rawInferService, rawModelInfer } from './front.js';
import { modelStreamInfer } from './model-stream-infer.js';
import { RequestPath } from './request-path.js';
import { oip } from '../../libs/proto/index.js';
import { createRestServer } from './rest-server.js';
import { tritonHandlers } from './triton-service.js';
import { RegistryApi } from '../../libs/client/index.js';
import { routerMetrics, type RouterCounters } from './router-metrics.js';
import { RoutingTable } from './routing-table.js';
import { SampleRecorder } from './sample-recorder.js';

const config = loadServiceConfig(
  'router',
  {
    ...commonSpec,
    port: int({ env: 'INFERMESH_ROUTER_PORT', flag: 'port', default: 8500, min: 0, max: 65535 }),
    restPort: int({ env: 'INFERMESH_REST_PORT', flag: 'rest-port', default: 8501, min: 0, max: 65535 }),
    routerId: str({ env: 'INFERMESH_ROUTER_ID', flag: 'router-id', default: '', pattern: /^[A-Za-z0-9_-]{0,64}$/ }),
    defaultTimeoutMs: int({ env: 'INFERMESH_DEFAULT_TIMEOUT_MS', flag: 'default-timeout-ms', default: 30_000, min: 1 }),
    sampleRate: num({ env: 'INFERMESH_SAMPLE_RATE', flag: 'sample-rate', default: 0.01, min: 0, max: 1 }),
    sampleFlushMs: int({ env: 'INFERMESH_SAMPLE_FLUSH_MS', flag: 'sample-flush-ms', default: 1000, min: 50 }),
    promoteReadyFraction: num({ env: 'INFERMESH_PROMOTE_READY_FRACTION', flag: 'promote-ready-fraction', default: 1, min: 0, max: 1 }),
    maxInflight: int({ env: 'INFERMESH_MAX_INFLIGHT', flag: 'max-inflight', default: 10_000, min: 1 }),
    shadowTolerance: num({ env: 'INFERMESH_SHADOW_TOLERANCE', flag: 'shadow-tolerance', default: 0.01, min: 0 }),
    /** ModelInfer off the raw HTTP/2 streams (serveRawUnary); false = grpc-js's handler. */
    http2Infer: bool({ env: 'INFERMESH_HTTP2_INFER', flag: 'http2-infer', default: true }),
    /** Plaintext replica links over node:http2 directly (less CPU per call at few callers); false = through grpc-js, as TLS links always go. */
    rawLink: bool({ env: 'INFERMESH_RAW_LINK', flag: 'raw-link', default: true }),
    registryAddress: str({ env: 'INFERMESH_REGISTRY_ADDR', flag: 'registry-address', default: '127.0.0.1:8600', help: "registry that Triton's RepositoryModelLoad moves aliases through (with the caller's token)" }),
    /** ModelStreamInfer: requests of one stream in flight at once (the excess is answered RESOURCE_EXHAUSTED in the stream). */
    streamMaxInflight: int({ env: 'INFERMESH_STREAM_MAX_INFLIGHT', flag: 'stream-max-inflight', default: 256, min: 1 }),
  },
  process.argv.slice(2),
  process.env,
);

const routerId = config.routerId || `router-${randomBytes(4).toString('hex')}`;
const log = createLogger('router', config.logLevel, { router: routerId });
const tls = serverTlsOf(config);
// Under mutual TLS replicas accept only service certificates: without one, every replica call would be refused.
requireServiceCertificate(tls, 'router', config.tlsServiceUri);
const natsSecurity = natsSecurityOf(config);
// The request path draws each root request's sampling decision itself (rootRatio): headSampled keeps the SDK from drawing again.
const telemetry = await startTelemetry('infermesh-router', process.env, { attributes: { 'service.instance.id': routerId }, asyncContext: false, headSampled: ['ModelInfer'] });
const nc = await connectNats(config.natsUrl, `infermesh-${routerId}`, log, natsSecurity).catch((err: Error) => {
  log.fatal(err.message);
  process.exit(1);
});
const buckets = await openBuckets(nc, config.natsReplicas);
const table = await RoutingTable.create(buckets.models, buckets.replicas, {
  maxMessageBytes: config.maxMessageBytes,
  promoteReadyFraction: config.promoteReadyFraction,
  log,
  credentials: peerCredentials(tls),
  serverName: config.tlsServerName,
  tls: peerTls(tls),
  rawLink: config.rawLink,
});
// Samples carry the value of the model's segment parameter (`models push --segment-by`), read once per model per flush.
const segmentKey = (model: string) => table.versionsOf(model).find((v) => v.segmentBy !== '')?.segmentBy ?? '';
const samples = new SampleRecorder(nc, { routerId, flushMs: config.sampleFlushMs, sampleRate: config.sampleRate, segmentKey }, log);

// Triton's RepositoryModelLoad moves aliases through the registry, forwarding the caller's token.
const registry = new RegistryApi(config.registryAddress, { timeoutMs: 60_000, tls: peerTls(tls), serverName: config.tlsServerName || undefined });
const server = createGrpcServer({ maxMessageBytes: config.maxMessageBytes });
const frontOptions = { serverVersion: '0.1.0' };
const counters: RouterCounters = { inflight: 0, receiving: 0, shed: 0, cancelled: 0, retried: 0 };
// The one request path every front door hands its requests to.
const path = new RequestPath(table, samples, { defaultTimeoutMs: config.defaultTimeoutMs, shadowTolerance: config.shadowTolerance, maxInflight: config.maxInflight, tracer: telemetry.tracer, traceRatio: telemetry.rootRatio }, counters);
server.addService(
  rawInferService(),
  // Triton's extensions (ModelConfig, ModelStatistics, Repository*) beside the core protocol.
  { ...frontHandlers(table, path, frontOptions, { modelStreamInfer: modelStreamInfer(path, { maxInflight: config.streamMaxInflight }) }), ...tritonHandlers({ table, registry: registry.client }) } as unknown as grpc.UntypedServiceImplementation,
);
const health = addHealthAndReflection(server, ['inference/grpc_service.proto'], ['inference.GRPCInferenceService']);
const port = await listen(server, config.host, config.port, serverCredentials(tls));
// ModelInfer leaves grpc-js's per-call machinery for the listener's raw HTTP/2 streams; every other
// method (and TLS, sessions, keepalive, shutdown) stays with grpc-js.
const rawFront = config.http2Infer && serveRawUnary(server, oip.GRPCInferenceServiceService.modelInfer.path, rawModelInfer(path), {
  maxMessageBytes: config.maxMessageBytes,
  maxReceiveMs: config.defaultTimeoutMs,
  // Calls whose body is still arriving hold a slot too: a slow sender cannot slip past the limit.
  load: { counters, maxInflight: config.maxInflight, shedTrailers: PUSHBACK_TRAILERS },
});
if (config.http2Infer && !rawFront) log.warn('ModelInfer served by the grpc-js handler: this grpc-js does not expose its HTTP/2 listeners as expected');

// The REST gateway (TF Serving and OIP REST), on the same request path as gRPC.
const rest = createRestServer(table, path, { metrics: routerMetrics(table, counters), maxBodyBytes: config.maxMessageBytes, defaultTimeoutMs: config.defaultTimeoutMs, serverVersion: frontOptions.serverVersion, log, tls, registry: registry.client });
const restPort = await new Promise<number>((resolve, reject) => {
  rest.once('error', reject);
  rest.listen(config.restPort, config.host, () => resolve((rest.address() as { port: number }).port));
});
health.set('SERVING');
log.info({ grpcPort: port, restPort, tls: tls ? (tls.ca ? 'mutual' : 'server') : 'off', modelInfer: rawFront ? 'http2' : 'grpc-js' }, 'listening');
serviceStarted();

let closing: Promise<void> | null = null;
const close = () =>
  (closing ??= (async () => {
    health.set('NOT_SERVING');
    await shutdownServer(server, config.shutdownGraceMs);
    rest.close();
    samples.close();
    table.close();
    registry.close();
    await nc.drain().catch(() => undefined);
    await telemetry.shutdown();
    process.exit(0);
  })());
process.once('SIGINT', close);
process.once('SIGTERM', close);
