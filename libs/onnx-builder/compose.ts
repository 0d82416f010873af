/**
 * One ONNX graph from several models: a pipeline (each step's outputs feed
 * the next step's inputs) or an ensemble (every part reads the same inputs;
 * their outputs are combined). Every node, initializer and intermediate value
 * of part i is prefixed `p<i>_<label>/`, so names cannot collide; the
 * composite has the first part's inputs and the last part's (pipeline) or
 * the first part's (ensemble) output names. One session runs it all.
 * Errors are RangeErrors whose message says which part and name.
 */
import {
  AttributeProto,
  AttributeProto_AttributeType as AttrType,
  GraphProto,
  ModelProto,
  NodeProto,
  TensorProto_DataType as DataType,
  ValueInfoProto,
} from '../proto/gen/onnx/onnx.js';
import { floatTensor } from './tensor-values.js';

/** One model of a composition. */
export interface ComposePart {
  /** Short label kept in the prefixed names (e.g. `scaler@2`). */
  readonly label: string;
  readonly model: ModelProto;
}

/** How an ensemble combines its parts' outputs. */
export type EnsembleCombine =
  | { readonly kind: 'mean' }
  | { readonly kind: 'max' }
  /** Weighted mean; weights are normalized to sum 1. */
  | { readonly kind: 'weighted'; readonly weights: readonly number[] }
  /** Share of parts voting for each class (argmax), or above `threshold` for one score per row. */
  | { readonly kind: 'vote'; readonly threshold?: number };

const safe = (label: string) => label.replace(/[^A-Za-z0-9_.@-]/g, '_');

function elemTypeOf(v: ValueInfoProto): number {
  return v.type?.value?.$case === 'tensorType' ? v.type.value.value.elemType : 0;
}

function lastDim(v: ValueInfoProto): number | undefined {
  const dims = v.type?.value?.$case === 'tensorType' ? v.type.value.value.shape?.dim : undefined;
  const d = dims?.[dims.length - 1]?.value;
  return dims && dims.length > 1 && d?.$case === 'dimValue' ? d.value : dims?.length === 1 ? 1 : undefined;
}

/** Declared dimensions (undefined where symbolic or unknown). */
function fixedDims(v: ValueInfoProto): (number | undefined)[] {
  const dims = v.type?.value?.$case === 'tensorType' ? (v.type.value.value.shape?.dim ?? []) : [];
  return dims.map((d) => (d.value?.$case === 'dimValue' ? d.value.value : undefined));
}

/** Renames every name of `g` (and of its subgraphs) by `rename`. */
function renameGraph(g: GraphProto, rename: (n: string) => string): void {
  for (const n of g.node) {
    n.input = n.input.map(rename);
    n.output = n.output.map(rename);
    n.name = rename(n.name || `${n.opType}_${n.output[0] ?? ''}`);
    for (const a of n.attribute) {
      if (a.g) renameGraph(a.g, rename);
      for (const sub of a.graphs) renameGraph(sub, rename);
    }
  }
  for (const t of g.initializer) t.name = rename(t.name);
  for (const v of [...g.input, ...g.output, ...g.valueInfo]) v.name = rename(v.name);
}

interface Prepared {
  graph: GraphProto;
  /** The part's declared inputs and outputs before renaming. */
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
}

/**
 * Copies part `i` with every name prefixed, except the names in `bind`
 * (original name → name in the composite).
 */
function prepare(part: ComposePart, i: number, bind: ReadonlyMap<string, string>): Prepared {
  const m = ModelProto.decode(ModelProto.encode(part.model).finish());
  if (!m.graph) throw new RangeError(`part ${i + 1} (${part.label}) has no graph`);
  const inits = new Set(m.graph.initializer.map((t) => t.name));
  const inputs = m.graph.input.filter((v) => !inits.has(v.name)).map((v) => ValueInfoProto.fromPartial(v));
  const outputs = m.graph.output.map((v) => ValueInfoProto.fromPartial(v));
  const prefix = `p${i}_${safe(part.label)}/`;
  renameGraph(m.graph, (n) => (n === '' ? '' : (bind.get(n) ?? prefix + n)));
  return { graph: m.graph, inputs, outputs };
}

/** The composite's opset imports: every part must use the same ai.onnx opset; other domains take the highest. */
function mergedModel(parts: readonly ComposePart[], graph: GraphProto, doc: string): ModelProto {
  const opsets = new Map<string, number>();
  let defaultOpset: number | undefined;
  parts.forEach((p, i) => {
    for (const o of p.model.opsetImport) {
      const domain = o.domain === 'ai.onnx' ? '' : o.domain;
      if (domain === '') {
        if (defaultOpset !== undefined && defaultOpset !== o.version) {
          throw new RangeError(`part ${i + 1} (${p.label}) uses opset ${o.version}, another part opset ${defaultOpset}; parts must share the ai.onnx opset`);
        }
        defaultOpset = o.version;
      }
      opsets.set(domain, Math.max(opsets.get(domain) ?? 0, o.version));
    }
  });
  return ModelProto.fromPartial({
    irVersion: Math.max(...parts.map((p) => p.model.irVersion)),
    producerName: 'infermesh-compose',
    producerVersion: '1',
    docString: doc,
    opsetImport: [...opsets].map(([domain, version]) => ({ domain, version })),
    graph,
  });
}

