/** `infermesh drift NAME`: how far each feature and output column of a model's versions drifted from its baseline, from the monitor. */
import { MonitorApi, RegistryApi } from '../../libs/client/index.js';
import { isServiceError, Status } from '../../libs/errors/index.js';
import type { FeatureDrift } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { CliError, printJson, printText, remote } from './output.js';
import { renderTable } from './table.js';

export async function driftCommand(name: string, o: GlobalOptions & { version?: number; bySegment?: boolean }): Promise<void> {
  const api = new MonitorApi(o.monitor);
  try {
    const features = await remote('monitor', o.monitor, () => api.drift(name, o.version ?? 0, o.bySegment === true)).catch(async (err: unknown) => {
      // The monitor has no sampled request of the model: say what exists and what is missing.
      if (isServiceError(err) && err.code === Status.NOT_FOUND) throw new CliError('NOT_FOUND', (await missing(name, o)) ?? err.details);
      throw err;
    });
    if (o.json) {
      printJson({
        name,
        features: features.map((f) => ({ feature: f.feature, version: f.version, psi: f.psi, ks: f.ks, window: f.window, baseline: f.baseline, drifting: f.drifting, ...(o.bySegment ? { segment: f.segment || null } : {}) })),
      });
      return;
    }
    printText(
      features.length
        ? driftTable(features, o.bySegment === true)
        : ((await missing(name, o)) ??
            `no baseline to compare ${name}${o.version ? ` v${o.version}` : ''} with yet: push a version with --reference FILE, or let the previous version collect samples`),
    );
  } finally {
    api.close();
  }
}

/**
 * Why there are no drift rows, when the registry can tell: the versions
 * that have a reference profile but no sampled requests yet (drift compares
 * live samples with the reference; the routers keep --sample-rate of the
 * requests). Null when no version asked about has a reference.
 */
async function missing(name: string, o: GlobalOptions & { version?: number }): Promise<string | null> {
  const registry = new RegistryApi(o.registry);
  try {
    const info = await registry.get(name).catch(() => null);
    if (!info) return null;
    const versions = info.versions.map((v) => v.version).filter((v) => !o.version || v === o.version);
    const refs: string[] = [];
    for (const v of versions) {
      const ref = await registry.getReference(name, v).catch(() => null);
      if (ref && ref.features.length) refs.push(`v${v} (${ref.rows} rows)`);
    }
    if (refs.length === 0) return null;
    return (
      `no sampled requests of ${name} yet; the reference ${refs.length === 1 ? 'profile is' : 'profiles are'} there: ${refs.join(', ')}. ` +
      'Drift compares the reference with the requests the routers sample (their --sample-rate; infermesh up keeps every request by default): ' +
      `send requests to ${name} and look again. A row per feature appears with the first samples, "drifting" once a version has --drift-min-samples (100)`
    );
  } finally {
    registry.close();
  }
}

/** The drift table (feature, version, PSI, KS, window, baseline, drifting), in the monitor's order: drifting and worst first. */
export function driftTable(features: readonly FeatureDrift[], bySegment = false): string {
  const seg = (f: FeatureDrift) => (bySegment ? [f.segment || '*'] : []);
  return renderTable(
    ['FEATURE', ...(bySegment ? ['SEGMENT'] : []), 'VERSION', 'PSI', 'KS', 'WINDOW', 'BASELINE', 'DRIFTING'],
    features.map((f) => [f.feature, ...seg(f), String(f.version), f.psi.toFixed(3), f.ks.toFixed(3), String(f.window), f.baseline, f.drifting ? 'yes' : 'no']),
    ['left', ...(bySegment ? ['left' as const] : []), 'right', 'right', 'right', 'right', 'left', 'left'],
  );
}
