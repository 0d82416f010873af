/**
 * Cheaper versions of a model, made over the ONNX protobuf in TypeScript:
 * int8 dynamic quantization of MatMul/Gemm weights, float16 weight storage
 * and magnitude pruning. Each returns a new ModelProto (the input is not
 * changed) and what it touched; none changes the model's inputs or outputs.
 */
import {
  AttributeProto,
  AttributeProto_AttributeType as AttrType,
  GraphProto,
  ModelProto,
  NodeProto,
  TensorProto,
  TensorProto_DataType as DataType,
} from '../proto/gen/onnx/onnx.js';
import { float16Tensor, floatTensor, floatValues, int8Tensor } from './tensor-values.js';

/** What a transform did. */
export interface TransformResult {
  readonly model: ModelProto;
  /** Initializers rewritten. */
  readonly tensors: number;
  /** Weights (values) rewritten. */
  readonly values: number;
}

function copy(model: ModelProto): ModelProto {
  return ModelProto.decode(ModelProto.encode(model).finish());
}

function graphOf(model: ModelProto): GraphProto {
  if (!model.graph) throw new RangeError('onnx-builder: the model has no graph');
  return model.graph;
}

function attrInt(node: NodeProto, name: string, otherwise: number): number {
  const a = node.attribute.find((x) => x.name === name);
  return a ? a.i : otherwise;
}

function attrFloat(node: NodeProto, name: string, otherwise: number): number {
  const a = node.attribute.find((x) => x.name === name);
  return a ? a.f : otherwise;
}

/** How many times each name is read by a node, in the graph and every subgraph below it. */
function useCounts(g: GraphProto, into = new Map<string, number>()): Map<string, number> {
  for (const n of g.node) {
    for (const i of n.input) if (i) into.set(i, (into.get(i) ?? 0) + 1);
    for (const a of n.attribute) {
      if (a.g) useCounts(a.g, into);
      for (const sub of a.graphs) useCounts(sub, into);
    }
  }
  for (const o of g.output) into.set(o.name, (into.get(o.name) ?? 0) + 1);
  return into;
}

function defaultOpset(model: ModelProto): number {
  return model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 0;
}

const node = (opType: string, input: string[], output: string[], attribute: AttributeProto[] = [], name = ''): NodeProto =>
  NodeProto.fromPartial({ opType, input, output, attribute, name: name || `${opType}_${output[0]}` });
const intAttr = (name: string, i: number) => AttributeProto.fromPartial({ name, type: AttrType.INT, i });

/** Options for {@link quantizeInt8}. */
export interface Int8Options {
  /** Weights with fewer values stay float (their activations' quantization costs more than it saves). Default 256. */
  readonly minValues?: number;
  /**
   * Keep the last quantizable MatMul/Gemm (the head that makes the decision)
   * in float: the quantization error there moves decisions most and it holds
   * few of the weights. Default true.
   */
  readonly keepHead?: boolean;
}

/**
 * Dynamic int8 quantization of the weights of MatMul and Gemm (transA = 0)
 * nodes whose second input is a 2-D float initializer: weights stored int8,
 * symmetric per output column (scale = max|w| / 127, zero point 0);
 * activations quantized per call by DynamicQuantizeLinear (uint8). Each
 * node becomes DynamicQuantizeLinear → MatMulInteger → Cast → Mul(a_scale ·
 * w_scale) (→ Add bias for Gemm), the pattern ONNX Runtime fuses into its
 * DynamicQuantizeMatMul kernel. Needs opset ≥ 11 (RangeError otherwise).
 */
