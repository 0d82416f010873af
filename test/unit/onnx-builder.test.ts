import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { ModelProto } from '../../libs/proto/gen/onnx/onnx.js';
import {
  ElemType,
  type FraudModel,
  GraphBuilder,
  boolModel,
  brokenModel,
  customOpModel,
  externalDataModel,
  fp64Model,
  int64Model,
  mlpModel,
  mulberry32,
  ortTypeOf,
  rocAuc,
  slowModel,
  trainFraudModel,
  twoInOutModel,
  wideMlpModel,
} from '../../libs/onnx-builder/index.js';

type Feeds = Record<string, ort.Tensor>;

/** Loads bytes in a real ONNX Runtime session, runs once, releases the session. */
async function runOnce(bytes: Uint8Array, feeds: Feeds, options: ort.InferenceSession.SessionOptions = {}) {
  const session = await ort.InferenceSession.create(Buffer.from(bytes), options);
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

function randomFloats(n: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
}

function expectAllClose(actual: ArrayLike<number>, expected: ArrayLike<number>, digits = 5): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(actual[i]).toBeCloseTo(expected[i]!, digits);
}

describe('GraphBuilder', () => {
  it('writes symbolic and fixed dims, opsets and little-endian raw_data', () => {
    const bytes = new GraphBuilder('g')
      .input('x', ElemType.FLOAT, ['batch', 2])
      .output('y', ElemType.FLOAT, ['batch', 2])
      .initializer('c', ElemType.INT64, [2], new BigInt64Array([1n, 258n]))
      .node('Identity', ['x'], ['y'])
      .toModel({ opset: 17, customOpsetDomains: { 'com.example': 3 } });
    const model = ModelProto.decode(bytes);
    expect(model.irVersion).toBe(8);
    expect(model.opsetImport).toEqual([
      { domain: '', version: 17 },
      { domain: 'com.example', version: 3 },
    ]);
    const type = model.graph!.input[0]!.type!.value!;
    expect(type.value.elemType).toBe(ElemType.FLOAT);
    expect(type.value.shape!.dim.map((d) => d.value)).toEqual([
      { $case: 'dimParam', value: 'batch' },
      { $case: 'dimValue', value: 2 },
    ]);
    expect(Array.from(model.graph!.initializer[0]!.rawData)).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
  });

  it('rejects data that does not match the element type or dims', () => {
    const g = new GraphBuilder('g');
    expect(() => g.initializer('a', ElemType.FLOAT, [2], new Float64Array(2))).toThrow(TypeError);
    expect(() => g.initializer('b', ElemType.FLOAT, [3], new Float32Array(2))).toThrow(RangeError);
  });

  it('maps element types to ONNX Runtime type names', () => {
    expect(ortTypeOf(ElemType.INT64)).toBe('int64');
    expect(ortTypeOf(ElemType.BOOL)).toBe('bool');
    expect(ortTypeOf(ElemType.DOUBLE)).toBe('float64');
  });
});

describe('fixtures run in ONNX Runtime and match plain JS', () => {
  it('mlpModel', async () => {
    const mlp = mlpModel({ inputs: 8, hidden: [16, 4], outputs: 2, seed: 3 });
    const features = randomFloats(3 * 8, 11);
    const out = await runOnce(mlp.bytes, { features: new ort.Tensor('float32', features, [3, 8]) });
    expect(out.score!.dims).toEqual([3, 2]);
    expectAllClose(out.score!.data as Float32Array, mlp.forward(features));
  });

  it('mlpModel without sigmoid, and deterministic per seed', async () => {
    const mlp = mlpModel({ hidden: [], sigmoid: false });
    const features = randomFloats(2 * 8, 12);
    const out = await runOnce(mlp.bytes, { features: new ort.Tensor('float32', features, [2, 8]) });
    expectAllClose(out.score!.data as Float32Array, mlp.forward(features));
    expect(mlpModel().bytes).toEqual(mlpModel().bytes);
    expect(mlpModel({ seed: 2 }).bytes).not.toEqual(mlpModel().bytes);
  });

  it('wideMlpModel', async () => {
    const wide = wideMlpModel();
    expect(wide.layers.map((l) => [l.inDim, l.outDim])).toEqual([[256, 1024], [1024, 1024], [1024, 1]]);
    const features = randomFloats(4 * 256, 13);
    const out = await runOnce(wide.bytes, { features: new ort.Tensor('float32', features, [4, 256]) });
    expect(out.score!.dims).toEqual([4, 1]);
    expectAllClose(out.score!.data as Float32Array, wide.forward(features), 4);
  });

  it('twoInOutModel', async () => {
    const a = Float32Array.from([0.5, 1, 1.5, 2, -1, -2, -3, -4]);
    const b = BigInt64Array.from([1n, 2n, 3n, 4n, 10n, 20n, 30n, -40n]);
    const out = await runOnce(twoInOutModel().bytes, {
      a: new ort.Tensor('float32', a, [2, 4]),
      b: new ort.Tensor('int64', b, [2, 4]),
    });
    expectAllClose(out.sum!.data as Float32Array, [1.5, 3, 4.5, 6, 9, 18, 27, -44]);
    expect(out.count!.dims).toEqual([2, 1]);
    expect(out.count!.type).toBe('int64');
    expect(Array.from(out.count!.data as BigInt64Array)).toEqual([10n, 20n]);
  });

  it('int64Model keeps values beyond 2^53 exact', async () => {
    const x = BigInt64Array.from([1n, -2n, 2n ** 60n, 0n, 7n, -(2n ** 55n)]);
    const out = await runOnce(int64Model().bytes, { x: new ort.Tensor('int64', x, [2, 3]) });
    expect(Array.from(out.y!.data as BigInt64Array)).toEqual(Array.from(x, (v) => v * 2n));
  });

  it('fp64Model', async () => {
    const x = Float64Array.from([0, 1e-12, -1.5, 1e300]);
    const out = await runOnce(fp64Model().bytes, { x: new ort.Tensor('float64', x, [2, 2]) });
    expect(out.y!.type).toBe('float64');
    expect(Array.from(out.y!.data as Float64Array)).toEqual(Array.from(x, (v) => v + 1.5));
  });

  it('boolModel', async () => {
    const x = [true, false, true, false, false, true];
    const out = await runOnce(boolModel().bytes, { x: new ort.Tensor('bool', Uint8Array.from(x, Number), [2, 3]) });
    expect(out.y!.type).toBe('bool');
    expect(Array.from(out.y!.data as Uint8Array, Boolean)).toEqual(x.map((v) => !v));
    expect(out.yi!.type).toBe('int32');
    expect(Array.from(out.yi!.data as Int32Array)).toEqual(x.map(Number));
  });

  it('slowModel computes x + 1 and takes time', async () => {
    const millis = 50;
    const slow = slowModel({ millis });
    const session = await ort.InferenceSession.create(Buffer.from(slow.bytes), { intraOpNumThreads: 1, interOpNumThreads: 1 });
    try {
      const x = new ort.Tensor('float32', Float32Array.from([1, -2.5, 40]), [3, 1]);
      await session.run({ x });
      const started = performance.now();
      const out = await session.run({ x });
      const elapsed = performance.now() - started;
      console.log(`slowModel({ millis: ${millis} }): ${elapsed.toFixed(1)} ms per run, ${slow.matmuls} MatMuls`);
      expect(Array.from(out.y!.data as Float32Array)).toEqual([2, -1.5, 41]);
      // Loose: only "clearly slow"; the real figure depends on the host's CPU.
      expect(elapsed).toBeGreaterThan(millis / 5);
    } finally {
      await session.release();
    }
  });
});

