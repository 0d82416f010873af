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

/** How {@link quantizeInt8} treats one MatMul/Gemm. */
export type Int8Mode =
  /** int8 weights and activations quantized per call (DynamicQuantizeLinear → MatMulInteger): int8 arithmetic. */
  | 'dynamic'
  /** int8 weights only, dequantized once at load (Cast → Mul, folded by ONNX Runtime): float arithmetic, no activation error. */
  | 'weight'
  /** Left as it is. */
  | 'float';

/** One quantizable MatMul/Gemm as {@link Int8Options.plan} sees it. */
export interface Int8Site {
  readonly node: NodeProto;
  /** Position among the quantizable nodes (graph order), and how many there are. */
  readonly index: number;
  readonly count: number;
  /** Values of its weight, and of all quantizable nodes' weights. */
  readonly values: number;
  readonly total: number;
}

/** Options for {@link quantizeInt8}. */
export interface Int8Options {
  /** Weights with fewer values stay float (their activations' quantization costs more than it saves). Default 256. */
  readonly minValues?: number;
  /**
   * Keep the last quantizable MatMul/Gemm (the head that makes the decision)
   * free of activation quantization: the error there moves decisions most.
   * Default true (see {@link defaultInt8Plan}); with `plan` given, `plan`
   * decides.
   */
  readonly keepHead?: boolean;
  /** The mode of each quantizable node (default: {@link defaultInt8Plan}; a node `plan` gives 'float' stays as it is). */
  readonly plan?: (site: Int8Site) => Int8Mode;
  /**
   * Calibration: per name of a MatMul/Gemm's first input, XᵀX over rows of
   * that input (k × k, row-major, k its last dimension; see
   * {@link inputGram}). A node whose input has one is rounded GPTQ-style:
   * row by row, each row's rounding error is compensated on the rows not yet
   * rounded, weighted by how the input's values go together, so the
   * layer's output moves least on inputs like those rows.
   */
  readonly gram?: ReadonlyMap<string, Float64Array>;
  /** Rounded weights kept across calls on the same model (GPTQ rounding of a large weight takes seconds). */
  readonly cache?: Map<string, Int8Array>;
}

/** The MatMul/Gemm nodes {@link quantizeInt8} would quantize (graph order), with their weights' sizes. */
export function int8Sites(model: ModelProto, minValues = 256): { node: NodeProto; values: number }[] {
  const g = graphOf(model);
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  const graphInputs = new Set(g.input.map((i) => i.name));
  const out: { node: NodeProto; values: number }[] = [];
  for (const n of g.node) {
    const ok = n.domain === '' && (n.opType === 'MatMul' || (n.opType === 'Gemm' && attrInt(n, 'transA', 0) === 0));
    const w = ok ? inits.get(n.input[1] ?? '') : undefined;
    const v = w && !graphInputs.has(w.name) && w.dims.length === 2 ? floatValues(w) : null;
    if (v && v.length >= minValues) out.push({ node: n, values: v.length });
  }
  return out;
}

/** Share of all quantizable weights under which the head stays float in {@link defaultInt8Plan}. */
export const INT8_SMALL_HEAD_SHARE = 0.02;

/**
 * The default plan: activations quantized per call (dynamic int8) in every
 * node but the head (the last quantizable node, which makes the decision):
 * the head stays float when it holds under 2 % of the weights, else gets int8
 * weights dequantized at load ('weight'). `keepHead: false` quantizes the
 * head's activations too.
 */
export function defaultInt8Plan(site: Int8Site): Int8Mode {
  if (site.index !== site.count - 1) return 'dynamic';
  return site.values < site.total * INT8_SMALL_HEAD_SHARE ? 'float' : 'weight';
}

