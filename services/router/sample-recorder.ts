import type { JetStreamClient, NatsConnection } from 'nats';
import { randomUUID } from 'node:crypto';
import { publishAcked, subjects } from '../../libs/bus/index.js';
import type { Logger } from '../../libs/log/index.js';
import { oip, SampleBatch, type PredictionSample, type ShadowResult, type VersionTraffic } from '../../libs/proto/index.js';
import { datatype, rawToTyped } from '../../libs/tensor/index.js';

interface VersionAcc {
  latency: number[];
  codes: number[];
  queue: number[];
  compute: number[];
}

interface Kept {
  version: number;
  latencyMicros: number;
  code: number;
  request: Buffer;
  response: Uint8Array | null;
  at: number;
  traceId: string;
}

/** Where one request's time went, microseconds. */
export interface Breakdown {
  queue: number;
  compute: number;
  network: number;
  router: number;
}

/** How long a batch is retried before it is counted in `dropped` (NATS away, or no samples stream: no monitor). */
const SAMPLE_STORE_MS = 15_000;
/** Batches awaiting their acknowledgement at most; beyond, batches are published without one. */
const MAX_STORING = 256;

/** The slowest requests kept per model per window. */
const SLOWEST_PER_WINDOW = 5;

export interface SampleRecorderOptions {
  routerId: string;
  flushMs: number;
  /** Fraction of requests kept whole for the monitor (summaries of inputs and outputs). */
  sampleRate: number;
  /** The model's segment request parameter (VersionRecord.segment_by), asked once per model per flush; '' = none. */
  segmentKey?: (model: string) => string;
}

/**
 * Counts every request (latency and status per model version) and keeps a
 * sampled few whole; publishes one SampleBatch per model on
 * `infermesh.samples.<name>` every `flushMs`. Recording is two array pushes;
 * decoding the kept samples happens at flush time, off the request path.
 * Publishing never fails a request: each batch is stored in JetStream with an
 * acknowledgement, retried off the request path through a leader election
 * (up to {@link SAMPLE_STORE_MS}, with a message id so a retry is never stored twice).
 */