/** Explicit connection of one pipeline step: input of this step → output of the previous step. */
export type StepMap = Readonly<Record<string, string>>;

/**
 * A pipeline: part 0's inputs are the composite's inputs; each later part's
 * inputs are bound to the previous part's outputs by `maps[i]` (input name →
 * previous output name), else by equal name, else, when the previous part
 * has one output and this part one input, to that output. The composite's
 * outputs are the last part's, under their names.
 */
export function composePipeline(parts: readonly ComposePart[], maps: readonly (StepMap | undefined)[] = []): ModelProto {
  if (parts.length < 2) throw new RangeError('a pipeline needs at least two parts');
  const graph = GraphProto.fromPartial({ name: 'pipeline' });
  let previous: Prepared | null = null;
  let previousNames = new Map<string, string>();
  parts.forEach((part, i) => {
    const src = part.model.graph;
    if (!src) throw new RangeError(`part ${i + 1} (${part.label}) has no graph`);
    const inits = new Set(src.initializer.map((t) => t.name));
    const ins = src.input.filter((v) => !inits.has(v.name));
    const bind = new Map<string, string>();
    if (!previous) for (const v of ins) bind.set(v.name, v.name);
    else {
      const prevOuts: ValueInfoProto[] = previous.outputs;
      for (const v of ins) {
        const explicit = maps[i]?.[v.name];
        const from = explicit ?? (prevOuts.some((o) => o.name === v.name) ? v.name : prevOuts.length === 1 && ins.length === 1 ? prevOuts[0]!.name : undefined);
        const out = from === undefined ? undefined : prevOuts.find((o) => o.name === from);
        if (!out) {
          throw new RangeError(
            `part ${i + 1} (${part.label}) input "${v.name}" has no source: outputs of part ${i} are ${prevOuts.map((o) => `"${o.name}"`).join(', ')}; map it with input=output`,
          );
        }
        const clash = fixedDims(out).find((d, j) => d !== undefined && fixedDims(v)[j] !== undefined && d !== fixedDims(v)[j]);
        if (clash !== undefined || (fixedDims(out).length && fixedDims(v).length && fixedDims(out).length !== fixedDims(v).length)) {
          throw new RangeError(`part ${i + 1} (${part.label}) input "${v.name}" has shape [${fixedDims(v).map((d) => d ?? '?').join(',')}] but "${out.name}" of part ${i} has [${fixedDims(out).map((d) => d ?? '?').join(',')}]`);
        }
        if (elemTypeOf(out) !== elemTypeOf(v)) {
          throw new RangeError(`part ${i + 1} (${part.label}) input "${v.name}" is ${DataType[elemTypeOf(v)]} but "${out.name}" of part ${i} is ${DataType[elemTypeOf(out)]}`);
        }
        bind.set(v.name, previousNames.get(out.name)!);
      }
    }
    const last = i === parts.length - 1;
    if (last) for (const o of src.output) bind.set(o.name, o.name);
    const p = prepare(part, i, bind);
    if (i === 0) graph.input = p.graph.input.filter((v) => !inits.has(v.name) && bind.has(v.name)).map((v) => ({ ...v, name: v.name }));
    graph.node.push(...p.graph.node);
    graph.initializer.push(...p.graph.initializer);
    graph.valueInfo.push(...p.graph.valueInfo);
    if (last) graph.output = p.graph.output;
    previousNames = new Map(p.outputs.map((o, j) => [o.name, p.graph.output[j]!.name]));
    previous = p;
  });
  const inputNames = new Set(graph.input.map((v) => v.name));
  for (const o of graph.output) if (inputNames.has(o.name)) throw new RangeError(`output "${o.name}" of the last part has the name of an input of the first part`);
  return mergedModel(parts, graph, `pipeline of ${parts.map((p) => p.label).join(' → ')}`);
}

const n = (opType: string, input: string[], output: string[], attribute: AttributeProto[] = []): NodeProto =>
  NodeProto.fromPartial({ opType, input, output, attribute, name: `combine/${opType}_${output[0]}` });

/**
 * An ensemble: every part reads the composite's inputs (the first part's;
 * the others' inputs are matched by name, else by position, and must have the
 * same types); output k of every part is combined into output k (the first
 * part's name). Outputs must be float.
 */
