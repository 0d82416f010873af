/**
 * `infermesh bench` end to end with small counts: every scenario runs
 * against real processes under h2load and the report is complete.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeTestPki } from '../harness/certs.js';

const CLI = path.resolve(import.meta.dirname, '../../dist/services/cli/main.js');

describe('infermesh bench', () => {
  it('measures in-process ORT, echo, direct and mesh, batching, event loop and memory', async () => {
    // The caller's mesh credentials in the environment (valid TLS files, a token) are not for the
    // bench's own plaintext loopback mesh: it must run anyway.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-pki-'));
    const pki = await makeTestPki(dir);
    const env = { ...process.env, INFERMESH_TLS_CA: pki.ca, INFERMESH_TLS_CERT: pki.serverCert, INFERMESH_TLS_KEY: pki.serverKey, INFERMESH_TOKEN: 'someone-elses-token' };
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [CLI, 'bench', '--json', '--requests', '400', '--latency-requests', '200', '--batch-requests', '200', '--connections', '2', '--streams', '8', '--warmup', '300', '--rounds', '2'], { timeout: 170_000, maxBuffer: 8 << 20, env }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
    const r = JSON.parse(out);
    expect(r.generator).toContain('h2load');
    expect(r.inProcess.calls).toBe(20000);
    for (const k of ['grpc-js echo', 'http2 echo (raw path)', 'inference direct', 'mesh (router)', 'mesh, tracing off']) {
      // Two rounds, pooled: counts add up, one rate per round.
      expect(r.transport[k].load.succeeded, k).toBe(800);
      expect(r.transport[k].load.failed, k).toBe(0);
      expect(r.transport[k].c1.succeeded, k).toBe(400);
      expect(r.transport[k].load.roundsRps, k).toHaveLength(2);
      expect(r.transport[k].load.p99Us, k).toBeGreaterThan(0);
    }
    expect(r.batching.on.succeeded).toBe(400);
    expect(r.batching.off.succeeded).toBe(400);
    expect(r.ratios.meshThroughputOverEcho).toBeGreaterThan(0);
    expect(r.ratios.meshP50C1OverEcho).toBeGreaterThan(0);
    expect(r.ratios.meshThroughputOverHttp2Echo).toBeGreaterThan(0);
    expect(r.ratios.tracingP99OverOff).toBeGreaterThan(0);
    expect(r.inferenceEventLoop.maxMs).toBeGreaterThan(0);
    expect(r.memoryMb.afterDemoLoad.inference.peakMb).toBeGreaterThan(0);
    expect(r.replicaStats.startedAfterDeadline).toBe(0);
    expect(r.grpcErrors).toBe(0);
  }, 180_000);
});
