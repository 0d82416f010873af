import * as grpc from '@grpc/grpc-js';
import { call, channelOptions } from '../grpc/index.js';
import { oip } from '../proto/index.js';
import { datatype, rawToTyped, toPlain, toRaw, toTypedContents } from '../tensor/index.js';

export interface InputTensor {
  name: string;
  datatype: string;
  shape: number[];
  data: readonly (number | boolean)[];
}

export interface OutputTensor {
  name: string;
  datatype: string;
  shape: number[];
  data: (number | boolean)[];
}

export interface InferOptions {
  version?: string;
  id?: string;
  outputs?: string[];
  /** Send raw_input_contents (default) or typed contents. */
  raw?: boolean;
  timeoutMs?: number;
  metadata?: grpc.Metadata;
}

/** Builds an OIP ModelInferRequest from plain values. */
export function buildInferRequest(model: string, inputs: InputTensor[], o: InferOptions = {}): oip.ModelInferRequest {
  const raw = o.raw ?? true;
  return oip.ModelInferRequest.fromPartial({
    modelName: model,
    modelVersion: o.version ?? '',
    id: o.id ?? '',
    inputs: inputs.map((t) => {
      const dt = datatype(t.datatype);
      if (!dt) throw new Error(`unknown datatype ${t.datatype}`);
      return { name: t.name, datatype: t.datatype, shape: t.shape, contents: raw ? undefined : toTypedContents(dt, t.data) };
    }),
    outputs: (o.outputs ?? []).map((name) => ({ name })),
    rawInputContents: raw ? inputs.map((t) => toRaw(datatype(t.datatype)!, t.data)) : [],
  });
}

/** Decodes a ModelInferResponse's outputs (raw or typed) to plain values. */
export function decodeOutputs(res: oip.ModelInferResponse): OutputTensor[] {
  return res.outputs.map((t, i) => {
    const dt = datatype(t.datatype);
    if (!dt) return { name: t.name, datatype: t.datatype, shape: t.shape, data: [] };
    const raw = res.rawOutputContents[i];
    if (raw) return { name: t.name, datatype: t.datatype, shape: t.shape, data: toPlain(dt, rawToTyped(dt, raw)) };
    const vals = t.contents && dt.contents ? (t.contents[dt.contents] as ArrayLike<number | boolean>) : [];
    return { name: t.name, datatype: t.datatype, shape: t.shape, data: Array.from(vals, (v) => (dt.oip === 'BOOL' ? Boolean(v) : Number(v))) };
  });
}

/** An Open Inference Protocol client (router or replica). */
export class InferenceApi {
  readonly client: oip.GRPCInferenceServiceClient;
  constructor(address: string, private readonly timeoutMs = 10_000) {
    this.client = new oip.GRPCInferenceServiceClient(address, grpc.credentials.createInsecure(), channelOptions(64 * 1024 * 1024));
  }

  inferRaw(req: oip.ModelInferRequest, o: InferOptions = {}): Promise<oip.ModelInferResponse> {
    return call(this.client.modelInfer, this.client, req, { timeoutMs: o.timeoutMs ?? this.timeoutMs, metadata: o.metadata });
  }

  async infer(model: string, inputs: InputTensor[], o: InferOptions = {}): Promise<{ response: oip.ModelInferResponse; outputs: OutputTensor[] }> {
    const response = await this.inferRaw(buildInferRequest(model, inputs, o), o);
    return { response, outputs: decodeOutputs(response) };
  }

  async ready(): Promise<boolean> {
    return (await call(this.client.serverReady, this.client, {}, { timeoutMs: this.timeoutMs })).ready;
  }

  async modelReady(name: string, version = ''): Promise<boolean> {
    return (await call(this.client.modelReady, this.client, { name, version }, { timeoutMs: this.timeoutMs })).ready;
  }

  metadata(name: string, version = ''): Promise<oip.ModelMetadataResponse> {
    return call(this.client.modelMetadata, this.client, { name, version }, { timeoutMs: this.timeoutMs });
  }

  close(): void {
    this.client.close();
  }
}
