import { connect, type NatsConnection, type JetStreamClient, type KV, type ObjectStore, RetentionPolicy, StorageType, type StreamConfig } from 'nats';
import type { Logger } from '../log/index.js';
import { BUCKET_ARTIFACTS, BUCKET_MODELS, BUCKET_REPLICAS, EVENTS_STREAM } from './names.js';

export interface Buckets {
  models: KV;
  replicas: KV;
  artifacts: ObjectStore;
}

/** How long a replica's heartbeat record lives without a refresh. */
export const REPLICA_TTL_MS = 10_000;

/**
 * Connects to NATS for a long-running service: retries the first connect and
 * reconnects forever (nats.js gives up after 10 attempts by default).
 */
export async function connectNats(url: string, name: string, log: Logger): Promise<NatsConnection> {
  const nc = await connect({
    servers: url.split(','),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: true,
    pingInterval: 5_000,
    maxPingOut: 2,
  });
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
export async function openBuckets(nc: NatsConnection, replicas = 1): Promise<Buckets> {
  const js = nc.jetstream();
  const [models, replicaKv, artifacts] = await Promise.all([
    js.views.kv(BUCKET_MODELS, { history: 16, replicas }),
    js.views.kv(BUCKET_REPLICAS, { history: 1, ttl: REPLICA_TTL_MS, replicas }),
    js.views.os(BUCKET_ARTIFACTS, { replicas }),
  ]);
  await ensureEventStream(nc, replicas);
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
