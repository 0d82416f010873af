import { describe, expect, it } from 'vitest';
import { keys } from '../../libs/bus/index.js';
import { ConfigError } from '../../libs/config/index.js';
import { mulberry32 } from '../../libs/onnx-builder/index.js';
import { PredictionSample, ReferenceProfile, SampleBatch, VersionRecord, type FeatureDrift } from '../../libs/proto/index.js';
import { profileFeature } from '../../libs/stats/index.js';
import { DriftTracker, type DriftSettings } from '../../services/monitor/drift.js';

const settings: DriftSettings = { window: 1000, minSamples: 100, psiThreshold: 0.2, ksThreshold: 0.2 };
const FEATURES = ['f0', 'f1', 'f2', 'f3'];

/** `n` rows of 4 features ~ N(0,1) (feature 2 shifted by `shift`), with output = sigmoid(sum). */
function rows(n: number, seed: number, shift = 0): { inputs: number[]; outputs: number[] }[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const inputs = FEATURES.map((_, j) => Math.fround(rng.normal() + (j === 2 ? shift : 0)));
    const outputs = [Math.fround(1 / (1 + Math.exp(-inputs.reduce((a, b) => a + b, 0))))];
    return { inputs, outputs };
  });
}

function batch(name: string, version: number, data: { inputs: number[]; outputs: number[] }[], code = 0): SampleBatch {
  // fromPartial: fields added to the messages later default to empty here.
  const samples = data.map((d) =>
    PredictionSample.fromPartial({ version, latencyMicros: 100, code, inputSummary: d.inputs, outputSummary: d.outputs }),
  );
  return SampleBatch.fromPartial({ routerId: 'r', name, samples });
}

function reference(name: string, version: number, n = 20_000): Uint8Array {
  const data = rows(n, 99);
  const profile = ReferenceProfile.fromPartial({
    name, version, rows: n, createdAtMs: 1,
    features: FEATURES.map((f, j) => profileFeature(f, data.map((d) => d.inputs[j]!))),
    outputs: [profileFeature('score[0]', data.map((d) => d.outputs[0]!))],
  });
  return ReferenceProfile.encode(profile).finish();
}

function versionRecord(name: string, version: number): Uint8Array {
  return VersionRecord.encode(
    VersionRecord.fromPartial({ name, version, inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }], outputs: [{ name: 'p', datatype: 'FP32', shape: [-1, 1] }] }),
  ).finish();
}

const byFeature = (rs: FeatureDrift[]) => new Map(rs.map((r) => [`${r.version}/${r.feature}`, r]));

