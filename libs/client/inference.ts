import * as grpc from '@grpc/grpc-js';
import type { UnaryMethod } from '../grpc/index.js';
import { oip } from '../proto/index.js';
import { datatype, rawToTyped, toPlain, toRaw, toTypedContents } from '../tensor/index.js';
import { channelSetup, type ClientSecurity } from './security.js';

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
  /** The call's one deadline, every attempt included. */
  timeoutMs?: number;
  metadata?: grpc.Metadata;
  /** Extra attempts on UNAVAILABLE for this call (default: the client's `retries`). */
  retries?: number;
  /** Request parameters (OIP `parameters`), e.g. the model's segment parameter `{ channel: 'web' }`. */
  parameters?: Record<string, string | number | boolean>;
}

/** Builds an OIP ModelInferRequest from plain values. */
export function buildInferRequest(model: string, inputs: InputTensor[], o: InferOptions = {}): oip.ModelInferRequest {
  const raw = o.raw ?? true;
  return oip.ModelInferRequest.fromPartial({
    modelName: model,
    modelVersion: o.version ?? '',
    id: o.id ?? '',
    parameters: Object.fromEntries(Object.entries(o.parameters ?? {}).map(([k, v]) => [k, { parameterChoice: parameterOf(v) }])),
    inputs: inputs.map((t) => {
      const dt = datatype(t.datatype);
      if (!dt) throw new Error(`unknown datatype ${t.datatype}`);
      return { name: t.name, datatype: t.datatype, shape: t.shape, contents: raw ? undefined : toTypedContents(dt, t.data) };
    }),
    outputs: (o.outputs ?? []).map((name) => ({ name })),
    rawInputContents: raw ? inputs.map((t) => toRaw(datatype(t.datatype)!, t.data)) : [],
  });
}