export function composeEnsemble(parts: readonly ComposePart[], combine: EnsembleCombine): ModelProto {
  if (parts.length < 2) throw new RangeError('an ensemble needs at least two parts');
  if (combine.kind === 'weighted' && (combine.weights.length !== parts.length || !combine.weights.every((w) => Number.isFinite(w) && w >= 0) || combine.weights.every((w) => w === 0))) {
    throw new RangeError(`weighted needs ${parts.length} finite weights ≥ 0, not all 0`);
  }
  const graph = GraphProto.fromPartial({ name: 'ensemble' });
  const first = parts[0]!.model.graph;
  if (!first) throw new RangeError(`part 1 (${parts[0]!.label}) has no graph`);
  const firstInits = new Set(first.initializer.map((t) => t.name));
  const shared = first.input.filter((v) => !firstInits.has(v.name));
  const outs: string[][] = [];
  parts.forEach((part, i) => {
    const src = part.model.graph;
    if (!src) throw new RangeError(`part ${i + 1} (${part.label}) has no graph`);
    const inits = new Set(src.initializer.map((t) => t.name));
    const ins = src.input.filter((v) => !inits.has(v.name));
    if (ins.length !== shared.length) throw new RangeError(`part ${i + 1} (${part.label}) has ${ins.length} inputs, part 1 has ${shared.length}`);
    const bind = new Map<string, string>();
    ins.forEach((v, j) => {
      const to = shared.find((s) => s.name === v.name) ?? shared[j]!;
      if (elemTypeOf(to) !== elemTypeOf(v)) throw new RangeError(`part ${i + 1} (${part.label}) input "${v.name}" is ${DataType[elemTypeOf(v)]}, "${to.name}" is ${DataType[elemTypeOf(to)]}`);
      bind.set(v.name, to.name);
    });
    if (src.output.length !== first.output.length) throw new RangeError(`part ${i + 1} (${part.label}) has ${src.output.length} outputs, part 1 has ${first.output.length}`);
    src.output.forEach((o, k) => {
      if (elemTypeOf(o) !== DataType.FLOAT) throw new RangeError(`part ${i + 1} (${part.label}) output "${o.name}" is ${DataType[elemTypeOf(o)]}; an ensemble combines FLOAT outputs`);
      if (elemTypeOf(o) !== elemTypeOf(first.output[k]!)) throw new RangeError(`outputs ${k + 1} of the parts differ in type`);
    });
    const p = prepare(part, i, bind);
    graph.node.push(...p.graph.node);
    graph.initializer.push(...p.graph.initializer);
    graph.valueInfo.push(...p.graph.valueInfo);
    outs.push(p.graph.output.map((o) => o.name));
  });
  graph.input = shared.map((v) => ValueInfoProto.fromPartial(v));
  graph.output = first.output.map((v) => ValueInfoProto.fromPartial(v));
  first.output.forEach((o, k) => {
    const members = outs.map((names) => names[k]!);
    const target = o.name;
    switch (combine.kind) {
      case 'mean':
        graph.node.push(n('Mean', members, [target]));
        break;
      case 'max':
        graph.node.push(n('Max', members, [target]));
        break;
      case 'weighted': {
        const total = combine.weights.reduce((a, b) => a + b, 0);
        const scaled = members.map((m, j) => {
          const w = `combine/w${j}_${k}`;
          graph.initializer.push(floatTensor(w, [], new Float32Array([combine.weights[j]! / total])));
          graph.node.push(n('Mul', [m, w], [`${m}__weighted`]));
          return `${m}__weighted`;
        });
        graph.node.push(n('Sum', scaled, [target]));
        break;
      }
      case 'vote': {
        const width = lastDim(o);
        if (width === undefined) throw new RangeError(`vote needs a fixed last dimension on output "${o.name}"`);
        const votes = members.map((m, j) => {
          if (width === 1) {
            const t = `combine/threshold_${k}`;
            if (j === 0) graph.initializer.push(floatTensor(t, [], new Float32Array([combine.threshold ?? 0.5])));
            graph.node.push(n('Greater', [m, t], [`${m}__above`]), n('Cast', [`${m}__above`], [`${m}__vote`], [AttributeProto.fromPartial({ name: 'to', type: AttrType.INT, i: DataType.FLOAT })]));
          } else {
            const depth = `combine/depth_${k}`;
            const onOff = `combine/onoff_${k}`;
            if (j === 0) {
              graph.initializer.push({ ...floatTensor(depth, [1], new Float32Array([width])) }, floatTensor(onOff, [2], new Float32Array([0, 1])));
            }
            graph.node.push(
              n('ArgMax', [m], [`${m}__argmax`], [AttributeProto.fromPartial({ name: 'axis', type: AttrType.INT, i: -1 }), AttributeProto.fromPartial({ name: 'keepdims', type: AttrType.INT, i: 0 })]),
              n('OneHot', [`${m}__argmax`, depth, onOff], [`${m}__vote`], [AttributeProto.fromPartial({ name: 'axis', type: AttrType.INT, i: -1 })]),
            );
          }
          return `${m}__vote`;
        });
        graph.node.push(n('Mean', votes, [target]));
        break;
      }
    }
  });
  return mergedModel(parts, graph, `${combine.kind} ensemble of ${parts.map((p) => p.label).join(', ')}`);
}