describe('hostile fixtures are rejected by ONNX Runtime', () => {
  it.each([
    ['brokenModel type-mismatch', () => brokenModel(), /different types/],
    ['brokenModel unknown-op', () => brokenModel({ reason: 'unknown-op' }), /NoSuchOperator/],
    ['customOpModel', () => customOpModel(), /com\.evil/],
    ['externalDataModel ../../etc/passwd', () => externalDataModel('../../etc/passwd'), /external data/i],
    ['externalDataModel /etc/passwd', () => externalDataModel('/etc/passwd'), /external data/i],
  ])('%s', async (_name, make, why) => {
    const bytes = make().bytes;
    // Still a well-formed ModelProto: the failure is ONNX Runtime's, not the decoder's.
    expect(ModelProto.decode(bytes).graph!.node.length).toBeGreaterThan(0);
    // The pattern only pins the fixture to the failure it documents.
    await expect(ort.InferenceSession.create(Buffer.from(bytes))).rejects.toThrow(why);
  });

  it('declares the custom domain and the external location it claims', () => {
    expect(ModelProto.decode(customOpModel().bytes).opsetImport).toContainEqual({ domain: 'com.evil', version: 1 });
    const w = ModelProto.decode(externalDataModel('../../etc/passwd').bytes).graph!.initializer[0]!;
    expect(w.dataLocation).toBe(1);
    expect(w.externalData).toContainEqual({ key: 'location', value: '../../etc/passwd' });
  });
});

describe('trainFraudModel', () => {
  let fraud: FraudModel;
  beforeAll(() => {
    fraud = trainFraudModel();
  });

  it('learns a useful detector from a realistic fraud rate', () => {
    expect(fraud.featureNames).toHaveLength(8);
    expect(fraud.fraudRate).toBeGreaterThan(0.02);
    expect(fraud.fraudRate).toBeLessThan(0.05);
    expect(fraud.auc).toBeGreaterThan(0.8);
    expect(fraud.accuracy).toBeGreaterThan(0.9);
  });

  it('scores fresh rows in ONNX Runtime with AUC > 0.8, matching the JS weights', async () => {
    const { rows, labels } = fraud.sampleLabeledRows(5000, 4242);
    const out = await runOnce(fraud.bytes, {
      features: new ort.Tensor('float32', Float32Array.from(rows.flat()), [rows.length, 8]),
    });
    const scores = out.fraud_probability!.data as Float32Array;
    expect(out.fraud_probability!.dims).toEqual([5000, 1]);
    expect(rocAuc(scores, labels)).toBeGreaterThan(0.8);
    for (let i = 0; i < 50; i++) expect(scores[i]).toBeCloseTo(fraud.predict(rows[i]!), 5);
  });

  it('samples demo rows deterministically per seed', () => {
    const rows = fraud.sampleRows(20, 1);
    expect(rows).toHaveLength(20);
    expect(rows.every((r) => r.length === 8 && r.every(Number.isFinite))).toBe(true);
    expect(fraud.sampleRows(20, 1)).toEqual(rows);
    expect(fraud.sampleRows(20, 2)).not.toEqual(rows);
  });
});

describe('rocAuc', () => {
  it('is 1 when ranked right, 0 when ranked wrong, 0.5 on ties', () => {
    expect(rocAuc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])).toBe(1);
    expect(rocAuc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])).toBe(0);
    expect(rocAuc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1])).toBe(0.5);
  });
});
