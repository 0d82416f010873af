import type * as grpc from '@grpc/grpc-js';
import { checkName } from '../../libs/bus/index.js';
import { CancelledError, FailedPreconditionError, InvalidArgumentError, NotFoundError, ResourceExhaustedError, Status, toStatus } from '../../libs/errors/index.js';
import { FrameCoalescer, GRPC_PREFIX_BYTES, linkMessageBytes, peerGuarded, unary, type PeerCheck } from '../../libs/grpc/index.js';
import { VersionState, type LoadRequest, type LoadResponse, type ReplicaRecord, type RequestItem, type ResponseItem, type StatisticsRequest, type StatisticsResponse, type StatusRequest, type UnloadRequest, type UnloadResponse } from '../../libs/proto/index.js';
import { inferRequest, type Arrival, type InferRequest, type NonFinitePolicy, type RequestContext } from './infer-request.js';
import { decodeRequestFrame, encodeResponseFrame, MalformedFrame } from '../../libs/wire/index.js';
import type { ModelManager } from './model-manager.js';
import type { Scheduler } from './scheduler.js';

export interface RuntimeOptions {
  /** The longest deadline a request gets, and the one it gets when it arrives without one. */
  defaultTimeoutMs: number;
  nonFinite: NonFinitePolicy;
  /** False while draining: new requests are refused with UNAVAILABLE. */
  accepting: () => boolean;
  record: () => ReplicaRecord;
  /** Per-version counters for Runtime.Statistics (model-stats.ts); absent = none kept (answers empty). */
  statistics?: (model: string) => StatisticsResponse;
  /** Counts a request refused as invalid before admission as a failure of its version (model-stats.ts). */
  refused?: (model: string, version: number) => void;
  /**
   * The client-facing message limit: a larger answer is RESOURCE_EXHAUSTED
   * for its request alone. The stream itself runs with headroom over it
   * (linkMessageBytes), and frames are split to stay within that.
   */
  maxMessageBytes: number;
  /**
   * Who may call the Runtime API: under mutual TLS only the mesh's services
   * (a service certificate; others get PERMISSION_DENIED). Absent: anyone
   * who reaches the listener (plaintext on loopback, or TLS without client certificates).
   */
  peer?: PeerCheck;
}

/** Bytes of a ResponseItem and its place in the frame beyond its message and response (varints, tags). */
const ITEM_OVERHEAD_BYTES = 64;

/** An upper bound of a ResponseItem's encoded size, without encoding it (UTF-8: ≤ 3 bytes per UTF-16 unit). */
function itemBytes(item: ResponseItem): number {
  return item.response.byteLength + 3 * item.message.length + ITEM_OVERHEAD_BYTES;
}

/** Where a Runtime stream's answers go: one gRPC message per call, GRPC_PREFIX_BYTES of message prefix first. */
export interface LinkSink {
  write(framed: Buffer): void;
}

/** Answers written back on one stream, coalesced into one frame per event-loop turn (split to fit the link). */
class StreamWriter {
  closed = false;
  /** Requests taken from this stream and not yet answered. */
  pending = 0;
  /** Queued jobs by request id, so that a cancel can find them. */
  readonly jobs = new Map<number, InferRequest>();
  private readonly frames: FrameCoalescer<ResponseItem>;

  constructor(
    sink: LinkSink,
    private readonly maxMessageBytes: number,
  ) {
    this.frames = new FrameCoalescer<ResponseItem>(
      (items) => {
        if (!this.closed) sink.write(encodeResponseFrame(items));
      },
      itemBytes,
      linkMessageBytes(maxMessageBytes),
    );
  }

  push(item: ResponseItem): void {
    this.pending--;
    if (this.closed) return;
    if (item.response.byteLength > this.maxMessageBytes) {
      // Too large for the caller (and maybe the link): it fails alone, the stream carries on.
      item = { ...item, ...statusOf(new ResourceExhaustedError(`response: message of ${item.response.byteLength} bytes is larger than the limit of ${this.maxMessageBytes} bytes`)), response: EMPTY };
    } else if (item.message.length > MAX_MESSAGE_CHARS) item = { ...item, message: item.message.slice(0, MAX_MESSAGE_CHARS) };
    // Nothing else is coming soon: answer now rather than an event-loop turn later.
    this.frames.add(item, this.pending === 0);
  }
}

/**
 * One Runtime stream, whatever carries it (grpc-js's ServerDuplexStream, or
 * the listener's raw HTTP/2 stream: runtime-link.ts): frames in, answers out
 * through its sink.
 */
export class RuntimeStream {
  private readonly out: StreamWriter;

  constructor(
    private readonly ctx: RequestContext,
    private readonly scheduler: Scheduler,
    private readonly o: RuntimeOptions,
    sink: LinkSink,
  ) {
    this.out = new StreamWriter(sink, o.maxMessageBytes);
  }

  /** Handles one RequestFrame (the message's bytes); throws MalformedFrame, handling nothing, when it is not one. */
  frame(buf: Buffer): void {
    const items = decodeRequestFrame(buf);
    this.out.pending += items.length;
    for (let i = 0; i < items.length; i++) handleItem(items[i]!, this.ctx, this.scheduler, this.out, this.o);
  }