export class SampleRecorder {
  private byModel = new Map<string, Map<number, VersionAcc>>();
  /** Golden-probe requests, per model and version: kept apart from traffic (SampleBatch.probes). */
  private probes = new Map<string, Map<number, VersionAcc>>();
  private kept = new Map<string, Kept[]>();
  private shadows = new Map<string, ShadowResult[]>();
  private slowest = new Map<string, PredictionSample[]>();
  private start = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly nc: NatsConnection, private readonly o: SampleRecorderOptions, private readonly log: Logger) {
    this.timer = setInterval(() => this.flush(), o.flushMs);
    this.timer.unref();
  }

  /** Latency of the fastest request among a model's kept slowest (0 while fewer are kept): callers skip faster ones cheaply. */
  slowFloor(model: string): number {
    const list = this.slowest.get(model);
    return list && list.length >= SLOWEST_PER_WINDOW ? list[list.length - 1]!.latencyMicros : 0;
  }

  /** Keeps a slow request (it must have a trace id) among the window's slowest of its model. */
  recordSlow(model: string, version: number, latencyMicros: number, code: number, traceId: string, b: Breakdown): void {
    let list = this.slowest.get(model);
    if (!list) this.slowest.set(model, (list = []));
    list.push({
      requestId: '', version, latencyMicros, code, traceId, inputSummary: [], outputSummary: [], atMs: Date.now(),
      queueMicros: b.queue, computeMicros: b.compute, networkMicros: b.network, routerMicros: b.router, segment: '',
    });
    list.sort((a, c) => c.latencyMicros - a.latencyMicros);
    if (list.length > SLOWEST_PER_WINDOW) list.length = SLOWEST_PER_WINDOW;
  }

  /**
   * Counts one request of `model`/`version`, and keeps it whole for the
   * monitor's samples at the sample rate. A golden probe (`probe`, the
   * request carried `x-infermesh-probe`) is only counted, apart from
   * traffic: never sampled, so it stays out of drift, evaluation and the
   * latency and error windows.
   */
  record(model: string, version: number, latencyMicros: number, code: number, request: Buffer, response: Uint8Array | null, traceId = '', queueMicros = 0, computeMicros = 0, probe = false): void {
    const byModel = probe ? this.probes : this.byModel;
    let m = byModel.get(model);
    if (!m) byModel.set(model, (m = new Map()));
    let acc = m.get(version);
    if (!acc) m.set(version, (acc = { latency: [], codes: [], queue: [], compute: [] }));
    acc.latency.push(latencyMicros);
    acc.codes.push(code);
    acc.queue.push(queueMicros);
    acc.compute.push(computeMicros);
    if (!probe && this.o.sampleRate > 0 && Math.random() < this.o.sampleRate) {
      let k = this.kept.get(model);
      if (!k) this.kept.set(model, (k = []));
      // Copied: the bytes may be views into larger buffers (a read buffer, a response frame) that
      // would otherwise stay alive until the flush.
      if (k.length < 1000) k.push({ version, latencyMicros, code, request: own(request), response: response && own(response), at: Date.now(), traceId });
    }
  }

  /** Records how a mirrored request's shadow answer compared with production's. */
  recordShadow(model: string, r: ShadowResult): void {
    let list = this.shadows.get(model);
    if (!list) this.shadows.set(model, (list = []));
    list.push(r);
  }

  flush(): void {
    const end = Date.now();
    const byModel = this.byModel;
    const kept = this.kept;
    const shadows = this.shadows;
    const slowest = this.slowest;
    const probes = this.probes;
    this.byModel = new Map();
    this.probes = new Map();
    this.kept = new Map();
    this.shadows = new Map();
    this.slowest = new Map();
    for (const name of new Set([...byModel.keys(), ...shadows.keys(), ...probes.keys()])) {
      const segmentKey = kept.has(name) ? (this.o.segmentKey?.(name) ?? '') : '';
      const samples = (kept.get(name) ?? []).map((k) => summarize(k, segmentKey));
      const batch: SampleBatch = {
        routerId: this.o.routerId, name, versions: traffic(byModel.get(name)), samples, startMs: this.start, endMs: end,
        shadows: shadows.get(name) ?? [], slowest: slowest.get(name) ?? [], probes: traffic(probes.get(name)),
      };
      this.store(subjects.samples(name), SampleBatch.encode(batch).finish());
    }
    this.start = end;
  }

  private js: JetStreamClient | null = null;
  private storing = 0;
  private stored = 0;
  private readonly bootId = randomUUID().slice(0, 8);
  /** Batches not stored within SAMPLE_STORE_MS. */
  dropped = 0;

  private store(subject: string, data: Uint8Array): void {
    try {
      if (this.storing >= MAX_STORING) {
        this.nc.publish(subject, data);
        return;
      }
      this.js ??= this.nc.jetstream();
      this.storing++;
      const msgID = `${this.o.routerId}:${this.bootId}:${++this.stored}`;
      publishAcked(this.js, subject, data, { deadline: Date.now() + SAMPLE_STORE_MS, msgID })
        .catch((err: unknown) => {
          this.dropped++;
          this.log.debug({ err: String(err) }, 'samples dropped');
        })
        .finally(() => this.storing--);
    } catch (err) {
      this.dropped++;
      this.log.debug({ err: String(err) }, 'samples dropped');
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

/** One model's accumulated requests as VersionTraffic, by version. */
function traffic(byVersion: Map<number, VersionAcc> | undefined): VersionTraffic[] {
  const vt: VersionTraffic[] = [];
  for (const [version, acc] of byVersion ?? []) vt.push({ version, latencyMicros: acc.latency, codes: acc.codes, queueMicros: acc.queue, computeMicros: acc.compute });
  return vt;
}

/** A copy of `b` in an allocation of its own (not a slice of Node's shared pool). */
function own(b: Uint8Array): Buffer {
  const c = Buffer.allocUnsafeSlow(b.byteLength);
  c.set(b);
  return c;
}

const SUMMARY_VALUES = 32;

/** First values of the first row of each tensor: enough for drift, never whole payloads. */
function firstValues(tensors: { datatype: string; shape: number[] }[], raw: Uint8Array[], typed: (oip.InferTensorContents | undefined)[]): number[] {
  const out: number[] = [];
  tensors.forEach((t, i) => {
    const dt = datatype(t.datatype);
    if (!dt) return;
    const perRow = t.shape.length > 1 ? t.shape.slice(1).reduce((a, b) => a * b, 1) : 1;
    const take = Math.min(perRow, SUMMARY_VALUES - out.length);
    if (take <= 0) return;
    if (raw[i] && raw[i]!.byteLength >= take * dt.bytes) {
      const a = rawToTyped(dt, raw[i]!.subarray(0, take * dt.bytes));
      for (let j = 0; j < take; j++) out.push(Number(a[j]));
    } else if (typed[i] && dt.contents) {
      const vals = typed[i]![dt.contents] as ArrayLike<number | boolean>;
      for (let j = 0; j < take && j < vals.length; j++) out.push(Number(vals[j]));
    }
  });
  return out;
}

/** Longest segment value kept in a sample (longer values are cut). */
const MAX_SEGMENT_CHARS = 64;

/** The request parameter `key` as a segment value: strings as they are, numbers and booleans as text; '' when absent. */
function segmentOf(parameters: { [key: string]: oip.InferParameter }, key: string): string {
  const p = key ? parameters[key]?.parameterChoice : undefined;
  return p === undefined ? '' : String(p.value).slice(0, MAX_SEGMENT_CHARS);
}

/** Decodes a kept request (at flush time, off the request path) into its sample; `segmentKey` names the segment parameter. */
function summarize(k: Kept, segmentKey: string): PredictionSample {
  const s: PredictionSample = {
    requestId: '', version: k.version, latencyMicros: k.latencyMicros, code: k.code, traceId: k.traceId, inputSummary: [], outputSummary: [], atMs: k.at,
    queueMicros: 0, computeMicros: 0, networkMicros: 0, routerMicros: 0, segment: '',
  };
  try {
    const req = oip.ModelInferRequest.decode(k.request);
    s.requestId = req.id;
    s.segment = segmentOf(req.parameters, segmentKey);
    s.inputSummary = firstValues(req.inputs, req.rawInputContents, req.inputs.map((t) => t.contents));
    if (k.response) {
      const res = oip.ModelInferResponse.decode(k.response);
      s.outputSummary = firstValues(res.outputs, res.rawOutputContents, res.outputs.map((t) => t.contents));
    }
  } catch {
    // A request that failed to decode was answered INVALID_ARGUMENT; its summary stays empty.
  }
  return s;
}
