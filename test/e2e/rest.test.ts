/**
 * The router's REST gateway end to end: TF Serving's REST API and OIP REST
 * (KServe v2) against real replicas, the answers checked against the models'
 * own arithmetic, and every error a JSON body with the right HTTP status.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { int64Model, mlpModel, twoInOutModel } from '../../libs/onnx-builder/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

let mesh: Mesh;
let base: string;
const v1 = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 3 });
const v2 = mlpModel({ inputs: 8, hidden: [16], outputs: 1, seed: 4 });
const rows = [
  [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
  [1.5, -0.25, 0.0, 2.0, -1.0, 0.75, 0.125, -0.5],
  [0, 0, 0, 0, 0, 0, 0, 0],
];

interface Answer {
  status: number;
  type: string | null;
  allow: string | null;
  text: string;
  json: any;
}

async function req(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, type: res.headers.get('content-type'), allow: res.headers.get('allow'), text, json };
}

const post = (path: string, body: unknown, headers?: Record<string, string>) => req('POST', path, body, headers);
const get = (path: string) => req('GET', path);

/** Expects a JSON error answer with `status` and returns its message. */
function expectError(a: Answer, status: number): string {
  expect(a.status, a.text).toBe(status);
  expect(a.type).toBe('application/json');
  expect(typeof a.json?.error).toBe('string');
  return a.json.error as string;
}

function expectScores(predictions: number[][], model: typeof v1, input = rows): void {
  expect(predictions).toHaveLength(input.length);
  input.forEach((row, i) => {
    expect(predictions[i]).toHaveLength(1);
    expect(predictions[i]![0]).toBeCloseTo(model.forward(row)[0]!, 5);
  });
}

beforeAll(async () => {
  mesh = await startMesh({ replicas: 1 });
  base = `http://127.0.0.1:${mesh.router.info.restPort}`;
  await mesh.clients.registry.push(v1.bytes, { name: 'my_model', alias: 'production' });
  await mesh.clients.registry.push(v2.bytes, { name: 'my_model', alias: 'staging' });
  await mesh.clients.registry.push(twoInOutModel().bytes, { name: 'two_io', alias: 'production' });
  await mesh.clients.registry.push(int64Model().bytes, { name: 'int64_x2', alias: 'production' });
  await Promise.all([mesh.waitReady('my_model', '1'), mesh.waitReady('my_model', '2'), mesh.waitReady('two_io'), mesh.waitReady('int64_x2')]);
});
afterAll(async () => {
  await mesh?.stop();
});