/**
 * int8 quantization of the weights of MatMul and Gemm (transA = 0) nodes
 * whose second input is a 2-D float initializer of at least `minValues`
 * values: weights stored int8, symmetric per output column (zero point 0,
 * scale = max|w| / 127). Per node (see {@link Int8Mode} and `plan`):
 * - 'dynamic': activations quantized per call by DynamicQuantizeLinear
 *   (uint8); the node becomes DynamicQuantizeLinear → MatMulInteger → Cast
 *   → Mul(a_scale · w_scale) (→ Add bias for Gemm), the pattern ONNX
 *   Runtime fuses into its DynamicQuantizeMatMul kernel;
 * - 'weight': the int8 weight is turned back into float by Cast → Mul(scale)
 *   on initializers only, which ONNX Runtime folds at load: the file holds
 *   int8, the node runs in float.
 * Needs opset ≥ 11 (RangeError otherwise).
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
  const weightOf = (n: NodeProto): Float32Array | null => {
    const isMatMul = n.opType === 'MatMul' && n.domain === '';
    const isGemm = n.opType === 'Gemm' && n.domain === '' && attrInt(n, 'transA', 0) === 0;
    const wName = n.input[1] ?? '';
    const w = isMatMul || isGemm ? inits.get(wName) : undefined;
    const wv = w && !graphInputs.has(wName) && w.dims.length === 2 ? floatValues(w) : null;
    return wv && wv.length >= minValues ? wv : null;
  };
  const sites = g.node.filter((n) => weightOf(n) !== null);
  const total = sites.reduce((t, n) => t + weightOf(n)!.length, 0);
  const basePlan = o.plan ?? defaultInt8Plan;
  const plan = (site: Int8Site): Int8Mode => (!o.plan && o.keepHead === false && site.index === site.count - 1 ? 'dynamic' : basePlan(site));
  for (const n of g.node) {
    const index = sites.indexOf(n);
    const wv = index < 0 ? null : weightOf(n);
    const mode = wv ? plan({ node: n, index, count: sites.length, values: wv.length, total }) : 'float';
    if (!wv || mode === 'float') {
      out.push(n);
      continue;
    }
    const wName = n.input[1]!;
    const w = inits.get(wName)!;
    const isGemm = n.opType === 'Gemm';
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
    const gram = o.gram?.get(n.input[0] ?? '');
    const calibrated = gram !== undefined && gram.length === k * k;
    const cacheKey = `${wName}\u0000${calibrated ? n.input[0] : ''}`;
    let q = o.cache?.get(cacheKey);
    if (!q) {
      q = calibrated ? roundGptq(k, cols, at, scales, gram) : new Int8Array(k * cols);
      if (!calibrated) {
        for (let r = 0; r < k; r++) {
          for (let c = 0; c < cols; c++) q[r * cols + c] = Math.max(-127, Math.min(127, Math.round(at(r, c) / scales[c]!)));
        }
      }
      o.cache?.set(cacheKey, q);
    }
    const base = n.output[0]!;
    const qName = `${wName}__int8`;
    const sName = `${wName}__scale`;
    if (!inits.has(qName)) {
      // Stored [k, cols] (MatMul's layout) whatever the Gemm's transB; the scale per column.
      added.push(int8Tensor(qName, [k, cols], q), floatTensor(sName, [cols], alpha === 1 ? scales : scales.map((x) => x * alpha)));
      inits.set(qName, added[added.length - 2]!);
      tensors++;
      values += q.length;
    }
    if (mode === 'weight') {
      // Float weight [k, cols] again, computed from initializers only (folded at load); the node reads it as MatMul would.
      const deq = `${wName}__dequantized`;
      if (!inits.has(deq) && !quantized.has(deq)) {
        quantized.set(deq, { q: deq, scale: '', zp: '' });
        out.push(node('Cast', [qName], [`${wName}__int8_f32`], [intAttr('to', DataType.FLOAT)]), node('Mul', [`${wName}__int8_f32`, sName], [deq]));
      }
      const inputs = [...n.input];
      inputs[1] = deq;
      const attribute = isGemm ? [...n.attribute.filter((a) => a.name !== 'transB' && a.name !== 'alpha'), intAttr('transB', 0)] : n.attribute;
      out.push(NodeProto.fromPartial({ ...n, input: inputs, attribute }));
    } else {
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
    }
    const left = (uses.get(wName) ?? 1) - 1;
    uses.set(wName, left);
    if (left === 0) dropped.add(wName);
  }
  g.node = out;
  g.initializer = [...g.initializer.filter((t) => !dropped.has(t.name)), ...added];
  return { model, tensors, values };
}

/**
 * XᵀX of `rows` rows of `k` values (row-major), added into `into` (k × k,
 * row-major): the calibration {@link Int8Options.gram} takes.
 */
export function inputGram(values: ArrayLike<number>, k: number, into: Float64Array = new Float64Array(k * k)): Float64Array {
  const rows = Math.floor(values.length / k);
  const x = new Float64Array(k);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < k; i++) x[i] = values[r * k + i]!;
    for (let i = 0; i < k; i++) {
      const xi = x[i]!;
      if (xi === 0) continue;
      const row = i * k;
      for (let j = i; j < k; j++) into[row + j]! += xi * x[j]!;
    }
  }
  // Mirror the upper triangle.
  for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) into[j * k + i] = into[i * k + j]!;
  return into;
}

