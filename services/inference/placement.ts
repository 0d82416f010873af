import { createHash } from 'node:crypto';

/**
 * Rendezvous (highest-random-weight) hashing: the `k` replicas with the
 * highest hash of (model, replica id) hold the model. Every replica computes
 * the same answer from the same set of live replicas, with no coordinator;
 * when a replica leaves, only the models it held move, each to the next
 * replica in its ranking (ModelMesh-style placement).
 */
export function holders(model: string, replicaIds: Iterable<string>, k: number): Set<string> {
  const ranked = [...replicaIds].map((id) => ({ id, w: weight(model, id) })).sort((a, b) => (a.w < b.w ? 1 : a.w > b.w ? -1 : a.id.localeCompare(b.id)));
  return new Set(ranked.slice(0, k).map((r) => r.id));
}

function weight(model: string, replica: string): bigint {
  return createHash('sha1').update(model).update('\0').update(replica).digest().readBigUInt64BE(0);
}
