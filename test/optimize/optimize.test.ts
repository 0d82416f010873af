/**
 * `infermesh optimize` against a real registry, replica, router and NATS:
 * int8 and fp16 versions of the wide MLP, a small CNN and a transformer
 * encoder block are stored with lineage when they agree with the original on
 * the reference rows (size ≤ 35 % / ≤ 55 %, agreement ≥ 99 %); the optimized
 * version served through the router answers what in-process ONNX Runtime
 * answers for that file; a candidate built to disagree is refused with the
 * numbers and nothing is stored.
 */
import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from '../../libs/errors/index.js';
import { cnnModel, encoderModel, wideMlpModel, type Fixture } from '../../libs/onnx-builder/index.js';
import { ModelEvent_Kind, onnx } from '../../libs/proto/index.js';
import { cli, json } from '../cli/run-cli.js';
import { startMesh, type Mesh } from '../harness/mesh.js';
import { csvOf, normalRows, runInProcess, widthOf } from './fixtures.js';

const MODELS: Record<string, Fixture> = { wide: wideMlpModel(), cnn: cnnModel(), encoder: encoderModel() };
const ROWS = 600;
let mesh: Mesh;
const numbers: Record<string, unknown>[] = [];

beforeAll(async () => {
  mesh = await startMesh({ replicas: 1 });
  for (const [name, f] of Object.entries(MODELS)) {
    await mesh.clients.registry.push(f.bytes, { name, alias: 'production', reference: csvOf(normalRows(ROWS, widthOf(f), 3), widthOf(f)), referenceFormat: 'csv' });
  }
}, 60_000);

afterAll(async () => {
  console.log(JSON.stringify(numbers));
  await mesh?.stop();
});

async function artifactOf(name: string, version: number): Promise<Uint8Array> {
  const v = (await mesh.clients.registry.get(name)).versions.find((x) => x.version === version)!;
  const nc = await (await import('nats')).connect({ servers: mesh.nats.url });
  try {
    const bytes = (await (await nc.jetstream().views.os('infermesh-artifacts')).getBlob(v.sha256))!;
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(v.sha256);
    return bytes;
  } finally {
    await nc.close();
  }
}

/** Share of rows whose decision (argmax, or score ≥ 0.5) is the same in both outputs. */
function agreementOf(a: Float32Array, b: Float32Array, rows: number): number {
  const width = a.length / rows;
  const decide = (v: Float32Array, r: number) => {
    if (width === 1) return v[r]! >= 0.5 ? 1 : 0;
    let best = 0;
    for (let j = 1; j < width; j++) if (v[r * width + j]! > v[r * width + best]!) best = j;
    return best;
  };
  let same = 0;
  for (let r = 0; r < rows; r++) if (decide(a, r) === decide(b, r)) same++;
  return same / rows;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return Status[(err as grpc.ServiceError).code] ?? String(err);
  }
}

