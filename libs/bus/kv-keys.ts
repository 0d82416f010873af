import type { JetStreamManager } from 'nats';

/**
 * The keys of KV bucket `bucket` matching `filter` (NATS wildcards) that have
 * a message: a value, or a delete/purge marker (a get tells them apart). Read
 * from the stream's per-subject counts (STREAM.INFO, answered by the stream's
 * leader). Unlike the KV's keys(), it creates no consumer, so on a NATS
 * cluster it needs no JetStream meta leader and has no delivery that can
 * stall through a leader change: one request, answered or retried.
 */
export async function kvKeysWithMessages(jsm: JetStreamManager, bucket: string, filter = '>'): Promise<string[]> {
  const prefix = `$KV.${bucket}.`;
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: prefix + filter });
  return Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length));
}
