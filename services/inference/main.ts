/** An inference replica: ONNX Runtime sessions in worker threads behind the runtime stream and OIP (8800+). */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type * as grpc from '@grpc/grpc-js';
import { bool, commonSpec, int, loadServiceConfig, serviceStarted, str } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { startTelemetry } from '../../libs/telemetry/index.js';
import { connectNats, natsSecurityOf, openBuckets, EventPublisher } from '../../libs/bus/index.js';
import { addHealthAndReflection, createGrpcServer, linkMessageBytes, listen, serverCredentials, servicePeerCheck, serverTlsOf, serveRawUnary, shutdownServer } from '../../libs/grpc/index.js';
import { oip, RuntimeService, VersionState } from '../../libs/proto/index.js';
import { Announcer } from './announcer.js';
import { chooseDevice, DeviceError } from './device.js';
import { ModelManager } from './model-manager.js';
import { oipHandlers, oipServiceRawResponse, rawModelInfer } from './oip-handlers.js';
import { runtimeContext, runtimeHandlers, RuntimeStream, type RuntimeOptions } from './runtime-handler.js';
import { serveRuntimeLink } from './runtime-link.js';
import { Scheduler } from './scheduler.js';
import { ModelStats } from './model-stats.js';
import { SessionPool } from './session-pool.js';

const config = loadServiceConfig(
  'inference',
  {
    ...commonSpec,
    port: int({ env: 'INFERMESH_INFERENCE_PORT', flag: 'port', default: 8800, min: 0, max: 65535 }),
    advertise: str({ env: 'INFERMESH_INFERENCE_ADVERTISE', flag: 'advertise', default: '', help: 'address routers reach this replica at: HOST:PORT, or HOST (with the bound port); default --host:port' }),
    replicaId: str({ env: 'INFERMESH_REPLICA_ID', flag: 'replica-id', default: '', pattern: /^[A-Za-z0-9_-]{0,64}$/ }),
    device: str<'cpu' | 'cuda' | 'auto'>({ env: 'INFERMESH_DEVICE', flag: 'device', default: 'auto', choices: ['cpu', 'cuda', 'auto'] as const }),
    workers: int({ env: 'INFERMESH_WORKERS', flag: 'workers', default: 1, min: 1, max: 256 }),
    intraOpThreads: int({ env: 'INFERMESH_INTRA_OP_THREADS', flag: 'intra-op-threads', default: 1, min: 1, max: 256 }),
    memoryBudgetMb: int({ env: 'INFERMESH_MEMORY_BUDGET_MB', flag: 'memory-budget-mb', default: 0, min: 0 }),
    keepLatest: int({ env: 'INFERMESH_KEEP_VERSIONS', flag: 'keep-versions', default: 2, min: 0, max: 100 }),
    maxBatch: int({ env: 'INFERMESH_MAX_BATCH', flag: 'max-batch', default: 64, min: 1, max: 65536 }),
    maxQueue: int({ env: 'INFERMESH_MAX_QUEUE', flag: 'max-queue', default: 2048, min: 1, max: 1_000_000 }),
    defaultTimeoutMs: int({ env: 'INFERMESH_DEFAULT_TIMEOUT_MS', flag: 'default-timeout-ms', default: 30_000, min: 1 }),
    heartbeatMs: int({ env: 'INFERMESH_HEARTBEAT_MS', flag: 'heartbeat-ms', default: 2_000, min: 100 }),
    handOverMs: int({ env: 'INFERMESH_HAND_OVER_MS', flag: 'hand-over-ms', default: 30_000, min: 0 }),
    drainMs: int({ env: 'INFERMESH_DRAIN_MS', flag: 'drain-ms', default: 30_000, min: 0 }),
    nonFinite: str<'reject' | 'allow'>({ env: 'INFERMESH_NONFINITE_INPUTS', flag: 'nonfinite-inputs', default: 'reject', choices: ['reject', 'allow'] }),
    oversubscribe: bool({ env: 'INFERMESH_OVERSUBSCRIBE', flag: 'oversubscribe', default: false }),
    /** ModelInfer off the raw HTTP/2 streams (serveRawUnary); false = grpc-js's handler. */
    http2Infer: bool({ env: 'INFERMESH_HTTP2_INFER', flag: 'http2-infer', default: true }),
    /** The routers' Runtime stream off the raw HTTP/2 streams (runtime-link.ts); false = grpc-js's handler. */
    http2Link: bool({ env: 'INFERMESH_HTTP2_LINK', flag: 'http2-link', default: true }),
  },
  process.argv.slice(2),
  process.env,
);