/** In-place Cholesky factor (lower, row-major) of a symmetric positive definite k × k matrix; false if it is not. */
function cholesky(a: Float64Array, k: number): boolean {
  for (let j = 0; j < k; j++) {
    let d = a[j * k + j]!;
    for (let p = 0; p < j; p++) d -= a[j * k + p]! * a[j * k + p]!;
    if (!(d > 0)) return false;
    const l = Math.sqrt(d);
    a[j * k + j] = l;
    for (let i = j + 1; i < k; i++) {
      let v = a[i * k + j]!;
      for (let p = 0; p < j; p++) v -= a[i * k + p]! * a[j * k + p]!;
      a[i * k + j] = v / l;
    }
    for (let p = j + 1; p < k; p++) a[j * k + p] = 0;
  }
  return true;
}

/**
 * Damping of GPTQ's XᵀX, as a share of its mean diagonal. GPTQ uses 1 % with
 * far more rows than inputs; with a few hundred calibration rows for 1024
 * inputs (the CNN's first Gemm) 10 % kept the held-out agreement higher
 * (min 99.5 % vs 99.0 % over 20 draws).
 */
const GPTQ_DAMPING = 0.1;

/**
 * GPTQ rounding (Frantar et al. 2022) of a k × cols weight with fixed
 * per-column scales: H = XᵀX + GPTQ_DAMPING; U the upper Cholesky factor of
 * H⁻¹; row i is rounded, and its error / U[i][i] is spread on rows > i by
 * U[i][·]. Falls back to plain rounding when H is not positive definite.
 */
function roundGptq(k: number, cols: number, at: (r: number, c: number) => number, scales: Float32Array, gram: Float64Array): Int8Array {
  const q = new Int8Array(k * cols);
  const w = new Float64Array(k * cols);
  for (let r = 0; r < k; r++) for (let c = 0; c < cols; c++) w[r * cols + c] = at(r, c);
  const h = Float64Array.from(gram);
  let mean = 0;
  for (let i = 0; i < k; i++) mean += h[i * k + i]! / k;
  for (let i = 0; i < k; i++) {
    // An input that is always 0: its weights do not matter.
    if (h[i * k + i] === 0) h[i * k + i] = 1;
    h[i * k + i]! += GPTQ_DAMPING * (mean || 1);
  }
  const u = h;
  let ok = cholesky(u, k);
  if (ok) {
    // H⁻¹ from L (L Lᵀ = H): invert L (lower), H⁻¹ = L⁻ᵀ L⁻¹, then its Cholesky factor; U = that factor's transpose.
    const li = new Float64Array(k * k);
    for (let i = 0; i < k; i++) {
      li[i * k + i] = 1 / u[i * k + i]!;
      for (let j = 0; j < i; j++) {
        let v = 0;
        for (let p = j; p < i; p++) v -= u[i * k + p]! * li[p * k + j]!;
        li[i * k + j] = v / u[i * k + i]!;
      }
    }
    const inv = new Float64Array(k * k);
    for (let i = 0; i < k; i++) {
      for (let j = 0; j <= i; j++) {
        let v = 0;
        for (let p = i; p < k; p++) v += li[p * k + i]! * li[p * k + j]!;
        inv[i * k + j] = v;
        inv[j * k + i] = v;
      }
    }
    ok = cholesky(inv, k);
    if (ok) {
      // inv holds L2 (lower, L2 L2ᵀ = H⁻¹): GPTQ's upper factor U (H⁻¹ = Uᵀ U) is L2ᵀ, U[i][j] = inv[j][i].
      const upper = new Float64Array(k * k);
      for (let i = 0; i < k; i++) for (let j = i; j < k; j++) upper[i * k + j] = inv[j * k + i]!;
      const err = new Float64Array(cols);
      for (let i = 0; i < k; i++) {
        const d = upper[i * k + i]!;
        for (let c = 0; c < cols; c++) {
          const s = scales[c]!;
          const v = Math.max(-127, Math.min(127, Math.round(w[i * cols + c]! / s)));
          q[i * cols + c] = v;
          err[c] = (w[i * cols + c]! - v * s) / d;
        }
        for (let j = i + 1; j < k; j++) {
          const f = upper[i * k + j]!;
          if (f === 0) continue;
          const row = j * cols;
          for (let c = 0; c < cols; c++) w[row + c]! -= f * err[c]!;
        }
      }
      return q;
    }
  }
  for (let r = 0; r < k; r++) for (let c = 0; c < cols; c++) q[r * cols + c] = Math.max(-127, Math.min(127, Math.round(at(r, c) / scales[c]!)));
  return q;
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