export function quantizeInt8(source: ModelProto, o: Int8Options = {}): TransformResult {
  const minValues = o.minValues ?? 256;
  if (defaultOpset(source) < 11) throw new RangeError('onnx-builder: int8 quantization needs opset 11 or later');
  const model = copy(source);
  const g = graphOf(model);
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  const graphInputs = new Set(g.input.map((i) => i.name));
  const uses = useCounts(g);
  const quantized = new Map<string, { q: string; scale: string; zp: string }>();
  const out: NodeProto[] = [];
  const added: TensorProto[] = [];
  const dropped = new Set<string>();
  let tensors = 0;
  let values = 0;
  const candidate = (n: NodeProto) => (n.opType === 'MatMul' || (n.opType === 'Gemm' && attrInt(n, 'transA', 0) === 0)) && n.domain === '' && (floatValues(inits.get(n.input[1] ?? '') ?? TensorProto.fromPartial({}))?.length ?? 0) >= minValues;
  const head = o.keepHead === false ? undefined : [...g.node].reverse().find(candidate);
  for (const n of g.node) {
    if (n === head) {
      out.push(n);
      continue;
    }
    const isMatMul = n.opType === 'MatMul' && n.domain === '';
    const isGemm = n.opType === 'Gemm' && n.domain === '' && attrInt(n, 'transA', 0) === 0;
    const wName = n.input[1] ?? '';
    const w = isMatMul || isGemm ? inits.get(wName) : undefined;
    const wv = w && !graphInputs.has(wName) && w.dims.length === 2 ? floatValues(w) : null;
    if (!w || !wv || wv.length < minValues) {
      out.push(n);
      continue;
    }
    const transB = isGemm && attrInt(n, 'transB', 0) === 1;
    const alpha = isGemm ? attrFloat(n, 'alpha', 1) : 1;
    const [d0, d1] = w.dims as [number, number];
    const k = transB ? d1 : d0;
    const cols = transB ? d0 : d1;
    const at = (r: number, c: number) => (transB ? wv[c * d1 + r]! : wv[r * d1 + c]!);
    const scales = new Float32Array(cols);
    for (let c = 0; c < cols; c++) {
      let m = 0;
      for (let r = 0; r < k; r++) m = Math.max(m, Math.abs(at(r, c)));
      scales[c] = m > 0 ? m / 127 : 1;
    }
    const q = new Int8Array(k * cols);
    for (let r = 0; r < k; r++) {
      for (let c = 0; c < cols; c++) q[r * cols + c] = Math.max(-127, Math.min(127, Math.round(at(r, c) / scales[c]!)));
    }
    const base = n.output[0]!;
    const qName = `${wName}__int8`;
    const sName = `${wName}__scale`;
    if (!inits.has(qName)) {
      added.push(int8Tensor(qName, [k, cols], q), floatTensor(sName, [cols], alpha === 1 ? scales : scales.map((s) => s * alpha)));
      inits.set(qName, added[added.length - 2]!);
      tensors++;
      values += q.length;
    }
    const a = n.input[0]!;
    let aq = quantized.get(a);
    if (!aq) {
      aq = { q: `${a}__q`, scale: `${a}__q_scale`, zp: `${a}__q_zp` };
      quantized.set(a, aq);
      out.push(node('DynamicQuantizeLinear', [a], [aq.q, aq.scale, aq.zp]));
    }
    out.push(
      node('MatMulInteger', [aq.q, qName, aq.zp], [`${base}__i32`]),
      node('Cast', [`${base}__i32`], [`${base}__f32`], [intAttr('to', DataType.FLOAT)]),
      node('Mul', [aq.scale, sName], [`${base}__rescale`]),
    );
    const bias = isGemm ? (n.input[2] ?? '') : '';
    if (!bias) out.push(node('Mul', [`${base}__f32`, `${base}__rescale`], [base], [], n.name));
    else {
      out.push(node('Mul', [`${base}__f32`, `${base}__rescale`], [`${base}__mm`]));
      const beta = attrFloat(n, 'beta', 1);
      let c = bias;
      if (beta !== 1) {
        const cv = inits.get(bias) ? floatValues(inits.get(bias)!) : null;
        if (cv) {
          c = `${bias}__beta`;
          added.push(floatTensor(c, inits.get(bias)!.dims, cv.map((v) => v * beta)));
        } else {
          added.push(floatTensor(`${base}__beta`, [], new Float32Array([beta])));
          out.push(node('Mul', [bias, `${base}__beta`], [`${base}__c`]));
          c = `${base}__c`;
        }
      }
      out.push(node('Add', [`${base}__mm`, c], [base], [], n.name));
    }
    const left = (uses.get(wName) ?? 1) - 1;
    uses.set(wName, left);
    if (left === 0) dropped.add(wName);
  }
  g.node = out;
  g.initializer = [...g.initializer.filter((t) => !dropped.has(t.name)), ...added];
  return { model, tensors, values };
}

