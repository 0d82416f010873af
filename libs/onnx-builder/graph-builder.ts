import {
  AttributeProto,
  AttributeProto_AttributeType as AttrType,
  GraphProto,
  ModelProto,
  NodeProto,
  TensorProto,
  ValueInfoProto,
} from '../proto/gen/onnx/onnx.js';
import { type ElemType, type TensorData, toRawData } from './elem-type.js';

/** A dimension: a number is fixed, a string is symbolic (dim_param), e.g. 'batch'. */
export type Dim = number | string;

/** A constant tensor, for `initializer` and tensor-valued attributes. */
export interface TensorSpec {
  readonly elemType: ElemType;
  readonly dims: readonly number[];
  readonly data: TensorData;
}

/**
 * A node attribute. Tagged, because a bare `1` cannot say whether the
 * operator wants an INT or a FLOAT and ONNX Runtime rejects the wrong one.
 */
export type AttrValue =
  | { readonly float: number }
  | { readonly int: number }
  | { readonly floats: readonly number[] }
  | { readonly ints: readonly number[] }
  | { readonly string: string }
  | { readonly tensor: TensorSpec }
  | { readonly graph: GraphProto };

/** Options for {@link GraphBuilder.toModel}. */
export interface ModelOptions {
  /** Version of the default ('ai.onnx') opset. Default 17. */
  readonly opset?: number;
  /** ONNX IR version. Default 8 (the one that goes with opset 17). */
  readonly irVersion?: number;
  /** ModelProto.domain, e.g. 'com.example.fraud'. */
  readonly domain?: string;
  /** Extra opset_import entries, domain → version, e.g. { 'com.evil': 1 }. */
  readonly customOpsetDomains?: Readonly<Record<string, number>>;
  /** ModelProto.metadata_props. */
  readonly metadata?: Readonly<Record<string, string>>;
  readonly modelVersion?: number;
  readonly docString?: string;
}

/** Options for {@link GraphBuilder.node}. */
export interface NodeOptions {
  /** Operator domain; '' is the default ONNX domain. */
  readonly domain?: string;
  /** Node name; defaults to `<opType>_<index>`. */
  readonly name?: string;
}

const utf8 = new TextEncoder();

/** Builds a TensorProto with little-endian raw_data. Throws TypeError/RangeError on bad data. */
export function tensorProto(name: string, spec: TensorSpec): TensorProto {
  const count = spec.dims.reduce((a, b) => a * b, 1);
  if (count !== spec.data.length) {
    throw new RangeError(
      `onnx-builder: tensor '${name}' has dims [${spec.dims.join(', ')}] (${count} elements) but ${spec.data.length} values`,
    );
  }
  return TensorProto.fromPartial({
    name,
    dims: [...spec.dims],
    dataType: spec.elemType,
    rawData: toRawData(spec.elemType, spec.data),
  });
}

function valueInfo(name: string, elemType: ElemType, dims: readonly Dim[]): ValueInfoProto {
  return ValueInfoProto.fromPartial({
    name,
    type: {
      value: {
        $case: 'tensorType',
        value: {
          elemType,
          shape: {
            dim: dims.map((d) =>
              typeof d === 'number' ? { value: { $case: 'dimValue', value: d } } : { value: { $case: 'dimParam', value: d } },
            ),
          },
        },
      },
    },
  });
}

function attribute(name: string, v: AttrValue): AttributeProto {
  if ('float' in v) return AttributeProto.fromPartial({ name, type: AttrType.FLOAT, f: v.float });
  if ('int' in v) return AttributeProto.fromPartial({ name, type: AttrType.INT, i: v.int });
  if ('floats' in v) return AttributeProto.fromPartial({ name, type: AttrType.FLOATS, floats: [...v.floats] });
  if ('ints' in v) return AttributeProto.fromPartial({ name, type: AttrType.INTS, ints: [...v.ints] });
  if ('string' in v) return AttributeProto.fromPartial({ name, type: AttrType.STRING, s: utf8.encode(v.string) });
  if ('tensor' in v) return AttributeProto.fromPartial({ name, type: AttrType.TENSOR, t: tensorProto(name, v.tensor) });
  return AttributeProto.fromPartial({ name, type: AttrType.GRAPH, g: v.graph });
}

/**
 * Assembles an ONNX graph in code and encodes it as model bytes, so tests and
 * the demo need no Python exporter and no checked-in binaries.
 *
 * Methods return `this` so a graph reads top to bottom in one chain.
 */
export class GraphBuilder {
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly nodes: NodeProto[] = [];

  constructor(readonly name: string) {}

  /** Declares a graph input, e.g. `input('features', ElemType.FLOAT, ['batch', 8])`. */
  input(name: string, elemType: ElemType, dims: readonly Dim[]): this {
    this.inputs.push(valueInfo(name, elemType, dims));
    return this;
  }

  /** Declares a graph output. */
  output(name: string, elemType: ElemType, dims: readonly Dim[]): this {
    this.outputs.push(valueInfo(name, elemType, dims));
    return this;
  }

  /**
   * Adds a constant tensor stored as little-endian raw_data. `data` must be the
   * typed array for `elemType` (Float32Array for FLOAT, BigInt64Array for
   * INT64, Uint8Array of 0/1 for BOOL, ...) with exactly prod(dims) values;
   * throws TypeError/RangeError otherwise. `dims` [] makes a scalar.
   */
  initializer(name: string, elemType: ElemType, dims: readonly number[], data: TensorData): this {
    this.initializers.push(tensorProto(name, { elemType, dims, data }));
    return this;
  }

  /** Adds a node; `''` in `inputs` marks an omitted optional input. */
  node(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[],
    attrs: Readonly<Record<string, AttrValue>> = {},
    options: NodeOptions = {},
  ): this {
    this.nodes.push(
      NodeProto.fromPartial({
        name: options.name ?? `${opType}_${this.nodes.length}`,
        opType,
        domain: options.domain ?? '',
        input: [...inputs],
        output: [...outputs],
        attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      }),
    );
    return this;
  }

  /** The graph as a message, e.g. for a Loop/If body attribute. */
  toGraph(): GraphProto {
    return GraphProto.fromPartial({
      name: this.name,
      input: this.inputs,
      output: this.outputs,
      initializer: this.initializers,
      node: this.nodes,
    });
  }

  /** The whole model as a message, for callers that edit it before encoding. */
  toModelProto(options: ModelOptions = {}): ModelProto {
    const { opset = 17, irVersion = 8, domain = '', customOpsetDomains = {}, metadata = {} } = options;
    return ModelProto.fromPartial({
      irVersion,
      producerName: 'infermesh-onnx-builder',
      producerVersion: '1',
      domain,
      modelVersion: options.modelVersion ?? 1,
      docString: options.docString ?? '',
      opsetImport: [
        { domain: '', version: opset },
        ...Object.entries(customOpsetDomains).map(([d, version]) => ({ domain: d, version })),
      ],
      metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
      graph: this.toGraph(),
    });
  }

  /** Encodes the model: the bytes ONNX Runtime loads. */
  toModel(options: ModelOptions = {}): Uint8Array {
    return encodeModel(this.toModelProto(options));
  }
}

/** Encodes a ModelProto to ONNX model bytes. */
export function encodeModel(model: ModelProto): Uint8Array {
  return ModelProto.encode(model).finish();
}
