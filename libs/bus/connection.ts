import { readFileSync } from 'node:fs';
import {
  connect,
  credsAuthenticator,
  ErrorCode,
  NatsError,
  type ConnectionOptions,
  type NatsConnection,
  type JetStreamClient,
  type KV,
  type ObjectStore,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from 'nats';
import { ConfigError } from '../config/index.js';
import type { Logger } from '../log/index.js';
import { BUCKET_ARTIFACTS, BUCKET_MODELS, BUCKET_REPLICAS, EVENTS_STREAM } from './names.js';
import { retryTransient } from './retry.js';

export interface Buckets {
  models: KV;
  replicas: KV;
  artifacts: ObjectStore;
}

/** How long a replica's heartbeat record lives without a refresh. */
export const REPLICA_TTL_MS = 10_000;

/** How a service authenticates to NATS and secures the connection; built by {@link natsSecurityOf}. */
export interface NatsSecurity {
  /** TLS: PEM files (read by nats.js on each connect); an empty object means TLS with the system roots. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** Contents of a .creds file (user JWT and NKey seed). */
  creds?: Uint8Array;
  user?: string;
  password?: string;
  token?: string;
  /** Prefix of this connection's inboxes (replies, JetStream deliveries); unset = `_INBOX`. */
  inboxPrefix?: string;
}

/** The NATS fields of commonSpec (libs/config). */
export interface NatsSecurityConfig {
  natsTlsCa: string;
  natsTlsCert: string;
  natsTlsKey: string;
  natsCreds: string;
  natsUser: string;
  natsPassword: string;
  natsToken: string;
  /** '' = the default `_INBOX`. */
  natsInboxPrefix?: string;
}

function readable(path: string, name: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${name}=${JSON.stringify(path)}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/**
 * Checks the NATS security settings and reads the files they name, so a bad
 * one stops start-up naming its flag. Throws ConfigError when a client
 * certificate lacks its key (or the other way round), a user lacks a
 * password, more than one kind of credential is given, or a file cannot be read.
 */
export function natsSecurityOf(c: NatsSecurityConfig): NatsSecurity {
  const out: NatsSecurity = {};
  if (Boolean(c.natsTlsCert) !== Boolean(c.natsTlsKey)) {
    throw new ConfigError(c.natsTlsCert ? '--nats-tls-key (INFERMESH_NATS_TLS_KEY): required with --nats-tls-cert' : '--nats-tls-cert (INFERMESH_NATS_TLS_CERT): required with --nats-tls-key');
  }
  if (c.natsTlsCa || c.natsTlsCert) {
    // Read once here so a missing file stops start-up naming its flag; nats.js reads them again on each connect.
    if (c.natsTlsCa) readable(c.natsTlsCa, '--nats-tls-ca');
    if (c.natsTlsCert) {
      readable(c.natsTlsCert, '--nats-tls-cert');
      readable(c.natsTlsKey, '--nats-tls-key');
    }
    out.tls = {
      ...(c.natsTlsCa ? { caFile: c.natsTlsCa } : {}),
      ...(c.natsTlsCert ? { certFile: c.natsTlsCert, keyFile: c.natsTlsKey } : {}),
    };
  }
  const kinds = [c.natsCreds && '--nats-creds', (c.natsUser || c.natsPassword) && '--nats-user/--nats-password', c.natsToken && '--nats-token'].filter(Boolean);
  if (kinds.length > 1) throw new ConfigError(`${kinds.join(' and ')}: give one kind of NATS credential`);
  if (c.natsPassword && !c.natsUser) throw new ConfigError('--nats-user (INFERMESH_NATS_USER): required with --nats-password');
  if (c.natsUser && !c.natsPassword) throw new ConfigError('--nats-password (INFERMESH_NATS_PASSWORD): required with --nats-user');
  if (c.natsCreds) out.creds = readable(c.natsCreds, '--nats-creds');
  if (c.natsUser) {
    out.user = c.natsUser;
    out.password = c.natsPassword;
  }
  if (c.natsToken) out.token = c.natsToken;
  if (c.natsInboxPrefix) out.inboxPrefix = c.natsInboxPrefix;
  return out;
}

/** The first connect failed for a reason retrying cannot fix (credentials, TLS). */
export class NatsStartError extends Error {
  override name = 'NatsStartError';
}

/** Why a first-connect error is permanent, or null when it is worth retrying (server not up yet). */
function permanent(err: unknown, url: string): string | null {
  const code = err instanceof NatsError ? err.code : '';
  const servers = url.split(',').join(', ');
  if (code === ErrorCode.AuthorizationViolation || code === ErrorCode.AuthenticationExpired || code === ErrorCode.AccountExpired || code === ErrorCode.BadCreds || code === ErrorCode.BadAuthentication) {
    return `NATS at ${servers} refused this service's credentials (${code.toLowerCase().replace(/_/g, ' ')}): check --nats-user/--nats-password, --nats-token or --nats-creds`;
  }
  const text = err instanceof Error ? err.message : String(err);
  if (code === ErrorCode.Tls || /certificate|self[- ]signed|TLS|SSL|handshake|altnames/i.test(text)) {
    return `NATS at ${servers}: TLS failed (${text.split('\n')[0]!.slice(0, 200)}): check --nats-tls-ca, --nats-tls-cert and --nats-tls-key`;
  }
  return null;
}

/**
 * Connects to NATS for a long-running service: retries the first connect
 * while the server is unreachable, then reconnects forever (nats.js gives up
 * after 10 attempts by default). Throws NatsStartError at once, with a message
 * naming the problem, when the server refuses the credentials or TLS fails:
 * retrying would only hang start-up.
 */
export async function connectNats(url: string, name: string, log: Logger, security: NatsSecurity = {}): Promise<NatsConnection> {
  const opts: ConnectionOptions = {
    servers: url.split(','),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 5_000,
    maxPingOut: 2,
  };
  if (security.tls) opts.tls = { ...security.tls };
  if (security.creds) opts.authenticator = credsAuthenticator(security.creds);
  if (security.user !== undefined) {
    opts.user = security.user;
    opts.pass = security.password;
  }
  if (security.token) opts.token = security.token;
  if (security.inboxPrefix) opts.inboxPrefix = security.inboxPrefix;
  let nc: NatsConnection;
  for (let attempt = 0; ; attempt++) {
    try {
      nc = await connect(opts);
      break;
    } catch (err) {
      const why = permanent(err, url);
      if (why) throw new NatsStartError(why, { cause: err });
      // Not up yet (or unreachable): wait for it, as a service started before NATS must.
      if (attempt % 40 === 0) log.warn({ nats: url, err: err instanceof Error ? err.message : String(err) }, 'waiting for NATS');
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') log.warn({ nats: s.type }, `nats ${s.type}`);
    }
  })();
  return nc;
}

/**
 * Opens (creating when missing) the mesh's KV buckets, Object Store and event
 * stream. `replicas` is the JetStream replication factor used when creating
 * them (3 on a 3-node NATS cluster; existing buckets keep theirs).
 */
export async function openBuckets(nc: NatsConnection, replicas = 1, o: { timeoutMs?: number; leaderReads?: boolean } = {}): Promise<Buckets> {
  // timeoutMs: how long one JetStream request through these handles waits (nats.js default 5 s);
  // the registry uses a short one and retries (retry.ts), so a request lost to a dying leader is sent again soon.
  const js = nc.jetstream(o.timeoutMs ? { timeout: o.timeoutMs } : {});
  // Opened while a cluster elects a leader (a service started beside a restarting node): retried.
  const deadline = Date.now() + 30_000;
  const [models, replicaKv, artifacts] = await Promise.all([
    retryTransient(() => js.views.kv(BUCKET_MODELS, { history: 16, replicas }), { deadline }),
    retryTransient(() => js.views.kv(BUCKET_REPLICAS, { history: 1, ttl: REPLICA_TTL_MS, replicas }), { deadline }),
    retryTransient(() => js.views.os(BUCKET_ARTIFACTS, { replicas }), { deadline }),
  ]);
  await retryTransient(() => ensureEventStream(nc, replicas), { deadline });
  // leaderReads: the models bucket read through its stream's leader (STREAM.MSG.GET), never a
  // follower's direct get, which can answer stale or "no such key" while it catches up (the
  // registry's compare-and-set reads and its re-reads of a write's fate need the latest record).
  if (o.leaderReads) return { models: await js.views.kv(BUCKET_MODELS, { bindOnly: true, allow_direct: false }), replicas: replicaKv, artifacts };
  return { models, replicas: replicaKv, artifacts };
}

/** The JetStream stream that keeps lifecycle events, so none is lost while a consumer is away. */
export function ensureEventStream(nc: NatsConnection, replicas = 1): Promise<void> {
  return ensureStream(nc, {
    name: EVENTS_STREAM,
    subjects: ['infermesh.events.>'],
    max_age: 7 * 24 * 3600 * 1e9,
    max_msgs_per_subject: 10_000,
    num_replicas: replicas,
  });
}

/**
 * Creates a file-backed, limits-retention JetStream stream unless one of that
 * name exists (an existing stream keeps its settings). Safe when several
 * services race to create it.
 */
export async function ensureStream(nc: NatsConnection, cfg: Partial<StreamConfig> & { name: string; subjects: string[] }): Promise<void> {
  const jsm = await nc.jetstreamManager();
  try {
    await jsm.streams.info(cfg.name);
  } catch {
    try {
      await jsm.streams.add({ retention: RetentionPolicy.Limits, storage: StorageType.File, ...cfg });
    } catch (err) {
      // Another service created it at the same moment.
      await jsm.streams.info(cfg.name).catch(() => {
        throw err;
      });
    }
  }
}

export function jetstream(nc: NatsConnection): JetStreamClient {
  return nc.jetstream();
}
