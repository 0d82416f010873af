import { InvalidArgumentError } from '../errors/index.js';

/**
 * Model names and aliases: one NATS subject token and one KV key token,
 * never a path (no dots, slashes, wildcards or spaces).
 */
export const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** Returns `value` when it is a valid model name or alias; throws INVALID_ARGUMENT naming `field`. */
export function checkName(value: string, field: string): string {
  if (!NAME_RE.test(value)) {
    throw new InvalidArgumentError(field, value === '' ? 'must not be empty' : 'must match [a-z0-9][a-z0-9_-]{0,62}');
  }
  return value;
}

export const BUCKET_MODELS = 'infermesh-models';
export const BUCKET_REPLICAS = 'infermesh-replicas';
export const BUCKET_ARTIFACTS = 'infermesh-artifacts';
export const EVENTS_STREAM = 'INFERMESH_EVENTS';
/** Keeps the routers' sample batches (bounded) so a restarted monitor can rejoin outcomes to them. */
export const SAMPLES_STREAM = 'INFERMESH_SAMPLES';
/** Keeps recorded ground-truth outcomes. */
export const OUTCOMES_STREAM = 'INFERMESH_OUTCOMES';
/** Keeps alert state changes. */
export const ALERTS_STREAM = 'INFERMESH_ALERTS';
/** Keeps retraining requests (the monitor's, when a drift or evaluation alert fires). */
export const RETRAIN_STREAM = 'INFERMESH_RETRAIN';

export const subjects = {
  /** The registry's lifecycle events of a model (registered, promoted, rolled back, canaried, shadowed, probes). */
  events: (name: string) => `infermesh.events.model.${name}`,
  /** One replica's lifecycle events of a model (loading … unloaded, failed): NATS permissions pin `<id>` to that replica. */
  replicaEvents: (name: string, replicaId: string) => `infermesh.events.model.${name}.${replicaId}`,
  /** Every replica's events of a model. */
  replicasEvents: (name: string) => `infermesh.events.model.${name}.*`,
  /** Both of every model (see event-subjects.ts for who may publish which kind where). */
  allEvents: 'infermesh.events.model.>',
  samples: (name: string) => `infermesh.samples.${name}`,
  allSamples: 'infermesh.samples.*',
  alerts: (name: string) => `infermesh.alerts.${name}`,
  outcomes: (name: string) => `infermesh.outcomes.${name}`,
  retrain: (name: string) => `infermesh.retrain.${name}`,
} as const;

/** Keys of the models bucket: `<model>.v.<version>`, `<model>.traffic`, `<model>.ref.<version>`, `<model>.probe`, `<model>.gone.<version>`. */
export const keys = {
  version: (name: string, version: number) => `${name}.v.${version}`,
  versions: (name: string) => `${name}.v.*`,
  traffic: (name: string) => `${name}.traffic`,
  reference: (name: string, version: number) => `${name}.ref.${version}`,
  probe: (name: string) => `${name}.probe`,
  /** A deleted version's record, kept so its number is never given again (ignored by replicas and routers). */
  deleted: (name: string, version: number) => `${name}.gone.${version}`,
  deletedAll: (name: string) => `${name}.gone.*`,
} as const;

export type ModelKey =
  | { kind: 'version'; name: string; version: number }
  | { kind: 'traffic'; name: string }
  | { kind: 'reference'; name: string; version: number }
  | { kind: 'probe'; name: string };

/** Parses a models-bucket key; null for keys this version does not know. */
export function parseModelKey(key: string): ModelKey | null {
  const parts = key.split('.');
  if (parts.length === 3 && parts[1] === 'v' && /^\d+$/.test(parts[2]!)) {
    return { kind: 'version', name: parts[0]!, version: Number(parts[2]) };
  }
  if (parts.length === 2 && parts[1] === 'traffic') return { kind: 'traffic', name: parts[0]! };
  if (parts.length === 3 && parts[1] === 'ref' && /^\d+$/.test(parts[2]!)) {
    return { kind: 'reference', name: parts[0]!, version: Number(parts[2]) };
  }
  if (parts.length === 2 && parts[1] === 'probe') return { kind: 'probe', name: parts[0]! };
  return null;
}
