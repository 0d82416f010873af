/**
 * Triton's extensions on the router, driven by an independent client
 * (Python grpcio with protoc-generated messages and urllib: triton_client.py)
 * against a real mesh of two replicas with tokens on the registry:
 * ServerMetadata.extensions, ModelConfig, ModelStatistics (counts equal to
 * the calls made, summed across both replicas), RepositoryIndex/Load/Unload
 * (load needs the promote role, forwarded to the registry), and the HTTP
 * binary tensor extension with compression (the same numbers as JSON and gRPC).
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenHash } from '../../libs/grpc/access.js';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { ModelEvent_Kind, PROTO_DIR, RuntimeClient, type StatisticsResponse } from '../../libs/proto/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

const ADMIN = 'admin-token-0123456789';
const READER = 'reader-token-0123456789';
const EXTENSIONS = ['binary_tensor_data', 'model_configuration', 'model_repository', 'statistics'];
const v1 = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 9 });
const v2 = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 10 });
let mesh: Mesh;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'infermesh-triton-'));
  execFileSync('protoc', ['-I', PROTO_DIR, `--python_out=${dir}`, 'inference/grpc_service.proto', 'inference/model_config.proto']);
  const tokens = path.join(dir, 'tokens');
  writeFileSync(tokens, `${tokenHash(ADMIN)} admin admin\n${tokenHash(READER)} reader push\n`);
  mesh = await startMesh({ replicas: 2, env: { INFERMESH_TOKENS_FILE: tokens }, client: { token: ADMIN } });
  await mesh.clients.registry.push(v1.bytes, { name: 'scorer', alias: 'production' });
  await mesh.clients.registry.push(v2.bytes, { name: 'scorer' });
  await Promise.all([mesh.waitReady('scorer', '1'), mesh.waitReady('scorer', '2')]);
}, 120_000);
afterAll(async () => {
  await mesh?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function client<T>(scenario: string, ...args: string[]): Promise<T> {
  const { stdout } = await promisify(execFile)('/usr/bin/python3', [path.join(import.meta.dirname, 'triton_client.py'), dir, mesh.routerAddr, String(mesh.router.info.restPort), scenario, ...args], { timeout: 60_000 });
  return JSON.parse(stdout) as T;
}

/** Runtime.Statistics of one replica (what the router sums). */
function replicaStats(address: string): Promise<StatisticsResponse> {
  const c = new RuntimeClient(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) =>
    c.statistics({ model: 'scorer' }, (err, res) => {
      c.close();
      return err ? reject(err) : resolve(res!);
    }),
  );
}

/** Successful calls of scorer v1 each replica has served so far (Runtime.Statistics). */
async function servedPerReplica(): Promise<number[]> {
  const per = await Promise.all(mesh.replicas.map((p) => replicaStats(String(p.info.address))));
  return per.map((s) => Number(s.versions.find((x) => x.stats?.version === '1')?.stats?.inferenceStats?.success?.count ?? 0));
}

const scoreOnce = () => mesh.clients.router.infer('scorer', [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: [1, 2, 3, 4, 5, 6, 7, 8] }]);
/** 32 calls at once: more than one awake replica takes (README "Which replica"), so both replicas serve. */
const burst = () => Promise.all(Array.from({ length: 32 }, scoreOnce));

type Dur = { count?: string; ns?: string };
type Stats = { name: string; version: string; inference_count?: string; execution_count?: string; last_inference?: string; inference_stats: Record<string, Dur>; batch_stats?: { batch_size: string; compute_infer: Dur }[] };
const n = (v: string | number | undefined) => Number(v ?? 0);

