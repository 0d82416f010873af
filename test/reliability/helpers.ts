/**
 * Shared pieces of the reliability suite: replica records read from KV,
 * steady load through the router, status capture and liveness checks.
 */
import * as grpc from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import type { InferenceApi, InputTensor } from '../../libs/client/index.js';
import { BUCKET_REPLICAS, KvMirror } from '../../libs/bus/index.js';
import { createLogger } from '../../libs/log/index.js';
import { ReplicaRecord } from '../../libs/proto/index.js';
import type { ServiceProc } from '../harness/mesh.js';

/** The terminal outcome of one call: a gRPC status code (0 = OK), its details and how long it took. */
export interface Outcome {
  code: number;
  details: string;
  ms: number;
}

/** Runs `p` and resolves with its status instead of throwing. */
export async function outcome(p: Promise<unknown>): Promise<Outcome> {
  const t0 = performance.now();
  try {
    await p;
    return { code: grpc.status.OK, details: '', ms: performance.now() - t0 };
  } catch (e) {
    const se = e as grpc.ServiceError;
    return { code: se.code ?? -1, details: se.details ?? String(e), ms: performance.now() - t0 };
  }
}

/** `status: details` of the failed outcomes, for readable assertion diffs. */
export const failures = (xs: Outcome[]) => xs.filter((x) => x.code !== grpc.status.OK).map((x) => `${grpc.status[x.code] ?? x.code}: ${x.details}`);

/** Whether the service's process is still running (neither exited nor killed). */
export const alive = (s: ServiceProc) => s.proc.exitCode === null && s.proc.signalCode === null;

// One way to wait, shared by every suite (test/harness/wait.ts).
export { sleep, eventually, until } from '../harness/wait.js';

/** Reads the replicas KV bucket (through a watcher, as kv.keys() can miss keys while heartbeats churn). */
export class ReplicaRecords {
  private constructor(private readonly nc: NatsConnection) {}

  static async connect(natsUrl: string): Promise<ReplicaRecords> {
    return new ReplicaRecords(await connect({ servers: natsUrl }));
  }

  async all(): Promise<ReplicaRecord[]> {
    const kv = await this.nc.jetstream().views.kv(BUCKET_REPLICAS);
    const m = await KvMirror.start(kv, { log: createLogger('test', 'silent'), onChange: () => {} });
    const out = [...m.entries()].map(([, v]) => ReplicaRecord.decode(v));
    m.close();
    return out;
  }

  /** The record of the replica that a harness process runs (matched on its advertised address). */
  async of(replica: ServiceProc): Promise<ReplicaRecord | undefined> {
    return (await this.all()).find((r) => r.address === String(replica.info.address));
  }

  async close(): Promise<void> {
    await this.nc.close();
  }
}

/** Concurrent callers scoring through `api` in a loop until stopped; every call's outcome is kept. */
export function steadyLoad(api: InferenceApi, model: string, input: InputTensor[], callers = 6, timeoutMs = 5_000) {
  const answers: (Outcome & { at: number })[] = [];
  let stop = false;
  const loop = async () => {
    while (!stop) {
      const o = await outcome(api.infer(model, input, { timeoutMs }));
      answers.push({ ...o, at: Date.now() });
    }
  };
  const loops = Array.from({ length: callers }, loop);
  return {
    answers,
    async stop() {
      stop = true;
      await Promise.all(loops);
      return answers;
    },
  };
}