describe('optimize', () => {
  it('int8 ≤ 35 % and fp16 ≤ 55 % of the size, ≥ 99 % agreement on the reference rows and on other rows, stored with lineage', async () => {
    for (const [name, f] of Object.entries(MODELS)) {
      for (const [method, limit] of [['int8', 0.35], ['fp16', 0.55]] as const) {
        const r = await mesh.clients.registry.optimize({ name, version: 1, method, skipBench: true });
        const ratio = r.candidateBytes / r.originalBytes;
        // int8 is calibrated on the reference rows: its agreement is measured again on rows it never saw (two other draws).
        const stored = await artifactOf(name, r.version!.version);
        const heldOut: number[] = [];
        for (const seed of [4, 5]) {
          const rows = normalRows(ROWS, widthOf(f), seed);
          heldOut.push(agreementOf(await runInProcess(f.bytes, f, rows), await runInProcess(stored, f, rows), ROWS));
        }
        numbers.push({ name, method, ratio, agreement: r.gate!.agreement, heldOut, maxAbsDiff: r.gate!.maxAbsDiff, rows: r.gate!.rows, notes: r.notes });
        expect(ratio, `${name} ${method}`).toBeLessThanOrEqual(limit);
        expect(r.gate!.rows).toBe(ROWS);
        expect(r.gate!.source).toBe('reference');
        expect(r.gate!.agreement, `${name} ${method}`).toBeGreaterThanOrEqual(0.99);
        for (const a of heldOut) expect(a, `${name} ${method} on other rows`).toBeGreaterThanOrEqual(0.99);
        expect(r.gate!.maxAbsDiff).toBeGreaterThan(0);
        expect(Number.isFinite(r.gate!.maxAbsDiff)).toBe(true);
        const v = r.version!;
        expect(v.lineage?.operation).toBe('optimize');
        expect(v.lineage?.method).toBe(method);
        expect(v.lineage?.derivedFrom).toEqual([{ name, version: 1 }]);
        expect(v.lineage?.gate?.agreement).toBe(r.gate!.agreement);
        expect(v.sizeBytes).toBe(r.candidateBytes);
        // The reference (drift baseline, gate rows) goes with it.
        expect((await mesh.clients.registry.getReference(name, v.version)).sampleRows).toBe(ROWS);
      }
    }
    // The wide MLP's big layer keeps int8 arithmetic (the speed-up); the note says which nodes got what.
    const wide = numbers.find((x) => x.name === 'wide' && x.method === 'int8')!;
    expect((wide.notes as string[]).join(' ')).toMatch(/MatMulInteger\) in [^;]*w1/);
  }, 90_000);

  it('the int8 version served through the router answers what in-process ONNX Runtime answers for that file', async () => {
    const f = MODELS.wide!;
    const info = await mesh.clients.registry.get('wide');
    const v = info.versions.find((x) => x.lineage?.method === 'int8')!;
    // The stored file holds int8 weights and int8 arithmetic.
    const bytes = await artifactOf('wide', v.version);
    const model = onnx.ModelProto.decode(bytes);
    expect(model.graph!.node.some((n) => n.opType === 'MatMulInteger')).toBe(true);
    expect(model.graph!.initializer.filter((t) => t.dataType === onnx.TensorProto_DataType.INT8).length).toBeGreaterThanOrEqual(2);
    await mesh.clients.registry.setCanary('wide', v.version, 10);
    await mesh.waitReady('wide', String(v.version));
    const rows = normalRows(16, 256, 99);
    const expected = await runInProcess(bytes, f, rows);
    const { outputs } = await mesh.clients.router.infer('wide', [{ name: 'features', datatype: 'FP32', shape: [16, 256], data: Array.from(rows) }], { version: String(v.version) });
    const got = outputs[0]!.data as number[];
    expect(got).toHaveLength(16);
    for (let i = 0; i < 16; i++) expect(Math.abs(got[i]! - expected[i]!)).toBeLessThanOrEqual(1e-6);
    // And it differs from the original's answers (it is the quantized model that answered).
    const original = await runInProcess(f.bytes, f, rows);
    expect(Math.max(...got.map((x, i) => Math.abs(x - original[i]!)))).toBeGreaterThan(0);
    await mesh.clients.registry.clearCanary('wide');
  }, 60_000);

  it('the gate refuses a candidate built to disagree (prune=0.9) with FAILED_PRECONDITION and the numbers; nothing is stored', async () => {
    const before = await mesh.clients.registry.get('cnn');
    const objects = (await mesh.clients.registry.collectGarbage({ minAgeS: 0, dryRun: true })).objectsScanned;
    const r = await cli(['optimize', 'cnn', '1', '--method', 'prune=0.9', '--no-bench', '--registry', mesh.registryAddr], 60_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: FAILED_PRECONDITION: prune=0\.9 of cnn@1 refused by the accuracy gate on 600 reference rows: agreement \d+\.\d+% < 99\.00%/);
    expect(r.stderr).toMatch(/max abs diff \d/);
    const after = await mesh.clients.registry.get('cnn');
    expect(after.versions.map((v) => v.version)).toEqual(before.versions.map((v) => v.version));
    expect((await mesh.clients.registry.collectGarbage({ minAgeS: 0, dryRun: true })).objectsScanned).toBe(objects);
    // --max-abs-diff refuses too; --force needs the promote role only when tokens are on (open here) and stores it, marked.
    expect(await codeOf(mesh.clients.registry.optimize({ name: 'cnn', version: 1, method: 'fp16', maxAbsDiff: 1e-9, skipBench: true }))).toBe('FAILED_PRECONDITION');
    const forced = await mesh.clients.registry.optimize({ name: 'cnn', version: 1, method: 'prune', sparsity: 0.9, force: true, skipBench: true });
    expect(forced.version?.lineage?.gate?.forced).toBe(true);
    // Bad input names the field.
    expect(await codeOf(mesh.clients.registry.optimize({ name: 'cnn', version: 1, method: 'int4' }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(mesh.clients.registry.optimize({ name: 'cnn', version: 99, method: 'int8' }))).toBe('NOT_FOUND');
  }, 60_000);

  it('CLI: the report (size, gate, p50/p99 and rows/s at batch 1 and 64) as JSON; graph keeps ONNX operators; show and history carry the lineage', async () => {
    const r = json(await cli(['optimize', 'encoder', '1', '--method', 'int8', '--tag', 'stage=candidate', '--json', '--registry', mesh.registryAddr], 60_000));
    numbers.push({ cli: r });
    expect(r.stored).toBe(true);
    expect(r.sizeBytes.ratio).toBeLessThanOrEqual(0.35);
    expect(r.gate.agreement).toBeGreaterThanOrEqual(0.99);
    expect(r.bench.original.map((p: { batch: number }) => p.batch)).toEqual([1, 64]);
    for (const p of [...r.bench.original, ...r.bench.candidate]) {
      expect(p.p50Ms).toBeGreaterThan(0);
      expect(p.p99Ms).toBeGreaterThanOrEqual(p.p50Ms);
      expect(p.rowsPerS).toBeGreaterThan(0);
    }
    const g = await mesh.clients.registry.optimize({ name: 'cnn', version: 1, method: 'graph', skipBench: true });
    expect(g.method).toBe('graph:basic');
    expect(g.gate!.maxAbsDiff).toBeLessThan(1e-4);
    expect(g.notes.join(' ')).toMatch(/portable/);
    const show = json(await cli(['models', 'show', 'encoder', '--tag', 'stage=candidate', '--json', '--registry', mesh.registryAddr]));
    expect(show.versions).toHaveLength(1);
    expect(show.versions[0].lineage).toMatchObject({ operation: 'optimize', method: 'int8', derivedFrom: [{ name: 'encoder', version: 1 }] });
    expect(show.versions[0].tags).toEqual({ stage: 'candidate' });
    const history = await mesh.clients.registry.history('encoder');
    expect(history.find((e) => e.version === r.version && e.kind === ModelEvent_Kind.REGISTERED)?.reason).toMatch(/^int8 of version 1: agreement \d+\.\d+% on 600 rows, max abs diff/);
    // Ready for a canary.
    expect(await codeOf(mesh.clients.registry.setCanary('encoder', r.version, 5))).toBe('OK');
  }, 90_000);
});
