/**
 * Reference data at push, against the real registry process: parsed and
 * checked against the model's inputs, run through the model in the
 * validation child for the output profile, stored as the version's
 * ReferenceProfile — or refused with the field and line, storing nothing.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryApi } from '../../libs/client/index.js';
import { ElemType, GraphBuilder, mlpModel, mulberry32, twoInOutModel } from '../../libs/onnx-builder/index.js';
import { startNats, type NatsHandle } from '../harness/nats.js';
import { startService, type ServiceProc } from '../harness/mesh.js';

let nats: NatsHandle;
let registry: ServiceProc;
let small: ServiceProc;
let api: RegistryApi;
let smallApi: RegistryApi;

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => ({ code: 0, details: '' }),
    (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
  );
const enc = (s: string) => new TextEncoder().encode(s);
const sum = (a: readonly number[]) => a.reduce((x, y) => x + y, 0);

/** `n` rows of 4 features ~ N(0,1), seeded. */
function normalRows(n: number, seed: number): number[][] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => [rng.normal(), rng.normal(), rng.normal(), rng.normal()]);
}

beforeAll(async () => {
  nats = await startNats();
  [registry, small] = await Promise.all([
    startService('registry', ['--nats', nats.url, '--port', '0']),
    startService('registry', ['--nats', nats.url, '--port', '0', '--max-reference-bytes', '1000']),
  ]);
  api = new RegistryApi(`127.0.0.1:${registry.info.grpcPort}`);
  smallApi = new RegistryApi(`127.0.0.1:${small.info.grpcPort}`);
});
afterAll(async () => {
  api?.close();
  smallApi?.close();
  await Promise.all([registry?.stop(), small?.stop()]);
  await nats?.stop();
});

