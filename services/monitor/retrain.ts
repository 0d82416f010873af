/**
 * The retraining loop's trigger: when a drift alert (drift_psi, drift_ks) or
 * an evaluation alert (eval_<metric>) fires, the monitor publishes a
 * RetrainRequest on `infermesh.retrain.<model>` (JetStream stream
 * INFERMESH_RETRAIN, so a retraining job that was down still finds it) with
 * the alert's reason and the command that exports the joined rows. Only a
 * change to FIRING publishes: a restarted monitor restores its alerts
 * without firing them again, and the message id (alert id and firing time)
 * keeps a retried publish from being stored twice.
 */
import { nanos, type NatsConnection } from 'nats';
import { ensureStream, RETRAIN_STREAM, subjects } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { Alert_State, RetrainRequest, type Alert } from '../../libs/proto/index.js';

/** Whether an alert's rule asks for retraining. */
export function retrainsOn(rule: string): boolean {
  return rule.startsWith('drift_') || rule.startsWith('eval_');
}

/** The CLI command that exports a model's joined rows for retraining. */
export function exportCommand(name: string): string {
  return `infermesh outcomes export ${name} --format csv`;
}

export class RetrainPublisher {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
  ) {}

  /** Ensures the stream (file storage, limits retention, max_age `retentionMs`). */
  static async create(nc: NatsConnection, o: { retentionMs: number; replicas?: number }, log: Logger): Promise<RetrainPublisher> {
    await ensureStream(nc, { name: RETRAIN_STREAM, subjects: ['infermesh.retrain.>'], max_age: nanos(o.retentionMs), num_replicas: o.replicas ?? 1 });
    return new RetrainPublisher(nc, log);
  }

  /** An alert changed state (an AlertEngine watcher): publishes a request when a drift or evaluation alert fires. */
  onAlert(a: Alert): void {
    if (a.state !== Alert_State.FIRING || !retrainsOn(a.rule)) return;
    const req: RetrainRequest = {
      name: a.name, version: a.version, alertId: a.id, rule: a.rule, reason: a.message, exportCommand: exportCommand(a.name), atMs: a.atMs, sinceMs: 0,
    };
    this.nc
      .jetstream()
      .publish(subjects.retrain(a.name), RetrainRequest.encode(req).finish(), { msgID: `${a.id}:${a.sinceMs}`, expect: { streamName: RETRAIN_STREAM } })
      .then(() => this.log.info({ model: a.name, alert: a.id }, `retraining requested: ${a.message}`))
      .catch((err: unknown) => this.log.warn({ err: String(err), alert: a.id }, 'retraining request not stored in NATS'));
  }
}