  /** The stream ended or broke: answers still to come are dropped. */
  close(): void {
    this.out.closed = true;
  }
}

/**
 * Handles one request of the multiplexed stream: the one constructor
 * (inferRequest) checks the version the router chose is ready here, decodes
 * and validates the client's ModelInferRequest (the router never decoded
 * it), and the scheduler admits and runs it. Every item gets exactly one
 * ResponseItem.
 */
function handleItem(item: RequestItem, ctx: RequestContext, scheduler: Scheduler, out: StreamWriter, o: RuntimeOptions): void {
  const id = item.id;
  if (item.cancel) {
    // The router already answered its caller; this only frees the queue slot.
    out.pending--;
    const job = out.jobs.get(id);
    if (job) scheduler.cancel(job);
    return;
  }
  let answered = false;
  const arrival: Arrival = {
    bytes: item.request,
    route: { model: item.model, version: item.version },
    remainingMs: item.timeoutMicros > 0 ? item.timeoutMicros / 1000 : Infinity,
    priority: item.priority,
    traceparent: item.traceparent,
  };
  let req: InferRequest;
  try {
    req = inferRequest(ctx, arrival, (err, response, queueMicros, computeMicros) => {
      answered = true;
      out.jobs.delete(id);
      // A cancelled request's answer is not sent: the router has answered its caller.
      if (err instanceof CancelledError) out.pending--;
      else if (err) out.push({ id, ...statusOf(err), response: EMPTY, queueMicros, computeMicros });
      else out.push({ id, code: Status.OK, message: '', response: response!, queueMicros, computeMicros });
    });
  } catch (err) {
    // Inputs that do not fit the model are failed requests of that version (Triton's statistics count them).
    if (err instanceof InvalidArgumentError) o.refused?.(item.model, item.version);
    out.push({ id, ...statusOf(err), response: EMPTY, queueMicros: 0, computeMicros: 0 });
    return;
  }
  scheduler.submit(req);
  if (!answered) out.jobs.set(id, req);
}

/** A stream item's code and message, from libs/errors' one mapping. */
function statusOf(err: unknown): { code: number; message: string } {
  const st = toStatus(err);
  return { code: st.code, message: st.details };
}

const EMPTY = new Uint8Array(0);
/** Longest status message sent back on the stream (messages are for callers: short). */
const MAX_MESSAGE_CHARS = 1024;

/** What a Runtime stream's requests are built with (inferRequest). */
export function runtimeContext(manager: ModelManager, o: RuntimeOptions): RequestContext {
  return { manager, accepting: o.accepting, defaultTimeoutMs: o.defaultTimeoutMs, nonFinite: o.nonFinite };
}

/** The Runtime service: the multiplexed Infer stream plus load/unload/status, each behind `o.peer` (checked once per call or stream). */
export function runtimeHandlers(manager: ModelManager, scheduler: Scheduler, o: RuntimeOptions, streams: Set<{ end(): void }>) {
  const ctx = runtimeContext(manager, o);
  const h = {
    infer: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      // grpc-js frames each message itself: it gets the message without our prefix.
      const rs = new RuntimeStream(ctx, scheduler, o, { write: (framed) => call.write(framed.subarray(GRPC_PREFIX_BYTES)) });
      streams.add(call);
      const end = () => {
        rs.close();
        streams.delete(call);
      };
      call.on('data', (buf: Buffer) => {
        try {
          rs.frame(buf);
        } catch (err) {
          if (!(err instanceof MalformedFrame)) throw err;
          call.emit('error', toStatus(new InvalidArgumentError('frame', 'malformed RequestFrame')));
        }
      });
      call.on('end', () => {
        end();
        call.end();
      });
      call.on('cancelled', end);
      call.on('error', end);
    },
    load: unary<LoadRequest, LoadResponse>(async (req) => {
      checkName(req.model, 'model');
      if (!req.version) throw new InvalidArgumentError('version', 'must be ≥ 1');
      const e = await manager.pin(req.model, req.version);
      if (!e) throw new NotFoundError(`model ${req.model} version ${req.version} not found`);
      if (e.state === VersionState.VERSION_STATE_FAILED) throw new FailedPreconditionError(`model ${req.model} version ${req.version} failed: ${e.reason}`);
      return { loaded: { name: req.model, version: req.version, state: e.state, reason: e.reason } };
    }),
    unload: unary<UnloadRequest, UnloadResponse>(async (req) => {
      checkName(req.model, 'model');
      manager.unpin(req.model, req.version);
      return {};
    }),
    status: unary<StatusRequest, ReplicaRecord>(async () => o.record()),
    statistics: unary<StatisticsRequest, StatisticsResponse>(async (req) => {
      if (req.model) checkName(req.model, 'model');
      return o.statistics?.(req.model) ?? { versions: [] };
    }),
  };
  return { infer: peerGuarded(h.infer, o.peer), load: peerGuarded(h.load, o.peer), unload: peerGuarded(h.unload, o.peer), status: peerGuarded(h.status, o.peer), statistics: peerGuarded(h.statistics, o.peer) };
}
