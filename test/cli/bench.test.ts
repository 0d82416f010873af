/**
 * `infermesh bench` end to end with small counts: every scenario (128 in
 * flight, c1, few callers, open loop, batching, event loop) runs against
 * real processes under h2load, with CPU per call read from /proc, and the
 * report is complete. Only counts and presence are asserted, never speed.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeTestPki } from '../harness/certs.js';

const CLI = path.resolve(import.meta.dirname, '../../dist/services/cli/main.js');

describe('infermesh bench', () => {
  it('measures in-process ORT, echo, direct and mesh (128 in flight, c1, few callers, open loop, CPU per call), batching, event loop and memory', async () => {
    // The caller's mesh credentials in the environment (valid TLS files, a token) are not for the
    // bench's own plaintext loopback mesh: it must run anyway. Nor are the caller's service settings:
    // the mesh runs as up deploys it by default (these bad values would stop a router and a replica).
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-pki-'));
    const pki = await makeTestPki(dir);
    const env = {
      ...process.env,
      INFERMESH_TLS_CA: pki.ca,
      INFERMESH_TLS_CERT: pki.serverCert,
      INFERMESH_TLS_KEY: pki.serverKey,
      INFERMESH_TOKEN: 'someone-elses-token',
      INFERMESH_SAMPLE_FLUSH_MS: 'not-a-number',
      INFERMESH_HEARTBEAT_MS: 'not-a-number',
    };
    const args = ['--requests', '400', '--latency-requests', '200', '--few-requests', '200', '--open-requests', '300', '--batch-requests', '200', '--connections', '2', '--streams', '8', '--warmup', '300', '--rounds', '2'];
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [CLI, 'bench', '--json', ...args], { timeout: 170_000, maxBuffer: 8 << 20, env }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
    const r = JSON.parse(out);
    expect(r.generator).toContain('h2load');
    expect(r.inProcess.calls).toBe(20000);
    expect(r.durationS).toBeGreaterThan(0);
    expect(r.mesh.replicas).toBe(2);
    expect(r.mesh.as).toContain('infermesh up');
    expect(r.fewCallers).toEqual({ connections: 4, streams: 1, requests: 200 });
    expect(r.openLoop.offeredRate).toBeGreaterThan(0);
    expect(r.openLoop.basis).toContain('grpc-js echo');
    expect(r.cpu.clockTicksPerSecond).toBeGreaterThan(0);
    expect(Object.keys(r.cpu.resolutionUsPerCall).sort()).toEqual(['c1', 'few', 'load', 'open']);
    const groups: Record<string, string[]> = {
      'grpc-js echo': ['server'],
      'http2 echo (raw path)': ['server'],
      'inference direct': ['replicas'],
      'mesh (router)': ['monitor+nats', 'replicas', 'router'],
      'mesh, tracing off': ['monitor+nats', 'replicas', 'router'],
    };
    let meshCpu = 0;
    for (const [k, g] of Object.entries(groups)) {
      // Two rounds, pooled: counts add up, one rate per round.
      const t = r.transport[k];
      expect(t.load.succeeded, k).toBe(800);
      expect(t.load.failed, k).toBe(0);
      expect(t.c1.succeeded, k).toBe(400);
      expect(t.few.succeeded, k).toBe(400);
      expect(t.open.succeeded, k).toBe(600);
      for (const s of ['load', 'c1', 'few', 'open']) {
        expect(t[s].roundsRps, `${k} ${s}`).toHaveLength(2);
        expect(t[s].rps, `${k} ${s}`).toBeGreaterThan(0);
        expect(t[s].p99Us, `${k} ${s}`).toBeGreaterThan(0);
        expect(Object.keys(t[s].cpuUsPerCall).sort(), `${k} ${s}`).toEqual(g);
        for (const v of Object.values(t[s].cpuUsPerCall) as number[]) expect(v, `${k} ${s}`).toBeGreaterThanOrEqual(0);
        if (k === 'mesh (router)') meshCpu += t[s].cpuUsPerCall.router + t[s].cpuUsPerCall.replicas;
      }
      // The open loop is paced by h2load --rps: no target gets its calls faster than offered.
      expect(t.open.rps, k).toBeLessThan(r.openLoop.offeredRate * 1.1);
    }
    // 2,000 calls through the router and replicas cost well over one 10 ms tick.
    expect(meshCpu).toBeGreaterThan(0);
    // The process hop floor: a bare socket echo in another process, 1 and 4 messages in flight.
    expect(r.hopFloor.runs.map((h: { inFlight: number }) => h.inFlight)).toEqual([1, 4]);
    for (const h of r.hopFloor.runs) {
      expect(h.messages).toBe(20000);
      expect(h.callerUs, `caller, ${h.inFlight} in flight`).toBeGreaterThan(0);
      expect(h.answererUs, `answerer, ${h.inFlight} in flight`).toBeGreaterThan(0);
      expect(h.p50Us).toBeGreaterThan(0);
      expect(h.p99Us).toBeGreaterThanOrEqual(h.p50Us);
    }
    expect(r.batching.on.succeeded).toBe(400);
    expect(r.batching.off.succeeded).toBe(400);
    expect(r.ratios.meshThroughputOverEcho).toBeGreaterThan(0);
    expect(r.ratios.meshP50C1OverEcho).toBeGreaterThan(0);
    expect(r.ratios.meshThroughputOverHttp2Echo).toBeGreaterThan(0);
    expect(r.ratios.tracingP99OverOff).toBeGreaterThan(0);
    for (const q of ['meshFewCallsOverEcho', 'directFewCallsOverEcho', 'meshOpenP99OverEcho', 'directOpenP99OverEcho', 'directP50C1OverEcho']) expect(r.ratios[q], q).toBeGreaterThan(0);
    expect(r.inferenceEventLoop.maxMs).toBeGreaterThan(0);
    expect(r.memoryMb.afterDemoLoad.inference.peakMb).toBeGreaterThan(0);
    expect(r.replicaStats.startedAfterDeadline).toBe(0);
    expect(r.grpcErrors).toBe(0);
  }, 180_000);
});
