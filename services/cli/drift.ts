/** `infermesh drift NAME`: how far each feature and output column of a model's versions drifted from its baseline, from the monitor. */
import { MonitorApi } from '../../libs/client/index.js';
import type { FeatureDrift } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { printJson, printText, remote } from './output.js';
import { renderTable } from './table.js';

export async function driftCommand(name: string, o: GlobalOptions & { version?: number }): Promise<void> {
  const api = new MonitorApi(o.monitor);
  try {
    const features = await remote('monitor', o.monitor, () => api.drift(name, o.version ?? 0));
    if (o.json) {
      printJson({
        name,
        features: features.map((f) => ({ feature: f.feature, version: f.version, psi: f.psi, ks: f.ks, window: f.window, baseline: f.baseline, drifting: f.drifting })),
      });
      return;
    }
    printText(
      features.length
        ? driftTable(features)
        : `no baseline to compare ${name}${o.version ? ` v${o.version}` : ''} with yet: push a version with --reference FILE, or let the previous version collect samples`,
    );
  } finally {
    api.close();
  }
}

/** The drift table (feature, version, PSI, KS, window, baseline, drifting), in the monitor's order: drifting and worst first. */
export function driftTable(features: readonly FeatureDrift[]): string {
  return renderTable(
    ['FEATURE', 'VERSION', 'PSI', 'KS', 'WINDOW', 'BASELINE', 'DRIFTING'],
    features.map((f) => [f.feature, String(f.version), f.psi.toFixed(3), f.ks.toFixed(3), String(f.window), f.baseline, f.drifting ? 'yes' : 'no']),
    ['left', 'right', 'right', 'right', 'right', 'left', 'left'],
  );
}