const replicaId = config.replicaId || `inf-${randomBytes(4).toString('hex')}`;
const log = createLogger('inference', config.logLevel, { replica: replicaId });
const tls = serverTlsOf(config);
const natsSecurity = natsSecurityOf(config);
if (tls && !tls.ca) log.warn('TLS without --tls-ca: clients present no certificates, so the Runtime API cannot tell the mesh\'s services from scoring clients (use mutual TLS)');
let device: ReturnType<typeof chooseDevice>;
try {
  device = chooseDevice(config.device);
} catch (err) {
  if (err instanceof DeviceError) {
    log.fatal(err.message);
    process.exit(2);
  }
  throw err;
}
if (device.note) log.info(device.note);
const cores = os.availableParallelism();
if (config.workers * config.intraOpThreads > cores && !config.oversubscribe) {
  log.warn({ workers: config.workers, intraOpThreads: config.intraOpThreads, cores }, 'workers × intra-op threads exceeds the cores; small models get slower (pass --oversubscribe to silence)');
}
const telemetry = await startTelemetry('infermesh-inference', process.env, { attributes: { 'service.instance.id': replicaId }, asyncContext: false });

const pool = new SessionPool({ workers: config.workers, intraOpThreads: config.intraOpThreads, provider: device.provider }, (err) => {
  log.fatal({ err: String(err) }, 'ONNX Runtime worker died');
  process.exit(1);
});
// Triton-style per-version counters (ModelStatistics through the router): every answer and run is counted.
const modelStats = new ModelStats();
const scheduler = new Scheduler(pool, { maxQueue: config.maxQueue, workers: config.workers, tracer: telemetry.tracer, counters: modelStats });
const nc = await connectNats(config.natsUrl, `infermesh-inference-${replicaId}`, log, natsSecurity).catch(async (err: Error) => {
  log.fatal(err.message);
  await pool.close();
  process.exit(1);
});
const buckets = await openBuckets(nc, config.natsReplicas);
// Its events go on its own subject (infermesh.events.model.<name>.<replica id>), the one its NATS user may publish.
const events = new EventPublisher(nc, replicaId, log, { replicaId });

let announcer: Announcer | null = null;
const manager = new ModelManager(
  buckets.models,
  buckets.replicas,
  buckets.artifacts,
  pool,
  scheduler,
  events,
  log,
  { keepLatest: config.keepLatest, memoryBudgetBytes: config.memoryBudgetMb * 1024 * 1024, workers: config.workers, defaultMaxBatch: config.maxBatch, drainMs: config.drainMs, replicaId },
  () => announcer?.changed(),
);