describe("Triton's extensions through the router (independent Python client)", () => {
  it('ServerMetadata lists exactly the extensions served; ModelConfig (gRPC and HTTP) describes the model as the mesh serves it', async () => {
    const r = await client<{
      extensions: string[];
      http_extensions: string[];
      config: Record<string, unknown> & { input: { name: string; dims: string[] }[]; output: { dims: string[] }[]; instance_group: { kind: string; count: number }[]; dynamic_batching: Record<string, unknown>; version_policy: { specific: { versions: string[] } } };
      data_type: string;
      http_status: number[];
      http_config: Record<string, unknown> & { input: { data_type: string; dims: number[] }[]; instance_group: { kind: string; count: number }[] };
      http_config_v1: { name: string };
      codes: Record<string, string>;
    }>('metadata-config', 'scorer');
    expect(r.extensions).toEqual(EXTENSIONS);
    expect(r.http_extensions).toEqual(EXTENSIONS);
    const c = r.config;
    expect(c).toMatchObject({ name: 'scorer', platform: 'onnxruntime_onnx', backend: 'onnxruntime', max_batch_size: 64, default_model_filename: 'model.onnx' });
    // The batch dimension is not in dims when the model batches.
    expect(c.input).toEqual([{ name: 'features', data_type: 'TYPE_FP32', dims: ['8'] }]);
    expect(r.data_type).toBe('TYPE_FP32');
    expect(c.output[0]!.dims).toEqual(['1']);
    expect(c.dynamic_batching).toMatchObject({ priority_levels: '2', default_priority_level: '1' });
    expect(c.version_policy.specific.versions).toEqual(['1', '2']);
    // Two replicas of one worker each, on CPU.
    expect(c.instance_group).toEqual([{ name: 'scorer_cpu', kind: 'KIND_CPU', count: 2 }]);
    expect(r.http_status).toEqual([200, 200, 404]);
    expect(r.http_config).toMatchObject({ name: 'scorer', platform: 'onnxruntime_onnx', max_batch_size: 64, input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [8] }], instance_group: [{ kind: 'KIND_CPU', count: 2 }] });
    expect(r.http_config_v1.name).toBe('scorer');
    expect(r.codes).toEqual({ unknown: 'NOT_FOUND', bad_name: 'INVALID_ARGUMENT', bad_version: 'NOT_FOUND' });
  });

  it('one call at a time stays on one awake replica; a burst spreads over both', async () => {
    const before = await servedPerReplica();
    for (let i = 0; i < 20; i++) await scoreOnce();
    const sequential = (await servedPerReplica()).map((c, i) => c - before[i]!);
    expect([...sequential].sort((a, b) => a - b)).toEqual([0, 20]);
    await burst();
    const spread = (await servedPerReplica()).map((c, i) => c - before[i]! - sequential[i]!);
    expect(spread.every((c) => c > 0), `burst served per replica: ${spread}`).toBe(true);
  });

  it('ModelStatistics counts exactly the calls made (gRPC, JSON and binary HTTP), summed over both replicas; binary and JSON HTTP give the same numbers as gRPC', async () => {
    // Calls one at a time stay on one replica: a burst first, so both have served when their sum is checked.
    await burst();
    const r = await client<{ before: Stats[]; after: Stats[]; calls: number; bad: number; rows: number; identical: boolean; http: { model_stats: Record<string, unknown>[] }; http_version: { model_stats: Stats[] }; http_all: { model_stats: { name: string }[] }; http_status: number[]; unknown: string; bad_version: string }>('stats', 'scorer');
    expect(r.identical).toBe(true);
    const v = (list: Stats[]) => list.find((s) => s.version === '1') ?? ({ inference_stats: {} } as Stats);
    const before = v(r.before);
    const after = v(r.after);
    const d = (f: (s: Stats) => number) => f(after) - f(before);
    expect(d((s) => n(s.inference_stats.success?.count))).toBe(r.calls);
    expect(d((s) => n(s.inference_count))).toBe(r.rows);
    // One call at a time: each ran alone.
    expect(d((s) => n(s.execution_count))).toBe(r.calls);
    // Inputs that do not fit the model count as failures of the version, nothing else failed.
    expect(r.bad).toBe(2);
    expect(d((s) => n(s.inference_stats.fail?.count))).toBe(2);
    for (const f of ['queue', 'compute_input', 'compute_infer', 'compute_output']) expect(d((s) => n(s.inference_stats[f]?.count))).toBe(r.calls);
    expect(n(after.inference_stats.compute_infer?.ns)).toBeGreaterThan(0);
    expect(n(after.last_inference)).toBeGreaterThan(Date.now() - 60_000);
    const batches = after.batch_stats ?? [];
    expect(batches.reduce((t, b) => t + n(b.compute_infer.count), 0)).toBe(n(after.execution_count));
    expect(batches.map((b) => n(b.batch_size))).toEqual(expect.arrayContaining([1, 2, 3]));
    // Each replica served some of them; the router's numbers are their sum.
    const per = await Promise.all(mesh.replicas.map((p) => replicaStats(String(p.info.address))));
    const counts = per.map((s) => s.versions.find((x) => x.stats?.version === '1')?.stats?.inferenceStats?.success?.count ?? 0);
    expect(counts.every((c) => c > 0)).toBe(true);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(n(after.inference_stats.success?.count));
    const fails = per.map((s) => s.versions.find((x) => x.stats?.version === '1')?.stats?.inferenceStats?.fail?.count ?? 0);
    expect(fails.reduce((a, b) => a + b, 0)).toBe(n(after.inference_stats.fail?.count));
    // HTTP: the same counters in Triton's JSON.
    expect(r.http_status).toEqual([200, 200, 200]);
    const hv = r.http_version.model_stats;
    expect(hv).toHaveLength(1);
    expect(Number(hv[0]!.inference_count)).toBe(n(after.inference_count));
    expect(r.http_all.model_stats.map((s) => s.name)).toContain('scorer');
    expect(r.unknown).toBe('NOT_FOUND');
    expect(r.bad_version).toBe('NOT_FOUND');
  });

  it('binary tensors in and out, gzip and deflate both ways: the same bytes as gRPC; bad binary bodies are 400/413 naming the field', async () => {
    const r = await client<Record<string, { same: boolean; encoding: string | null; binary_size: number | null }> & { bad: Record<string, [number, string]>; bytes: [number, string][] }>('binary', 'scorer');
    for (const k of ['json', 'binary', 'binary_outputs_listed', 'binary_in_json_out', 'gzip_in_gzip_out', 'deflate_in_deflate_out']) expect(r[k]!.same, k).toBe(true);
    expect(r.binary!.binary_size).toBe(12);
    expect(r.binary_in_json_out!.binary_size).toBeNull();
    expect(r.gzip_in_gzip_out!.encoding).toBe('gzip');
    expect(r.deflate_in_deflate_out!.encoding).toBe('deflate');
    expect(r.bad.short![0]).toBe(400);
    expect(r.bad.short![1]).toMatch(/^inputs\[0\]\.parameters\.binary_data_size: 16 bytes; shape \[1,8\] of FP32 needs 32/);
    expect(r.bad.past_end![0]).toBe(400);
    expect(r.bad.past_end![1]).toMatch(/^inputs\[0\]\.parameters\.binary_data_size: .*run past/);
    expect(r.bad.header_past_body![0]).toBe(400);
    expect(r.bad.header_past_body![1]).toMatch(/^Inference-Header-Content-Length:/);
    expect(r.bad.not_gzip).toEqual([400, 'body: cannot be inflated as gzip']);
    expect(r.bad.bomb![0]).toBe(413);
    // BYTES, as JSON strings and as length-prefixed binary, reach the replica alike (this model takes FP32).
    expect(r.bytes[0]![0]).toBe(400);
    expect(r.bytes[0]).toEqual(r.bytes[1]);
    expect(r.bytes[0]![1]).toMatch(/BYTES|datatype/);
  });

  it('RepositoryIndex lists every version with its state; Load moves production through the registry with the promote role', async () => {
    const r = await client<Record<string, unknown> & { index: { name: string; version: string; state: string }[]; index_ready: { state: string }[]; http_index: [number, { name: string; version: string; state: string }[]]; http_index_ready: [number, unknown[]]; http_unload: [number, string] }>('repository', 'scorer', ADMIN, READER);
    expect(r.index).toEqual([
      { name: 'scorer', version: '1', state: 'READY' },
      { name: 'scorer', version: '2', state: 'READY' },
    ]);
    expect(r.index_ready).toHaveLength(2);
    expect(r.index_repo).toBe('INVALID_ARGUMENT');
    expect(r.http_index).toEqual([200, [{ name: 'scorer', version: '1', state: 'READY', reason: '' }, { name: 'scorer', version: '2', state: 'READY', reason: '' }]]);
    expect(r.http_index_ready[0]).toBe(200);
    expect(r.load_no_token).toBe('UNAUTHENTICATED');
    expect(r.load_reader).toBe('PERMISSION_DENIED');
    expect(r.load_config).toBe('INVALID_ARGUMENT');
    expect(r.load_unknown).toBe('NOT_FOUND');
    expect(r.served_before).toBe('1');
    expect(r.load_admin).toBe('OK');
    expect(r.served_after_load).toBe('2');
    expect(r.http_load_no_type).toBe(415);
    expect(r.http_load_no_token).toBe(401);
    expect(r.http_load_reader).toBe(403);
    expect(r.http_load_admin).toBe(200);
    expect(r.served_after_http_load).toBe('1');
    const info = await mesh.clients.registry.get('scorer');
    expect(info.traffic?.aliases.production).toBe(1);
  });

  it('Unload stops the model serving until a load (UNAVAILABLE naming the unload, not ready, index UNAVAILABLE/unloaded, in the history); it needs the promote role', async () => {
    type State = { infer: [string, string]; ready: boolean; index: { name: string; version: string; state: string; reason?: string }[]; http_ready: number };
    const r = await client<Record<string, unknown> & Record<'before_unload' | 'after_unload' | 'after_load' | 'after_http_unload' | 'after_http_load_again', State> & { http_infer_unloaded: [number, string]; http_index_unloaded: [number, { state: string; reason: string }[]] }>(
      'unload',
      'scorer',
      ADMIN,
      READER,
    );
    const unloadedMsg = 'model scorer is unloaded (RepositoryModelUnload); load it to serve';
    const serving = (s: State) => {
      expect(s.infer[0]).toBe('OK');
      expect(s.ready).toBe(true);
      expect(s.http_ready).toBe(200);
      expect(s.index.map((m) => m.state)).toEqual(['READY', 'READY']);
    };
    const unloaded = (s: State) => {
      expect(s.infer).toEqual(['UNAVAILABLE', unloadedMsg]);
      expect(s.ready).toBe(false);
      expect(s.http_ready).toBe(503);
      expect(s.index).toEqual([
        { name: 'scorer', version: '1', state: 'UNAVAILABLE', reason: 'unloaded' },
        { name: 'scorer', version: '2', state: 'UNAVAILABLE', reason: 'unloaded' },
      ]);
    };
    // With tokens on: none, or one without `promote`, changes nothing.
    expect(r.unload_no_token).toBe('UNAUTHENTICATED');
    expect(r.unload_reader).toBe('PERMISSION_DENIED');
    expect(r.unload_unknown).toBe('NOT_FOUND');
    expect(r.unload_bad_param).toBe('INVALID_ARGUMENT');
    serving(r.before_unload);
    expect(r.unload_admin).toBe('OK');
    unloaded(r.after_unload);
    expect(r.http_infer_unloaded[0]).toBe(503);
    expect(r.http_infer_unloaded[1]).toBe(unloadedMsg);
    expect(r.load_after_unload).toBe('OK');
    serving(r.after_load);
    expect(r.http_unload_no_type).toBe(415);
    expect(r.http_unload_no_token).toBe(401);
    expect(r.http_unload_reader).toBe(403);
    expect(r.http_unload_admin).toBe(200);
    unloaded(r.after_http_unload);
    expect(r.http_index_unloaded).toEqual([200, [{ name: 'scorer', version: '1', state: 'UNAVAILABLE', reason: 'unloaded' }, { name: 'scorer', version: '2', state: 'UNAVAILABLE', reason: 'unloaded' }]]);
    expect(r.http_load_after_unload).toBe(200);
    serving(r.after_http_load_again);
    // The registry's history: each stop and resume, with actor and reason.
    const events = (await mesh.clients.registry.history('scorer')).filter((e) => e.kind === ModelEvent_Kind.SERVING_STOPPED || e.kind === ModelEvent_Kind.SERVING_RESUMED);
    expect(events.map((e) => [ModelEvent_Kind[e.kind], e.actor, e.reason])).toEqual([
      ['SERVING_STOPPED', 'admin', 'RepositoryModelUnload'],
      ['SERVING_RESUMED', 'admin', 'RepositoryModelLoad'],
      ['SERVING_STOPPED', 'admin', 'RepositoryModelUnload'],
      ['SERVING_RESUMED', 'admin', 'RepositoryModelLoad'],
    ]);
    const info = await mesh.clients.registry.get('scorer');
    expect(info.traffic?.unloaded).toBe(false);
    expect(info.traffic?.aliases.production).toBe(1);
  });
});
