/**
 * Per-model settings the monitor reads from the registry's version records
 * (models bucket, `<model>.v.<version>`): the segment request parameter and
 * the cost model set at push (`models push --segment-by`, `--cost-fp`,
 * `--cost-fn`, `--value-tp`). A model's setting is that of its newest
 * version that has one, so pushing a version with a new cost model changes
 * the model's, and a version pushed without one keeps the model's.
 */
import { parseModelKey } from '../../libs/bus/index.js';
import { VersionRecord, type CostModel } from '../../libs/proto/index.js';
import { hasCost } from './cost.js';

interface Setting {
  segmentBy: string;
  cost: CostModel | undefined;
}

export class ModelSettings {
  private readonly byModel = new Map<string, Map<number, Setting>>();

  /** Follows the models bucket; other keys and undecodable records are ignored. */
  applyModelKey(key: string, value: Uint8Array | null): void {
    const k = parseModelKey(key);
    if (k?.kind !== 'version') return;
    let m = this.byModel.get(k.name);
    if (!value || value.length === 0) {
      m?.delete(k.version);
      return;
    }
    let rec: VersionRecord;
    try {
      rec = VersionRecord.decode(value);
    } catch {
      return;
    }
    if (!m) this.byModel.set(k.name, (m = new Map()));
    m.set(k.version, { segmentBy: rec.segmentBy, cost: hasCost(rec.cost) ? rec.cost : undefined });
  }

  /** The model's segment parameter ('' when none of its versions names one). */
  segmentBy(name: string): string {
    return this.newest(name, (s) => s.segmentBy !== '')?.segmentBy ?? '';
  }

  /** The model's cost model (undefined when none of its versions has one). */
  cost(name: string): CostModel | undefined {
    return this.newest(name, (s) => s.cost !== undefined)?.cost;
  }

  /** Models with a cost model. */
  withCost(): string[] {
    return [...this.byModel.keys()].filter((n) => this.cost(n) !== undefined);
  }

  private newest(name: string, has: (s: Setting) => boolean): Setting | undefined {
    let best: Setting | undefined;
    let at = 0;
    for (const [v, s] of this.byModel.get(name) ?? []) if (v > at && has(s)) [best, at] = [s, v];
    return best;
  }
}