describe('TF Serving REST', () => {
  it('answers a seed-style {"instances": [...]} predict with one prediction per row', async () => {
    const a = await post('/v1/models/my_model:predict', { instances: rows });
    expect(a.status, a.text).toBe(200);
    expect(a.type).toBe('application/json');
    expect(Object.keys(a.json)).toEqual(['predictions']);
    expectScores(a.json.predictions, v1);
  });

  it('accepts the columnar "inputs" format, bare or named, and signature_name', async () => {
    const bare = await post('/v1/models/my_model:predict', { signature_name: 'serving_default', inputs: rows });
    expect(bare.status, bare.text).toBe(200);
    expectScores(bare.json.outputs, v1);
    const named = await post('/v1/models/my_model:predict', { inputs: { features: rows.slice(0, 2) } });
    expect(named.status, named.text).toBe(200);
    expectScores(named.json.outputs, v1, rows.slice(0, 2));
    const byName = await post('/v1/models/my_model:predict', { instances: rows.map((r) => ({ features: r })) });
    expectScores(byName.json.predictions, v1);
  });

  it('takes multi-input instances as objects and answers one object per row for several outputs', async () => {
    const a = await post('/v1/models/two_io:predict', {
      instances: [
        { a: [0.5, 1, 1.5, 2], b: [1, 2, 3, 4] },
        { a: [0, 0, 0, -1], b: [10, 20, 30, 40] },
      ],
    });
    expect(a.status, a.text).toBe(200);
    expect(a.json).toEqual({
      predictions: [
        { sum: [1.5, 3, 4.5, 6], count: [10] },
        { sum: [10, 20, 30, 39], count: [100] },
      ],
    });
    const c = await post('/v1/models/two_io:predict', { inputs: { a: [[1, 1, 1, 1]], b: [[2, 2, 2, 2]] } });
    expect(c.status, c.text).toBe(200);
    expect(c.json).toEqual({ outputs: { sum: [[3, 3, 3, 3]], count: [[8]] } });
  });

  it('serves versions and labels by URL', async () => {
    const byVersion = await post('/v1/models/my_model/versions/2:predict', { instances: rows });
    expect(byVersion.status, byVersion.text).toBe(200);
    expectScores(byVersion.json.predictions, v2);
    const staging = await post('/v1/models/my_model/labels/staging:predict', { instances: rows });
    expectScores(staging.json.predictions, v2);
    const production = await post('/v1/models/my_model/labels/production:predict', { instances: rows });
    expectScores(production.json.predictions, v1);
    const v1Explicit = await post('/v1/models/my_model/versions/1:predict', { inputs: rows });
    expectScores(v1Explicit.json.outputs, v1);
  });

  it('reports model status and metadata', async () => {
    const all = await get('/v1/models/my_model');
    expect(all.status, all.text).toBe(200);
    const ok = { error_code: 'OK', error_message: '' };
    expect(all.json.model_version_status).toEqual([
      { version: '2', state: 'AVAILABLE', status: ok },
      { version: '1', state: 'AVAILABLE', status: ok },
    ]);
    expect((await get('/v1/models/my_model/versions/1')).json).toEqual({ model_version_status: [{ version: '1', state: 'AVAILABLE', status: ok }] });
    expect((await get('/v1/models/my_model/labels/staging')).json.model_version_status[0].version).toBe('2');
    const meta = await get('/v1/models/two_io/metadata');
    expect(meta.status, meta.text).toBe(200);
    expect(meta.json.model_spec).toEqual({ name: 'two_io', signature_name: '', version: '1' });
    const sig = meta.json.metadata.signature_def.signature_def.serving_default;
    expect(sig.method_name).toBe('tensorflow/serving/predict');
    expect(sig.inputs.a.dtype).toBe('DT_FLOAT');
    expect(sig.inputs.b.dtype).toBe('DT_INT64');
    expect(sig.inputs.a.tensor_shape.dim.map((d: { size: string }) => d.size)).toEqual(['-1', '4']);
    expect(Object.keys(sig.outputs)).toEqual(['sum', 'count']);
    expect((await get('/v1/models/my_model/versions/2/metadata')).json.model_spec.version).toBe('2');
  });
});

