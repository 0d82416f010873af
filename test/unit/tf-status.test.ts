/**
 * TF Serving's `GET /v1/models/<m>` states as the router reports them: a
 * version ready on a replica is AVAILABLE, one on its way LOADING, and one
 * that will not serve until someone acts END (the model unloaded through
 * Triton's repository API, or the version archived) — not LOADING, which
 * would tell a TF Serving client to keep waiting.
 */
import { describe, expect, it } from 'vitest';
import { VersionRecord } from '../../libs/proto/index.js';
import { tfStatus } from '../../services/router/rest-tfserving.js';
import type { RoutingTable } from '../../services/router/routing-table.js';

const v = (version: number, archived = false) => VersionRecord.fromPartial({ name: 'm', version, archived });

/** What tfStatus reads of the routing table: the versions, which have replicas, the unloaded flag. */
function table(records: VersionRecord[], readyVersions: number[], unloaded: boolean): RoutingTable {
  return {
    versionsOf: () => records,
    model: () => ({ unloaded, byVersion: new Map(records.map((r) => [r.version, { replicas: readyVersions.includes(r.version) ? [{}] : [] }])) }),
    resolve: (_: string, selector: string) => {
      const record = records.find((r) => String(r.version) === selector);
      return record ? { record, replicas: [] } : undefined;
    },
  } as unknown as RoutingTable;
}

const states = (t: RoutingTable, selector = '') =>
  (tfStatus(t, { name: 'm', selector } as Parameters<typeof tfStatus>[1]) as { model_version_status: { version: string; state: string }[] }).model_version_status.map((s) => `${s.version}:${s.state}`);

describe("TF Serving's model status", () => {
  it('ready is AVAILABLE, on its way LOADING, archived END', () => {
    expect(states(table([v(3), v(2), v(1, true)], [2], false))).toEqual(['3:LOADING', '2:AVAILABLE', '1:END']);
  });

  it('an unloaded model (RepositoryModelUnload) is END for every version, though replicas keep it warm', () => {
    const t = table([v(2), v(1)], [1, 2], true);
    expect(states(t)).toEqual(['2:END', '1:END']);
    expect(states(t, '1')).toEqual(['1:END']);
  });
});