let accepting = true;
const oipOptions = { defaultTimeoutMs: config.defaultTimeoutMs, nonFinite: config.nonFinite, serverVersion: '0.1.0', ready: () => accepting };
const streams = new Set<{ end(): void }>();
// The Runtime stream's frames carry whole client messages plus their fields: the listener allows
// headroom over the client limit; client-facing ModelInfer (raw path) keeps the limit itself.
const server = createGrpcServer({ maxMessageBytes: linkMessageBytes(config.maxMessageBytes) });
// A request whose inputs do not fit a version here is one of its failures (ModelStatistics).
const countRefused = (model: string, version: number) => {
  const e = manager.lookup(model, version);
  if (e) modelStats.failed(e.spec, 0);
};
// The runtime stream carries frames as bytes; they are decoded in the handler.
const runtimeOptions: RuntimeOptions = { defaultTimeoutMs: config.defaultTimeoutMs, nonFinite: config.nonFinite, accepting: () => accepting, record: () => announcer!.record(), statistics: (model) => modelStats.response(model, (n, v) => manager.lookup(n, v)?.state === VersionState.VERSION_STATE_READY), refused: countRefused, maxMessageBytes: config.maxMessageBytes, peer: servicePeerCheck(tls, config.tlsServiceUri) };
server.addService(
  { ...RuntimeService, infer: { ...RuntimeService.infer, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b } } as unknown as grpc.ServiceDefinition,
  runtimeHandlers(manager, scheduler, runtimeOptions, streams) as unknown as grpc.UntypedServiceImplementation,
);
server.addService(
  oipServiceRawResponse(),
  oipHandlers(manager, scheduler, oipOptions) as unknown as grpc.UntypedServiceImplementation,
);
const health = addHealthAndReflection(server, ['inference/grpc_service.proto', 'infermesh/v1/runtime.proto'], ['inference.GRPCInferenceService', 'infermesh.v1.Runtime']);
const port = await listen(server, config.host, config.port, serverCredentials(tls));
// Direct ModelInfer calls leave grpc-js's per-call machinery for the listener's raw HTTP/2 streams.
const rawInfer = config.http2Infer && serveRawUnary(server, oip.GRPCInferenceServiceService.modelInfer.path, rawModelInfer(manager, scheduler, oipOptions), { maxMessageBytes: config.maxMessageBytes, maxReceiveMs: config.defaultTimeoutMs });
// The routers' Runtime stream too (same wire, same checks), without grpc-js's per-message stream machinery.
const runtimeCtx = runtimeContext(manager, runtimeOptions);
const rawLink = config.http2Link && serveRuntimeLink(server, RuntimeService.infer.path, { maxMessageBytes: linkMessageBytes(config.maxMessageBytes), peer: runtimeOptions.peer, open: (sink) => new RuntimeStream(runtimeCtx, scheduler, runtimeOptions, sink), streams });
// --advertise HOST (no port) announces HOST with the port bound here: what `up --advertise` passes for port 0.
const address = !config.advertise ? `${config.host}:${port}` : /^(\[[^\]]*\]|[^:]+):\d+$/.test(config.advertise) ? config.advertise : `${config.advertise}:${port}`;
announcer = new Announcer(buckets.replicas, { id: replicaId, address, device: device.provider, workers: config.workers, intervalMs: config.heartbeatMs }, () => manager.loaded(), () => ({ ...scheduler.stats, outstanding: scheduler.outstanding() }), log);
await manager.start();
await announcer.put();
health.set('SERVING');
log.info({ grpcPort: port, address, device: device.provider, workers: config.workers, tls: tls ? (tls.ca ? 'mutual' : 'server') : 'off', modelInfer: rawInfer ? 'http2' : 'grpc-js', runtimeLink: rawLink ? 'http2' : 'grpc-js' }, 'listening');
serviceStarted();

let closing: Promise<void> | null = null;
const close = () =>
  (closing ??= (async () => {
    // Hand the models over (others load them while this one still serves), then
    // stop taking new work, let routers see it, finish what is queued, and go.
    await announcer!.startLeaving();
    await manager.handOver(config.handOverMs);
    accepting = false;
    health.set('NOT_SERVING');
    await announcer!.stopAccepting();
    const until = Date.now() + config.shutdownGraceMs;
    while (scheduler.outstanding() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 20));
    for (const s of streams) s.end();
    await shutdownServer(server, 1000);
    manager.close();
    await announcer!.close();
    await pool.close();
    await nc.drain().catch(() => undefined);
    await telemetry.shutdown();
    log.info('stopped');
    process.exit(0);
  })());
process.once('SIGINT', close);
process.once('SIGTERM', close);