describe('push with a reference', () => {
  it('CSV: profiles the features (deciles, quantiles, moments) and the outputs of the model run on the rows', async () => {
    const m = mlpModel({ inputs: 4, hidden: [8], outputs: 1, seed: 5 });
    const rows = normalRows(3000, 1);
    const csv = `amount,age,"tenure, months",score\n${rows.map((r) => r.join(',')).join('\n')}\n`;
    const v = await api.push(m.bytes, { name: 'refcsv', referenceFormat: 'csv', reference: enc(csv) });
    const ref = await api.getReference('refcsv', v.version);
    expect(ref).toMatchObject({ name: 'refcsv', version: v.version, rows: 3000 });
    expect(ref.createdAtMs).toBeGreaterThan(0);
    expect(ref.features.map((f) => f.name)).toEqual(['amount', 'age', 'tenure, months', 'score']);
    for (const [j, f] of ref.features.entries()) {
      const col = rows.map((r) => Math.fround(r[j]!));
      expect(f.edges).toHaveLength(9);
      expect(sum(f.fractions)).toBeCloseTo(1, 9);
      for (const share of f.fractions) expect(share).toBeCloseTo(0.1, 2);
      expect(f.quantiles).toHaveLength(500);
      expect(f.mean).toBeCloseTo(sum(col) / col.length, 9);
      expect(f.min).toBe(Math.min(...col));
      expect(f.max).toBe(Math.max(...col));
    }
    // The output profile: the model's score on every reference row (ONNX Runtime in the validation child).
    expect(ref.outputs.map((o) => o.name)).toEqual(['score[0]']);
    const scores = Array.from(m.forward(rows.flat().map(Math.fround)));
    const out = ref.outputs[0]!;
    expect(out.mean).toBeCloseTo(sum(scores) / scores.length, 5);
    expect(out.min).toBeCloseTo(Math.min(...scores), 5);
    expect(out.max).toBeCloseTo(Math.max(...scores), 5);
  });

  it('JSON lines of input → values: integer inputs, several outputs, names <tensor>[<i>]', async () => {
    const t = twoInOutModel();
    const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ a: [i, 1, 2, 3], b: [[i % 3, 0], [1, 2]] }));
    const v = await api.push(t.bytes, { name: 'refjsonl', referenceFormat: 'jsonl', reference: enc(lines.join('\n')) });
    const ref = await api.getReference('refjsonl', v.version);
    expect(ref.rows).toBe(40);
    expect(ref.features.map((f) => f.name)).toEqual(['a[0]', 'a[1]', 'a[2]', 'a[3]', 'b[0]', 'b[1]', 'b[2]', 'b[3]']);
    expect(ref.outputs.map((o) => o.name)).toEqual(['sum[0]', 'sum[1]', 'sum[2]', 'sum[3]', 'count[0]']);
    // sum[0] = a[0] + b[0]; count = b[0] + 0 + 1 + 2.
    const sum0 = Array.from({ length: 40 }, (_, i) => i + (i % 3));
    expect(ref.outputs[0]!.mean).toBeCloseTo(sum(sum0) / 40, 6);
    expect(ref.outputs[4]!.min).toBe(3);
    expect(ref.outputs[4]!.max).toBe(5);
  });

  it('a model without a batch dimension runs row by row', async () => {
    const fixed = new GraphBuilder('fixed').input('x', ElemType.FLOAT, [1, 3]).output('y', ElemType.FLOAT, [1, 3]).node('Relu', ['x'], ['y']).toModel();
    const rows = Array.from({ length: 25 }, (_, i) => [i - 12, 12 - i, 0.5]);
    const v = await api.push(fixed, { name: 'reffixed', referenceFormat: 'jsonl', reference: enc(rows.map((r) => JSON.stringify(r)).join('\n')) });
    expect(v.batchable).toBe(false);
    const ref = await api.getReference('reffixed', v.version);
    expect(ref.outputs.map((o) => o.name)).toEqual(['y[0]', 'y[1]', 'y[2]']);
    expect(ref.outputs[0]!.mean).toBeCloseTo(sum(rows.map((r) => Math.max(0, r[0]!))) / 25, 6);
    expect(ref.outputs[2]).toMatchObject({ min: 0.5, max: 0.5 });
  });

  it('a version pushed without a reference has none: NOT_FOUND', async () => {
    const v = await api.push(mlpModel({ inputs: 4, hidden: [4] }).bytes, { name: 'noref' });
    expect((await codeOf(api.getReference('noref', v.version))).code).toBe(grpc.status.NOT_FOUND);
    expect((await codeOf(api.getReference('noref', 99))).code).toBe(grpc.status.NOT_FOUND);
    expect((await codeOf(api.getReference('Bad', 1))).code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('refuses bad references naming the field and line, storing no version', async () => {
    const m = mlpModel({ inputs: 4, hidden: [4], seed: 2 });
    const cases: [string, string, string, string][] = [
      ['unknown format', 'xml', 'a,b,c,d\n1,2,3,4\n', 'header.reference_format:'],
      ['wrong width', 'csv', 'a,b,c\n1,2,3\n', 'reference: line 1:'],
      ['bad value', 'csv', 'a,b,c,d\n1,2,3,4\n1,2,oops,4\n', 'reference: line 3:'],
      ['short row', 'jsonl', '[1,2,3,4]\n[1,2,3,4]\n[1,2]\n', 'reference: line 3:'],
      ['not JSON', 'jsonl', '{"a":1,"b":2,"c":3,"d":4}\n{nope\n', 'reference: line 2:'],
    ];
    for (const [what, format, text, prefix] of cases) {
      const r = await codeOf(api.push(m.bytes, { name: 'badref', referenceFormat: format, reference: enc(text) }));
      expect(r.code, what).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.details.startsWith(prefix), `${what}: ${r.details}`).toBe(true);
    }
    // A format without data, and data without a format.
    expect((await codeOf(api.push(m.bytes, { name: 'badref', referenceFormat: 'csv' }))).details.startsWith('reference:')).toBe(true);
    expect((await codeOf(api.push(m.bytes, { name: 'badref', reference: enc('a,b,c,d\n1,2,3,4\n') }))).details.startsWith('header.reference_format:')).toBe(true);
    expect((await codeOf(api.get('badref'))).code).toBe(grpc.status.NOT_FOUND);
  });

  it('reference data over the cap → RESOURCE_EXHAUSTED', async () => {
    const m = mlpModel({ inputs: 4, hidden: [4], seed: 3 });
    const csv = `a,b,c,d\n${normalRows(100, 4).map((r) => r.join(',')).join('\n')}\n`;
    expect(csv.length).toBeGreaterThan(1000);
    expect((await codeOf(smallApi.push(m.bytes, { name: 'bigref', referenceFormat: 'csv', reference: enc(csv) }))).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((await codeOf(smallApi.get('bigref'))).code).toBe(grpc.status.NOT_FOUND);
    // Under the cap, the same registry takes it.
    const ok = await smallApi.push(m.bytes, { name: 'bigref', referenceFormat: 'csv', reference: enc('a,b,c,d\n1,2,3,4\n') });
    expect((await smallApi.getReference('bigref', ok.version)).rows).toBe(1);
  });
});
