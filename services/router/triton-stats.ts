/**
 * Triton's ModelStatistics across the mesh: at request time the router asks
 * every replica it knows for its counters (Runtime.Statistics, over the
 * channel it already holds to each) and sums them per model version, so the
 * counts are exact: each request is counted once, by the replica that
 * answered it. A replica that holds the model and does not answer makes the
 * call UNAVAILABLE rather than return short counts.
 */
import * as grpc from '@grpc/grpc-js';
import { checkName } from '../../libs/bus/index.js';
import { InvalidArgumentError, NotFoundError, UnavailableError } from '../../libs/errors/index.js';
import { oip, RuntimeService, type StatisticsRequest, type StatisticsResponse, type VersionStatistics } from '../../libs/proto/index.js';
import type { ReplicaConn } from './replica-conn.js';
import { checkSelector } from './request-scan.js';
import type { RoutingTable } from './routing-table.js';

/** Longest a statistics call waits for the replicas. */
const REPLICA_TIMEOUT_MS = 5_000;

/** One replica's Runtime.Statistics, over the router's channel to it (no new connection). */
export function askReplica(conn: ReplicaConn, model: string, deadlineMs: number): Promise<StatisticsResponse> {
  const client = new grpc.Client(conn.address, grpc.credentials.createInsecure(), { channelOverride: conn.channel });
  const m = RuntimeService.statistics;
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest<StatisticsRequest, StatisticsResponse>(m.path, m.requestSerialize, m.responseDeserialize, { model }, new grpc.Metadata(), { deadline: deadlineMs }, (err, res) =>
      err ? reject(err) : resolve(res!),
    );
  });
}

/**
 * Every replica's counters for `model` ('' = all models), keyed
 * `name:version`, summed. Throws UNAVAILABLE when a replica that announces
 * the model does not answer by the deadline.
 */
export async function meshStatistics(table: RoutingTable, model: string, deadlineMs: number): Promise<Map<string, VersionStatistics>> {
  const deadline = Math.min(deadlineMs, Date.now() + REPLICA_TIMEOUT_MS);
  const entries = table.replicaEntries().filter((e) => e.tlsFailure === undefined);
  const answers = await Promise.allSettled(entries.map((e) => askReplica(e.conn, model, deadline)));
  const sums = new Map<string, VersionStatistics>();
  answers.forEach((a, i) => {
    if (a.status === 'rejected') {
      const holds = entries[i]!.rec.versions.some((v) => model === '' || v.name === model);
      if (holds) throw new UnavailableError(`statistics: a replica serving ${model || 'the models'} did not answer (${(a.reason as grpc.ServiceError).details ?? 'error'})`);
      return;
    }
    for (const v of a.value.versions) {
      const s = v.stats;
      if (!s) continue;
      const key = `${s.name}:${s.version}`;
      const sum = sums.get(key);
      if (!sum) sums.set(key, { ...v, stats: cloneStats(s) });
      else {
        addStats(sum.stats!, s);
        sum.loaded ||= v.loaded;
      }
    }
  });
  return sums;
}

function duration(d: oip.StatisticDuration | undefined): oip.StatisticDuration {
  return { count: d?.count ?? 0, ns: d?.ns ?? 0 };
}

function addDuration(to: oip.StatisticDuration | undefined, d: oip.StatisticDuration | undefined): void {
  if (!to || !d) return;
  to.count += d.count;
  to.ns += d.ns;
}

const INFER_FIELDS = ['success', 'fail', 'queue', 'computeInput', 'computeInfer', 'computeOutput', 'cacheHit', 'cacheMiss'] as const;

function emptyInferStats(): oip.InferStatistics {
  return { success: duration(undefined), fail: duration(undefined), queue: duration(undefined), computeInput: duration(undefined), computeInfer: duration(undefined), computeOutput: duration(undefined), cacheHit: duration(undefined), cacheMiss: duration(undefined) };
}

function cloneStats(s: oip.ModelStatistics): oip.ModelStatistics {
  const out: oip.ModelStatistics = { ...s, inferenceStats: emptyInferStats(), batchStats: [], memoryUsage: [], responseStats: {} };
  addStats(out, { ...s, inferenceCount: 0, executionCount: 0 });
  return out;
}

/** Adds `s` into `to`: counts and durations summed, the latest last_inference, batch sizes merged. */
function addStats(to: oip.ModelStatistics, s: oip.ModelStatistics): void {
  to.inferenceCount += s.inferenceCount;
  to.executionCount += s.executionCount;
  to.lastInference = Math.max(to.lastInference, s.lastInference);
  for (const f of INFER_FIELDS) addDuration(to.inferenceStats![f], s.inferenceStats?.[f]);
  for (const b of s.batchStats) {
    let t = to.batchStats.find((x) => x.batchSize === b.batchSize);
    if (!t) to.batchStats.push((t = { batchSize: b.batchSize, computeInput: duration(undefined), computeInfer: duration(undefined), computeOutput: duration(undefined) }));
    addDuration(t.computeInput, b.computeInput);
    addDuration(t.computeInfer, b.computeInfer);
    addDuration(t.computeOutput, b.computeOutput);
  }
  to.batchStats.sort((a, b) => a.batchSize - b.batchSize);
}

/**
 * ModelStatistics: `name` '' = every model; `version` '' = every version a
 * replica holds or has counted, else one version (digits or an alias),
 * answered with zeros when nothing ran yet. Throws INVALID_ARGUMENT (bad
 * name or version), NOT_FOUND (unknown model or version), UNAVAILABLE (a
 * replica did not answer).
 */
export async function modelStatistics(table: RoutingTable, name: string, version: string, deadlineMs: number): Promise<oip.ModelStatisticsResponse> {
  let only: number | null = null;
  if (name !== '') {
    checkName(name, 'name');
    checkSelector(version, 'version');
    if (!table.model(name)) throw new NotFoundError(`model ${name} not found`);
    if (version !== '') {
      const route = table.resolve(name, version);
      const known = /^\d+$/.test(version) ? table.versionsOf(name).find((v) => v.version === Number(version)) : route?.record;
      if (!known) throw new NotFoundError(/^\d+$/.test(version) ? `model ${name} has no version ${version}` : `model ${name} has no alias ${version}`);
      only = known.version;
    }
  } else if (version !== '') throw new InvalidArgumentError('version', 'needs a model name');
  const sums = await meshStatistics(table, name, deadlineMs);
  const out: oip.ModelStatistics[] = [];
  for (const model of name ? [name] : table.modelNames()) {
    for (const rec of [...table.versionsOf(model)].reverse()) {
      if (only !== null && rec.version !== only) continue;
      const s = sums.get(`${model}:${rec.version}`);
      if (s) out.push(s.stats!);
      else if (only !== null) out.push(zeroStats(model, rec.version));
    }
  }
  return { modelStats: out };
}

function zeroStats(name: string, version: number): oip.ModelStatistics {
  return { name, version: String(version), lastInference: 0, inferenceCount: 0, executionCount: 0, inferenceStats: emptyInferStats(), batchStats: [], memoryUsage: [], responseStats: {} };
}
