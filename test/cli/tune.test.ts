/**
 * `infermesh tune` end to end on a small MLP (real mesh, real h2load), and
 * its choice rule and option checks without one.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { UsageError } from '../../services/cli/output.js';
import { tunePlan } from '../../services/cli/tune/options.js';
import { chooseBest, withApply, type TuneResult } from '../../services/cli/tune/report.js';
import { rowsPerRequest, zeroTensors } from '../../services/cli/tune/tune-input.js';
import { cli, json } from './run-cli.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-tune-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function res(workers: number, maxBatchSize: number, rowsPerSec: number, p99Ms: number, meetsTarget: boolean): TuneResult {
  return { workers, maxBatchSize, maxQueueDelayMicros: 0, modelVersion: 1, rowsPerRequest: 1, requests: 1, succeeded: 1, failed: 0, grpcErrors: 0, seconds: 1, callsPerSec: rowsPerSec, rowsPerSec, p50Ms: p99Ms / 2, p99Ms, p999Ms: p99Ms, meetsTarget };
}

describe('infermesh tune: choice and options', () => {
  it('picks the highest throughput meeting the target, else the lowest p99', () => {
    const a = res(1, 1, 1000, 10, true);
    const b = res(1, 16, 5000, 40, true);
    const c = res(2, 64, 9000, 90, false);
    expect(chooseBest([a, b, c])).toBe(b);
    const d = res(1, 1, 1000, 70, false);
    expect(chooseBest([c, d])).toBe(d);
  });

  it('says how to apply the best setting', () => {
    const best = withApply(res(4, 32, 1, 1, true), 'mlp', 'my model.onnx', 2);
    expect(best.pushCommand).toBe("infermesh models push 'my model.onnx' --name mlp --alias production --max-batch 32 --max-queue-delay-us 0");
    expect(best.inferenceFlags).toEqual(['--workers', '4', '--intra-op-threads', '1', '--oversubscribe']);
  });

  it('checks the lists and the target before starting anything', () => {
    expect(tunePlan({ p99TargetMs: '12.5', batchSizes: '1, 8,8', queueDelaysUs: '0', workers: '2' })).toEqual({ p99TargetMs: 12.5, batchSizes: [1, 8], queueDelaysUs: [0], workers: [2] });
    for (const bad of [{ batchSizes: '0' }, { batchSizes: '1,x' }, { workers: '' }, { p99TargetMs: '0' }, { queueDelaysUs: '-1' }]) {
      expect(() => tunePlan({ p99TargetMs: '50', batchSizes: '1', queueDelaysUs: '0', workers: '1', ...bad })).toThrow(UsageError);
    }
  });

  it('makes one row of zeros from the input metadata', () => {
    const t = zeroTensors([{ name: 'features', datatype: 'FP32', shape: [-1, 8] }]);
    expect(t).toEqual([{ name: 'features', datatype: 'FP32', shape: [1, 8], data: new Array(8).fill(0) }]);
    expect(rowsPerRequest(t)).toBe(1);
  });
});

describe('infermesh tune: end to end', () => {
  it('measures each batching policy through the router and chooses by the rule', async () => {
    const model = path.join(dir, 'mlp.onnx');
    writeFileSync(model, mlpModel({ inputs: 8, hidden: [64], outputs: 1 }).bytes);
    const r = await cli(['tune', 'mlp', '--model', model, '--batch-sizes', '1,16', '--queue-delays-us', '0', '--workers', '1', '--requests', '300', '--json'], 60_000);
    const out = json(r);
    expect(r.stderr).toMatch(/^tune: \[2\/2\] workers=1 max_batch=16 /m);
    expect(out.target.p99Ms).toBe(50);
    expect(out.configs).toHaveLength(2);
    expect(out.configs.map((c: TuneResult) => c.maxBatchSize).sort()).toEqual([1, 16]);
    for (const c of out.configs as TuneResult[]) {
      expect(c.workers).toBe(1);
      expect(c.succeeded).toBe(300);
      expect(c.grpcErrors).toBe(0);
      expect(c.rowsPerSec).toBeGreaterThan(0);
      expect(c.p99Ms).toBeGreaterThan(0);
      expect(c.meetsTarget).toBe(c.p99Ms <= 50);
    }
    // Each configuration was its own version.
    expect(new Set(out.configs.map((c: TuneResult) => c.modelVersion)).size).toBe(2);
    const meeting = (out.configs as TuneResult[]).filter((c) => c.meetsTarget);
    const expected = meeting.length
      ? Math.max(...meeting.map((c) => c.rowsPerSec))
      : (out.configs as TuneResult[]).reduce((a, c) => (c.p99Ms < a.p99Ms ? c : a)).rowsPerSec;
    expect(out.best.rowsPerSec).toBe(expected);
    expect(out.best.pushCommand).toContain(`--max-batch ${out.best.maxBatchSize} --max-queue-delay-us 0`);
    expect(out.best.inferenceFlags).toContain('--workers');
  }, 70_000);
});
