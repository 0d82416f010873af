import type { KV } from 'nats';
import { KvMirror } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { ReplicaRecord, VersionState } from '../../libs/proto/index.js';

/**
 * What the replicas report (from their heartbeats), so that the registry can
 * refuse to send traffic to a version that failed to load or warm up.
 */
export class ReplicaView {
  private readonly records = new Map<string, ReplicaRecord>();
  private constructor(private mirror: KvMirror | null = null) {}

  static async start(kv: KV, log: Logger): Promise<ReplicaView> {
    const v = new ReplicaView();
    v.mirror = await KvMirror.start(kv, {
      log,
      reconcileMs: 15_000,
      onChange: (key, value) => {
        if (!value) v.records.delete(key);
        else {
          try {
            v.records.set(key, ReplicaRecord.decode(value));
          } catch {
            v.records.delete(key);
          }
        }
      },
    });
    return v;
  }

  /** The reason a version failed on some replica, or null when none reports it failed. */
  failure(name: string, version: number): string | null {
    for (const r of this.records.values()) {
      for (const v of r.versions) {
        if (v.name === name && v.version === version && v.state === VersionState.VERSION_STATE_FAILED) return `replica ${r.id}: ${v.reason}`;
      }
    }
    return null;
  }

  close(): void {
    this.mirror?.close();
  }
}
