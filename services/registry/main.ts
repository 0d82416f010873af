/** The registry: models, versions, artifacts and aliases (gRPC on 8600). */
import { bool, commonSpec, int, loadServiceConfig, serviceStarted, str } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { startTelemetry } from '../../libs/telemetry/index.js';
import { ATTEMPT_TIMEOUT_MS, connectNats, natsSecurityOf, openBuckets, EventPublisher } from '../../libs/bus/index.js';
import { AccessPolicy, addHealthAndReflection, createGrpcServer, listen, serverCredentials, serverTlsOf, shutdownServer } from '../../libs/grpc/index.js';
import { RegistryService } from '../../libs/proto/index.js';
import { ModelStore } from './model-store.js';
import { registryHandlers } from './registry-service.js';
import { DEFAULT_DOMAINS } from './validate.js';
import { ReplicaView } from './replica-view.js';

const config = loadServiceConfig(
  'registry',
  {
    ...commonSpec,
    port: int({ env: 'INFERMESH_REGISTRY_PORT', flag: 'port', default: 8600, min: 0, max: 65535 }),
    maxModelBytes: int({ env: 'INFERMESH_MAX_MODEL_BYTES', flag: 'max-model-bytes', default: 256 * 1024 * 1024, min: 1, max: 2 ** 31 - 1 }),
    maxReferenceBytes: int({ env: 'INFERMESH_MAX_REFERENCE_BYTES', flag: 'max-reference-bytes', default: 64 * 1024 * 1024, min: 1, max: 2 ** 31 - 1 }),
    validateTimeoutMs: int({ env: 'INFERMESH_VALIDATE_TIMEOUT_MS', flag: 'validate-timeout-ms', default: 60_000, min: 100 }),
    allowedDomains: str({ env: 'INFERMESH_ALLOWED_OP_DOMAINS', flag: 'allowed-op-domains', default: DEFAULT_DOMAINS.join(',') }),
    /** Hashed bearer tokens with roles for writes (libs/grpc/access.ts); '' = open. */
    tokensFile: str({ env: 'INFERMESH_TOKENS_FILE', flag: 'tokens-file', default: '' }),
    /** Without it, a non-loopback --host needs --tokens-file (AccessPolicy.forListener). */
    insecureManagement: bool({ env: 'INFERMESH_INSECURE_MANAGEMENT', flag: 'insecure-management', default: false }),
  },
  process.argv.slice(2),
  process.env,
);

const log = createLogger('registry', config.logLevel);
const tls = serverTlsOf(config);
const access = AccessPolicy.forListener({ tokensFile: config.tokensFile, host: config.host, insecure: config.insecureManagement, warn: (m) => log.warn(m) });
const natsSecurity = natsSecurityOf(config);
const telemetry = await startTelemetry('infermesh-registry', process.env);
const nc = await connectNats(config.natsUrl, 'infermesh-registry', log, natsSecurity).catch((err: Error) => {
  log.fatal(err.message);
  process.exit(1);
});
const buckets = await openBuckets(nc, config.natsReplicas, { timeoutMs: ATTEMPT_TIMEOUT_MS, leaderReads: true });
const store = new ModelStore(buckets.models, buckets.artifacts, await nc.jetstreamManager({ timeout: ATTEMPT_TIMEOUT_MS, checkAPI: false }));
const events = new EventPublisher(nc, 'registry', log);
const replicas = await ReplicaView.start(buckets.replicas, log);

// Models travel in chunks, so the per-message limit stays small.
const server = createGrpcServer({ maxMessageBytes: config.maxMessageBytes });
server.addService(
  RegistryService,
  registryHandlers({ store, events, replicas, nc }, {
    maxModelBytes: config.maxModelBytes,
    maxReferenceBytes: config.maxReferenceBytes,
    allowedDomains: config.allowedDomains.split(',').map((d) => d.trim()),
    timeoutMs: config.validateTimeoutMs,
    actor: 'registry',
    access,
  }),
);
const health = addHealthAndReflection(server, ['infermesh/v1/registry.proto'], ['infermesh.v1.Registry']);
const port = await listen(server, config.host, config.port, serverCredentials(tls));
health.set('SERVING');
log.info({ grpcPort: port, tls: tls ? (tls.ca ? 'mutual' : 'server') : 'off', tokens: access.size }, 'listening');
serviceStarted();

let closing: Promise<void> | null = null;
const close = () =>
  (closing ??= (async () => {
    health.set('NOT_SERVING');
    await shutdownServer(server, config.shutdownGraceMs);
    replicas.close();
    await nc.drain().catch(() => undefined);
    await telemetry.shutdown();
    process.exit(0);
  })());
process.once('SIGINT', close);
process.once('SIGTERM', close);