describe('OIP REST (KServe v2)', () => {
  it('infers with nested and flat data', async () => {
    const nested = await post('/v2/models/my_model/infer', { id: 'n1', inputs: [{ name: 'features', shape: [3, 8], datatype: 'FP32', data: rows }] });
    expect(nested.status, nested.text).toBe(200);
    expect(nested.json).toMatchObject({ model_name: 'my_model', model_version: '1', id: 'n1' });
    const out = nested.json.outputs[0];
    expect(out).toMatchObject({ name: 'score', datatype: 'FP32', shape: [3, 1] });
    expectScores((out.data as number[]).map((x) => [x]), v1);

    const flat = await post('/v2/models/my_model/versions/2/infer', { inputs: [{ name: 'features', shape: [3, 8], datatype: 'FP32', data: rows.flat() }] });
    expect(flat.status, flat.text).toBe(200);
    expect(flat.json.model_version).toBe('2');
    expectScores((flat.json.outputs[0].data as number[]).map((x) => [x]), v2);
  });

  it('returns only the requested outputs and handles INT64 exactly', async () => {
    const a = await post('/v2/models/two_io/infer', {
      inputs: [
        { name: 'a', shape: [2, 4], datatype: 'FP32', data: [[1, 2, 3, 4], [0, 0, 0, 0]] },
        { name: 'b', shape: [2, 4], datatype: 'INT64', data: [1, 2, 3, 4, 5, -6, 7, 1000000] },
      ],
      outputs: [{ name: 'count' }],
    });
    expect(a.status, a.text).toBe(200);
    expect(a.json.outputs).toEqual([{ name: 'count', datatype: 'INT64', shape: [2, 1], data: [10, 1000006] }]);

    // 2^53 + 1 is no double: sent as a decimal string, it comes back exact (doubled).
    const big = await post('/v2/models/int64_x2/infer', { inputs: [{ name: 'x', shape: [1, 3], datatype: 'INT64', data: ['9007199254740993', -3, 1] }] });
    expect(big.status, big.text).toBe(200);
    expect(big.text).toContain('"data":[18014398509481986,-6,2]');
    const tf = await post('/v1/models/int64_x2:predict', { instances: [['9007199254740993', 4, 5]] });
    expect(tf.text).toBe('{"predictions":[[18014398509481986,8,10]]}');

    const both = await post('/v2/models/two_io/infer', {
      inputs: [
        { name: 'a', shape: [1, 4], datatype: 'FP32', data: [0.25, 0.5, 0.75, 1] },
        { name: 'b', shape: [1, 4], datatype: 'INT64', data: [1, 1, 1, 1] },
      ],
    });
    expect(both.json.outputs.map((o: { name: string; data: number[] }) => [o.name, o.data])).toEqual([
      ['sum', [1.25, 1.5, 1.75, 2]],
      ['count', [4]],
    ]);
  });

  it('serves server and model metadata, readiness and health', async () => {
    expect(await get('/v2/health/live')).toMatchObject({ status: 200, json: { live: true } });
    expect(await get('/v2/health/ready')).toMatchObject({ status: 200, json: { ready: true } });
    expect((await get('/v2')).json).toMatchObject({ name: 'infermesh', extensions: ['binary_tensor_data', 'model_configuration', 'model_repository', 'statistics'] });
    const meta = await get('/v2/models/two_io');
    expect(meta.status, meta.text).toBe(200);
    expect(meta.json).toEqual({
      name: 'two_io',
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [
        { name: 'a', datatype: 'FP32', shape: [-1, 4] },
        { name: 'b', datatype: 'INT64', shape: [-1, 4] },
      ],
      outputs: [
        { name: 'sum', datatype: 'FP32', shape: [-1, 4] },
        { name: 'count', datatype: 'INT64', shape: [-1, 1] },
      ],
    });
    expect((await get('/v2/models/my_model/versions/2')).json.versions).toEqual(['2', '1']);
    expect(await get('/v2/models/two_io/ready')).toMatchObject({ status: 200, json: { name: 'two_io', ready: true } });
    expect(await get('/v2/models/my_model/versions/2/ready')).toMatchObject({ status: 200, json: { ready: true } });
    expect(await get('/v2/models/my_model/versions/staging/ready')).toMatchObject({ status: 200, json: { ready: true } });
    expectError(await get('/v2/models/my_model/versions/9/ready'), 404);
    expectError(await get('/v2/models/nope/ready'), 404);
  });
});