/** A request parameter value as OIP's InferParameter choice (whole numbers as int64). */
function parameterOf(v: string | number | boolean): oip.InferParameter['parameterChoice'] {
  if (typeof v === 'string') return { $case: 'stringParam', value: v };
  if (typeof v === 'boolean') return { $case: 'boolParam', value: v };
  return Number.isInteger(v) ? { $case: 'int64Param', value: v } : { $case: 'doubleParam', value: v };
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

/** Options of an {@link InferenceApi}; `tls` and `token` as in {@link ClientSecurity}. */
export interface InferenceApiOptions extends ClientSecurity {
  /** The deadline of each call, attempts and backoff included, unless the call sets its own (default 10 s). */
  timeoutMs?: number;
  /** Extra attempts after an UNAVAILABLE answer, each on the next address (default 2). */
  retries?: number;
}

/** The trailer by which a server asks callers to hold off (gRPC retry design, A6). */
const PUSHBACK = 'grpc-retry-pushback-ms';
const BACKOFF_MIN_MS = 10;
const BACKOFF_SPREAD_MS = 40;

/** Splits `'a:1,b:2'` and `['a:1', 'b:2,c:3']` into trimmed, non-empty addresses. */
function parseAddresses(address: string | readonly string[]): string[] {
  const list = (typeof address === 'string' ? [address] : address).flatMap((a) => a.split(',')).map((a) => a.trim()).filter((a) => a !== '');
  if (list.length === 0) throw new Error('InferenceApi: no address given');
  return list;
}

/**
 * Whether a failed attempt may be repeated on another address. Only UNAVAILABLE
 * (the address could not serve the call: refused connection, draining router,
 * no ready replica behind it), and only when the server did not ask to be left
 * alone with a `grpc-retry-pushback-ms` trailer. DEADLINE_EXCEEDED (the time is
 * spent), RESOURCE_EXHAUSTED (shedding: retrying would make the overload worse)
 * and every caller error are returned as they are.
 */
function retryable(err: grpc.ServiceError): boolean {
  return err.code === grpc.status.UNAVAILABLE && !(err.metadata?.get(PUSHBACK).length);
}

/**
 * An Open Inference Protocol client for one or more routers (or replicas).
 *
 * With several addresses, each call goes to the next address in turn
 * (round-robin; an address whose channel is in TRANSIENT_FAILURE is skipped
 * while another one is usable). A call answered UNAVAILABLE is sent again to the
 * next address, up to `retries` extra attempts, sleeping a jittered 10–50 ms
 * each time it has been round all the addresses. Every attempt shares the
 * call's one deadline, so retries never stretch a call past `timeoutMs`.
 * Retrying is safe because every OIP method is idempotent (models are pure
 * functions of their inputs). Nothing else is retried, see {@link retryable}.
 *
 * Errors are grpc-js ServiceErrors carrying the last attempt's status:
 * UNAVAILABLE (every attempt failed so), DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
 * (with the server's `grpc-retry-pushback-ms` in `metadata`), INVALID_ARGUMENT,
 * NOT_FOUND, as the server answered.
 */
export class InferenceApi {
  /** The addresses, in round-robin order. */
  readonly addresses: readonly string[];
  /** One grpc-js client per address, in the order of `addresses`. */
  readonly clients: readonly oip.GRPCInferenceServiceClient[];
  /** The first address's client, for raw grpc-js calls (no round-robin, no retries). */
  readonly client: oip.GRPCInferenceServiceClient;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private next = 0;

  /**
   * @param address one address, a comma-separated list, or an array of either.
   * @param options the default deadline in ms (as before), or {@link InferenceApiOptions}.
   * @throws Error when no address is given.
   */
  constructor(address: string | readonly string[], options: number | InferenceApiOptions = {}) {
    const o = typeof options === 'number' ? { timeoutMs: options } : options;
    this.timeoutMs = o.timeoutMs ?? 10_000;
    this.retries = Math.max(0, o.retries ?? 2);
    this.addresses = parseAddresses(address);
    const { credentials, options: channel } = channelSetup(o, 64 * 1024 * 1024);
    this.clients = this.addresses.map((a) => new oip.GRPCInferenceServiceClient(a, credentials, channel));
    this.client = this.clients[0]!;
  }

  /** Sends a prepared ModelInferRequest; resolves to the response as received. */
  inferRaw(req: oip.ModelInferRequest, o: InferOptions = {}): Promise<oip.ModelInferResponse> {
    return this.unary((c) => c.modelInfer, req, o.timeoutMs ?? this.timeoutMs, o.metadata, o.retries ?? this.retries);
  }

  /** Runs `model` on plain-valued inputs; resolves to the response and its decoded outputs. */
  async infer(model: string, inputs: InputTensor[], o: InferOptions = {}): Promise<{ response: oip.ModelInferResponse; outputs: OutputTensor[] }> {
    const response = await this.inferRaw(buildInferRequest(model, inputs, o), o);
    return { response, outputs: decodeOutputs(response) };
  }

  /** Whether the server that answers (the next address in turn) is ready. */
  async ready(): Promise<boolean> {
    return (await this.unary((c) => c.serverReady, {}, this.timeoutMs)).ready;
  }

  /** Whether `name` (at `version`, or its default) is ready. NOT_FOUND when unknown. */
  async modelReady(name: string, version = ''): Promise<boolean> {
    return (await this.unary((c) => c.modelReady, { name, version }, this.timeoutMs)).ready;
  }

  /** The inputs and outputs of `name` (at `version`). NOT_FOUND when unknown. */
  metadata(name: string, version = ''): Promise<oip.ModelMetadataResponse> {
    return this.unary((c) => c.modelMetadata, { name, version }, this.timeoutMs);
  }

  /** Closes every channel. Idempotent. */
  close(): void {
    for (const c of this.clients) c.close();
  }

  /** The index of the address the next call starts on. */
  private pick(): number {
    const n = this.clients.length;
    if (n === 1) return 0;
    const start = this.next;
    this.next = (start + 1) % n;
    // Prefer a connected channel, then one that may still connect; asking with
    // tryToConnect also wakes idle channels, so a skipped address rejoins once it is back.
    let usable = -1;
    for (let i = 0; i < n; i++) {
      const k = (start + i) % n;
      const state = this.clients[k]!.getChannel().getConnectivityState(true);
      if (state === grpc.connectivityState.READY) return k;
      if (usable < 0 && state !== grpc.connectivityState.TRANSIENT_FAILURE && state !== grpc.connectivityState.SHUTDOWN) usable = k;
    }
    return usable < 0 ? start : usable;
  }

  private unary<Req, Res>(
    method: (c: oip.GRPCInferenceServiceClient) => UnaryMethod<Req, Res>,
    req: Req,
    timeoutMs: number,
    metadata?: grpc.Metadata,
    retries = this.retries,
  ): Promise<Res> {
    const deadline = Date.now() + timeoutMs;
    const n = this.clients.length;
    const first = this.pick();
    return new Promise<Res>((resolve, reject) => {
      let attempt = 0;
      const send = () => {
        const c = this.clients[(first + attempt) % n]!;
        // grpc-js may add headers to the metadata it sends: each attempt gets its own copy.
        const md = attempt === 0 ? (metadata ?? new grpc.Metadata()) : (metadata?.clone() ?? new grpc.Metadata());
        method(c).call(c, req, md, { deadline }, (err, res) => {
          if (!err) return resolve(res as Res);
          if (attempt >= retries || !retryable(err)) return reject(err);
          attempt++;
          const wait = attempt % n === 0 ? BACKOFF_MIN_MS + Math.random() * BACKOFF_SPREAD_MS : 0;
          if (Date.now() + wait >= deadline) return reject(err);
          if (wait > 0) setTimeout(send, wait);
          else send();
        });
      };
      send();
    });
  }
}