/** Options for {@link weightsToFp16}. */
export interface Fp16Options {
  /** Initializers with fewer values stay float32. Default 16. */
  readonly minValues?: number;
}

/**
 * Stores float initializers as float16, each followed by a Cast back to
 * float: the file holds half the bytes, inputs, outputs and arithmetic stay
 * float32 (ONNX Runtime folds the Casts when it loads the model, so it runs
 * at float32 speed). Tensors with a value beyond float16's range stay float32.
 */
export function weightsToFp16(source: ModelProto, o: Fp16Options = {}): TransformResult {
  const minValues = o.minValues ?? 16;
  const model = copy(source);
  const g = graphOf(model);
  const graphInputs = new Set(g.input.map((i) => i.name));
  const casts: NodeProto[] = [];
  let tensors = 0;
  let values = 0;
  g.initializer = g.initializer.map((t) => {
    const v = graphInputs.has(t.name) ? null : floatValues(t);
    if (!v || v.length < minValues || v.some((x) => Math.abs(x) > 65504)) return t;
    tensors++;
    values += v.length;
    casts.push(node('Cast', [`${t.name}__fp16`], [t.name], [intAttr('to', DataType.FLOAT)]));
    return float16Tensor(`${t.name}__fp16`, t.dims, v);
  });
  g.node = [...casts, ...g.node];
  return { model, tensors, values };
}

/** What {@link pruneWeights} did: the share of the weights it looked at that are zero now. */
export interface PruneResult extends TransformResult {
  readonly sparsity: number;
}

/**
 * Magnitude pruning: in each weight tensor of a MatMul, Gemm or Conv (their
 * second input, a float initializer), the `sparsity` share of values with
 * the smallest magnitude becomes 0. The file keeps its size (dense
 * raw_data) and ONNX Runtime's dense kernels run no faster; the bytes
 * compress better. RangeError unless 0 ≤ sparsity < 1.
 */
export function pruneWeights(source: ModelProto, sparsity: number): PruneResult {
  if (!(sparsity >= 0 && sparsity < 1)) throw new RangeError('onnx-builder: sparsity must be in [0, 1)');
  const model = copy(source);
  const g = graphOf(model);
  const weights = new Set(g.node.filter((n) => n.domain === '' && ['MatMul', 'Gemm', 'Conv'].includes(n.opType)).map((n) => n.input[1] ?? ''));
  let tensors = 0;
  let values = 0;
  let zeros = 0;
  g.initializer = g.initializer.map((t) => {
    const v = weights.has(t.name) ? floatValues(t) : null;
    if (!v) return t;
    const drop = Math.floor(v.length * sparsity);
    if (drop > 0) {
      const threshold = Float32Array.from(v, Math.abs).sort()[drop - 1]!;
      let left = drop;
      // Values at the threshold go first come first, so exactly `drop` values become 0.
      for (let i = 0; i < v.length && left > 0; i++) {
        if (Math.abs(v[i]!) < threshold) {
          v[i] = 0;
          left--;
        }
      }
      for (let i = 0; i < v.length && left > 0; i++) {
        if (v[i] !== 0 && Math.abs(v[i]!) === threshold) {
          v[i] = 0;
          left--;
        }
      }
    }
    tensors++;
    values += v.length;
    for (const x of v) if (x === 0) zeros++;
    return floatTensor(t.name, t.dims, v);
  });
  return { model, tensors, values, sparsity: values ? zeros / values : 0 };
}