describe('REST errors', () => {
  it('answers bad input with JSON errors and the right status, and keeps serving', async () => {
    expect(expectError(await post('/v1/models/my_model:predict', '{"instances": [[1, 2,'), 400)).toMatch(/JSON/);
    expectError(await post('/v2/models/my_model/infer', 'not json'), 400);
    expectError(await post('/v1/models/my_model:predict', '[1, 2]'), 400);
    expect(expectError(await post('/v1/models/my_model:predict', {}), 400)).toMatch(/instances/);

    expect(expectError(await post('/v1/models/no_such_model:predict', { instances: rows }), 404)).toMatch(/no_such_model/);
    expectError(await post('/v2/models/no_such_model/infer', { inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] }), 404);
    expectError(await get('/v1/models/no_such_model'), 404);
    expectError(await post('/v1/models/my_model/versions/7:predict', { instances: rows }), 404);
    expectError(await post('/v1/models/my_model/labels/nolabel:predict', { instances: rows }), 404);
    expectError(await post('/v1/models/Bad.Name:predict', { instances: rows }), 400);

    // Wrong shapes and values name the field.
    expect(expectError(await post('/v1/models/my_model:predict', { instances: [rows[0], rows[1]!.slice(0, 7)] }), 400)).toMatch(/^instances\[1\]/);
    expect(expectError(await post('/v1/models/my_model:predict', { instances: [[1, 2, 3]] }), 400)).toMatch(/^instances\[0\]/);
    expect(expectError(await post('/v1/models/my_model:predict', { instances: [rows[0], [1, 2, 3, 'x', 5, 6, 7, 8]] }), 400)).toMatch(/^instances\[1\]/);
    expect(expectError(await post('/v1/models/two_io:predict', { instances: [{ a: [1, 2, 3, 4] }] }), 400)).toMatch(/^instances\[0\]\.b/);
    expect(expectError(await post('/v1/models/two_io:predict', { instances: [{ a: [1, 2, 3, 4], b: [1.5, 2, 3, 4] }] }), 400)).toMatch(/^instances\[0\]\.b/);
    expect(expectError(await post('/v1/models/two_io:predict', { inputs: { a: [[1, 2, 3, 4]], b: [[1, 2, 3, 4]], c: [1] } }), 400)).toMatch(/^inputs\.c/);
    expect(expectError(await post('/v2/models/my_model/infer', { inputs: [{ name: 'features', shape: [2, 4], datatype: 'FP32', data: rows[0] }] }), 400)).toMatch(/^inputs\[0\]\.shape/);
    expect(expectError(await post('/v2/models/my_model/infer', { inputs: [{ name: 'features', shape: [2, 8], datatype: 'FP32', data: rows[0] }] }), 400)).toMatch(/^inputs\[0\]\.data/);
    expect(expectError(await post('/v2/models/my_model/infer', { inputs: [{ name: 'features', shape: [1, 8], datatype: 'FP99', data: rows[0] }] }), 400)).toMatch(/^inputs\[0\]\.datatype/);
    expect(expectError(await post('/v2/models/my_model/infer', { inputs: [{ name: 'features', shape: [1, 8], datatype: 'FP32', data: [[1, 2], [3]] }] }), 400)).toMatch(/^inputs\[0\]\.data/);
    expect(expectError(await post('/v2/models/my_model/infer', { inputs: 'x' }), 400)).toMatch(/^inputs/);
    expect(expectError(await post('/v1/models/my_model:predict', { instances: rows }, { 'x-infermesh-timeout-ms': 'soon' }), 400)).toMatch(/x-infermesh-timeout-ms/);

    // Wrong method, unknown paths.
    const wrong = await get('/v1/models/my_model:predict');
    expectError(wrong, 405);
    expect(wrong.allow).toBe('POST');
    expectError(await post('/v1/models/my_model', { instances: rows }), 405);
    expectError(await req('DELETE', '/v2/models/my_model/infer'), 405);
    expectError(await get('/nope'), 404);
    expectError(await get('/v1/models/my_model:classify'), 404);
    expectError(await get('/v2/models/my_model/explain'), 404);
    expectError(await get('/metrics/../v3'), 404);

    // A body over the limit (4 MiB, the router's max message size).
    const huge = JSON.stringify({ instances: [Array.from({ length: 700_000 }, () => 0.123456)] });
    expect(huge.length).toBeGreaterThan(4 * 1024 * 1024);
    expectError(await post('/v1/models/my_model:predict', huge), 413);

    // Still serving, on fresh and reused connections.
    for (let i = 0; i < 3; i++) expectScores((await post('/v1/models/my_model:predict', { instances: rows })).json.predictions, v1);
    expect((await mesh.clients.router.infer('my_model', [{ name: 'features', datatype: 'FP32', shape: [1, 8], data: rows[0]! }])).outputs[0]!.data[0]).toBeCloseTo(v1.forward(rows[0]!)[0]!, 5);
    expect(mesh.router.proc.exitCode).toBeNull();
  });
});