describe('DriftTracker', () => {
  it('against a reference profile: the shifted feature drifts, the others stay put, the output shows too', () => {
    const t = new DriftTracker(settings);
    t.applyModelKey(keys.reference('fraud', 1), reference('fraud', 1));
    t.add(batch('fraud', 1, rows(600, 1, 1.5)));
    const report = t.report('fraud');
    expect(report.map((r) => r.feature).sort()).toEqual(['f0', 'f1', 'f2', 'f3', 'output:score[0]']);
    expect(report[0]).toMatchObject({ name: 'fraud', version: 1, feature: 'f2', window: 600, baseline: 'reference', drifting: true });
    expect(report[0]!.psi).toBeGreaterThan(1);
    expect(report[0]!.ks).toBeGreaterThan(0.45);
    for (const f of ['f0', 'f1', 'f3']) {
      const r = byFeature(report).get(`1/${f}`)!;
      expect(r.psi).toBeLessThan(0.1);
      expect(r.ks).toBeLessThan(0.1);
      expect(r.drifting).toBe(false);
    }
    // The output moved with the shifted input.
    expect(byFeature(report).get('1/output:score[0]')!.psi).toBeGreaterThan(0.2);
  });

  it('reports nothing drifting below min samples, and forgets samples that left the window', () => {
    const t = new DriftTracker({ ...settings, window: 200, minSamples: 100 });
    t.applyModelKey(keys.reference('m', 1), reference('m', 1));
    t.add(batch('m', 1, rows(60, 1, 3)));
    const early = byFeature(t.report('m')).get('1/f2')!;
    expect(early.psi).toBeGreaterThan(1);
    expect(early.window).toBe(60);
    expect(early.drifting).toBe(false);
    t.add(batch('m', 1, rows(60, 2, 3)));
    expect(byFeature(t.report('m')).get('1/f2')!.drifting).toBe(true);
    // 200 unshifted samples push every shifted one out of the 200-sample window.
    t.add(batch('m', 1, rows(200, 3)));
    const late = byFeature(t.report('m')).get('1/f2')!;
    expect(late.window).toBe(200);
    expect(late.drifting).toBe(false);
    expect(late.psi).toBeLessThan(0.2);
  });

  it('without a reference: compares with the previous version window once it has min samples', () => {
    const t = new DriftTracker(settings);
    t.applyModelKey(keys.version('m', 2), versionRecord('m', 2));
    t.add(batch('m', 1, rows(50, 1)));
    t.add(batch('m', 2, rows(300, 2, 1.5)));
    // v1 has too few samples to be a baseline, and v1 itself has none.
    expect(t.report('m')).toEqual([]);
    t.add(batch('m', 1, rows(500, 3)));
    const report = t.report('m');
    expect(new Set(report.map((r) => r.version))).toEqual(new Set([2]));
    expect(report[0]).toMatchObject({ version: 2, feature: 'x[2]', baseline: 'version:1', drifting: true, window: 300 });
    expect(report.map((r) => r.feature).sort()).toEqual(['output:p[0]', 'x[0]', 'x[1]', 'x[2]', 'x[3]']);
    for (const f of ['x[0]', 'x[1]', 'x[3]']) expect(byFeature(report).get(`2/${f}`)!.drifting).toBe(false);
    // A reference for v2 takes over from the previous window; removing it falls back again.
    t.applyModelKey(keys.reference('m', 2), reference('m', 2));
    expect(t.report('m', 2).every((r) => r.baseline === 'reference')).toBe(true);
    t.applyModelKey(keys.reference('m', 2), null);
    expect(t.report('m', 2).every((r) => r.baseline === 'version:1')).toBe(true);
  });

  it('takes only successful samples with summaries; filters by model and version', () => {
    const t = new DriftTracker(settings);
    t.add(batch('bad', 1, rows(10, 1), 14));
    t.add(batch('bad', 1, [{ inputs: [], outputs: [] }]));
    expect(t.has('bad')).toBe(false);
    t.applyModelKey(keys.reference('a', 1), reference('a', 1));
    t.applyModelKey(keys.reference('b', 3), reference('b', 3));
    t.add(batch('a', 1, rows(200, 1)));
    t.add(batch('b', 3, rows(200, 2, 2)));
    t.add(batch('b', 4, rows(200, 2)));
    expect(new Set(t.report().map((r) => r.name))).toEqual(new Set(['a', 'b']));
    // Drifting rows of every model come first.
    expect(t.report()[0]).toMatchObject({ name: 'b', feature: 'f2', drifting: true });
    expect(new Set(t.report('b', 4).map((r) => r.version))).toEqual(new Set([4]));
    expect(t.report('b', 4).every((r) => r.baseline === 'version:3')).toBe(true);
    expect(t.report('b', 9)).toEqual([]);
    expect(t.report('nobody')).toEqual([]);
  });

  it('keeps the 16 most recently fed versions of a model', () => {
    let clock = 0;
    const t = new DriftTracker(settings, () => clock++);
    for (let v = 1; v <= 17; v++) {
      t.applyModelKey(keys.reference('m', v), reference('m', v, 500));
      t.add(batch('m', v, rows(5, v)));
    }
    expect(new Set(t.report('m').map((r) => r.version)).has(1)).toBe(false);
    expect(new Set(t.report('m').map((r) => r.version)).size).toBe(16);
  });

  it('refuses min samples above the window', () => {
    expect(() => new DriftTracker({ ...settings, window: 50, minSamples: 100 })).toThrow(ConfigError);
  });
});
