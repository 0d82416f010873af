/** NATS: connection, buckets, subjects and keys, typed events, KV mirrors. */
export { connectNats, natsSecurityOf, NatsStartError, openBuckets, ensureEventStream, ensureStream, REPLICA_TTL_MS, type Buckets, type NatsSecurity, type NatsSecurityConfig } from './connection.js';
export { EventPublisher, type EventPublisherOptions } from './events.js';
export { eventSubjectProblem, isReplicaKind } from './event-subjects.js';
export { KvMirror, type KvMirrorOptions } from './kv-mirror.js';
export {
  NAME_RE,
  checkName,
  subjects,
  keys,
  parseModelKey,
  BUCKET_MODELS,
  BUCKET_REPLICAS,
  BUCKET_ARTIFACTS,
  EVENTS_STREAM,
  SAMPLES_STREAM,
  OUTCOMES_STREAM,
  ALERTS_STREAM,
  RETRAIN_STREAM,
  type ModelKey,
} from './names.js';
export { isTransient, retryTransient, withDeadline, currentDeadline, publishAcked, contentMsgId, ATTEMPT_TIMEOUT_MS, DEFAULT_BUDGET_MS, type RetryOptions } from './retry.js';