describe('no cross-site scoring', () => {
  it('a POST that is not JSON (what a web page can send without asking first) gets 415; JSON, octet-stream and Triton-style requests are served', async () => {
    const body = JSON.stringify({ instances: rows });
    const send = (headers: Record<string, string>, b: string | Uint8Array = body) => fetch(`${base}/v1/models/my_model:predict`, { method: 'POST', headers, body: b });
    for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const r = await send({ 'content-type': type });
      expect(r.status, type).toBe(415);
      expect((await r.json()) as { error: string }).toEqual({ error: expect.stringMatching(/^content-type: expected application\/json/) });
    }
    // No Content-Type from a page (browsers add Origin to every POST): 415 too.
    expect((await send({ origin: 'https://elsewhere.example' }, new TextEncoder().encode(body))).status).toBe(415);
    // No Content-Type and no Origin: a program such as tritonclient.http in JSON mode, served.
    const bare = await send({}, new TextEncoder().encode(body));
    expect(bare.status).toBe(200);
    expectScores(((await bare.json()) as { predictions: number[][] }).predictions, v1);
    for (const headers of [{ 'content-type': 'application/json; charset=utf-8' }, { 'content-type': 'application/octet-stream' }, { 'inference-header-content-length': String(body.length) }] as Record<string, string>[]) {
      const r = await send(headers, new TextEncoder().encode(body));
      expect(r.status, JSON.stringify(headers)).toBe(200);
      expectScores(((await r.json()) as { predictions: number[][] }).predictions, v1);
    }
    // GETs need no Content-Type.
    expect((await get('/v2/health/ready')).status).toBe(200);
  });
});

describe('request headers reach the routing path', () => {
  it('a canary sticky on an HTTP header keeps each key on one version', async () => {
    await mesh.clients.registry.setCanary('my_model', 2, 50, 'x-customer');
    const one = [rows[1]!];
    const want = { v1: v1.forward(one[0]!)[0]!, v2: v2.forward(one[0]!)[0]! };
    const which = async (key: string) => {
      const a = await post('/v1/models/my_model:predict', { instances: one }, { 'x-customer': key });
      expect(a.status, a.text).toBe(200);
      const p = a.json.predictions[0][0] as number;
      return Math.abs(p - want.v2) < 1e-5 ? 'v2' : Math.abs(p - want.v1) < 1e-5 ? 'v1' : 'other';
    };
    try {
      // Wait for the router to see the canary.
      const until = Date.now() + 15_000;
      const seen = new Set<string>();
      for (let i = 0; seen.size < 2 && Date.now() < until; i++) seen.add(await which(`probe-${i}`));
      expect([...seen].sort()).toEqual(['v1', 'v2']);
      for (const key of ['cust-a', 'cust-b', 'cust-c', 'cust-d']) {
        const first = await which(key);
        for (let i = 0; i < 5; i++) expect(await which(key)).toBe(first);
      }
    } finally {
      await mesh.clients.registry.clearCanary('my_model');
    }
  });
});

describe('a non-Node client', () => {
  it('Python urllib posts the seed-style JSON and reads predictions, errors and 413', () => {
    const script = `
import json, sys, urllib.request, urllib.error
base = sys.argv[1]
rows = json.loads(sys.argv[2])
req = urllib.request.Request(base + "/v1/models/my_model:predict", data=json.dumps({"instances": rows}).encode(), headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as r:
    ok = {"status": r.status, "body": json.load(r)}
try:
    urllib.request.urlopen(urllib.request.Request(base + "/v1/models/nope:predict", data=b'{"instances": [[1]]}', headers={"Content-Type": "application/json"}), timeout=10)
    bad = None
except urllib.error.HTTPError as e:
    bad = {"status": e.code, "body": json.load(e)}
# http.client sends the whole body before reading: the 413 must still arrive (not a broken pipe).
try:
    urllib.request.urlopen(urllib.request.Request(base + "/v1/models/my_model:predict", data=json.dumps({"instances": [[0.5] * 1200000]}).encode(), headers={"Content-Type": "application/json"}), timeout=20)
    big = None
except urllib.error.HTTPError as e:
    big = {"status": e.code, "body": json.load(e)}
print(json.dumps({"ok": ok, "bad": bad, "big": big}))
`;
    const out = execFileSync('/usr/bin/python3', ['-c', script, base, JSON.stringify(rows)], { encoding: 'utf8' });
    type Err = { status: number; body: { error: string } };
    const r = JSON.parse(out) as { ok: { status: number; body: { predictions: number[][] } }; bad: Err; big: Err };
    expect(r.ok.status).toBe(200);
    expectScores(r.ok.body.predictions, v1);
    expect(r.bad.status).toBe(404);
    expect(r.bad.body.error).toMatch(/nope/);
    expect(r.big.status).toBe(413);
    expect(r.big.body.error).toMatch(/exceeds/);
  });
});
