import type * as grpc from '@grpc/grpc-js';
import { checkName } from '../../libs/bus/index.js';
import { FailedPreconditionError, InvalidArgumentError, MeshError, NotFoundError, Status } from '../../libs/errors/index.js';
import { FrameCoalescer, linkMessageBytes, peerGuarded, unary, type PeerCheck } from '../../libs/grpc/index.js';
import { oip, RequestFrame, ResponseFrame, VersionState, type LoadRequest, type LoadResponse, type ReplicaRecord, type RequestItem, type ResponseItem, type StatusRequest, type UnloadRequest, type UnloadResponse } from '../../libs/proto/index.js';
import type { SpanContext } from '@opentelemetry/api';
import { isSampled, parseTraceparent } from '../../libs/telemetry/index.js';
import { decodeRequest, type NonFinitePolicy } from './infer-request.js';
import type { ModelManager } from './model-manager.js';
import type { Job, Scheduler } from './scheduler.js';

export interface RuntimeOptions {
  /** Deadline applied to a request that arrives without one. */
  defaultTimeoutMs: number;
  nonFinite: NonFinitePolicy;
  /** False while draining: new requests are refused with UNAVAILABLE. */
  accepting: () => boolean;
  record: () => ReplicaRecord;
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

/** Answers written back on one stream, coalesced into one frame per event-loop turn (split to fit the link). */
class StreamWriter {
  closed = false;
  /** Requests taken from this stream and not yet answered. */
  pending = 0;
  /** Queued jobs by request id, so that a cancel can find them. */
  readonly jobs = new Map<number, Job>();
  private readonly frames: FrameCoalescer<ResponseItem>;

  constructor(
    call: grpc.ServerDuplexStream<Buffer, Buffer>,
    private readonly maxMessageBytes: number,
  ) {
    this.frames = new FrameCoalescer<ResponseItem>(
      (items) => {
        if (this.closed) return;
        const u8 = ResponseFrame.encode({ items }).finish();
        call.write(Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength));
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
      item = { ...item, code: Status.RESOURCE_EXHAUSTED, message: `response: message of ${item.response.byteLength} bytes is larger than the limit of ${this.maxMessageBytes} bytes`, response: EMPTY };
    } else if (item.message.length > MAX_MESSAGE_CHARS) item = { ...item, message: item.message.slice(0, MAX_MESSAGE_CHARS) };
    // Nothing else is coming soon: answer now rather than an event-loop turn later.
    this.frames.add(item, this.pending === 0);
  }
}

/**
 * Handles one request of the multiplexed stream: finds the loaded version,
 * decodes and validates the client's ModelInferRequest (the router never
 * decoded it), and queues it. Every item gets exactly one ResponseItem.
 */
function handleItem(item: RequestItem, manager: ModelManager, scheduler: Scheduler, o: RuntimeOptions, out: StreamWriter): void {
  const id = item.id;
  if (item.cancel) {
    // The router already answered its caller; this only frees the queue slot.
    out.pending--;
    const job = out.jobs.get(id);
    if (job) scheduler.cancel(job);
    return;
  }
  const fail = (code: number, message: string) => out.push({ id, code, message, response: EMPTY, queueMicros: 0, computeMicros: 0 });
  if (!o.accepting()) return fail(Status.UNAVAILABLE, 'replica is draining');
  const entry = manager.lookup(item.model, item.version);
  if (!entry || entry.state !== VersionState.VERSION_STATE_READY) {
    return fail(Status.UNAVAILABLE, `model ${item.model} version ${item.version} is not ready on this replica`);
  }
  let req: oip.ModelInferRequest;
  try {
    req = oip.ModelInferRequest.decode(item.request);
  } catch {
    return fail(Status.INVALID_ARGUMENT, 'request: malformed ModelInferRequest');
  }
  let decoded;
  try {
    decoded = decodeRequest(entry.spec, req, o.nonFinite);
  } catch (err) {
    if (err instanceof MeshError) return fail(err.code, err.message);
    return fail(Status.INVALID_ARGUMENT, 'request: invalid');
  }
  const now = performance.now();
  let answered = false;
  const job: Job = {
    spec: entry.spec,
    req: decoded,
    enqueuedAt: now,
    deadline: now + (item.timeoutMicros > 0 ? item.timeoutMicros / 1000 : o.defaultTimeoutMs),
    priority: item.priority,
    trace: item.traceparent ? sampledContext(item.traceparent) : null,
    done: (code, message, response, queueMicros, computeMicros) => {
      answered = true;
      out.jobs.delete(id);
      // A cancelled request's answer is not sent: the router has answered its caller.
      if (code === Status.CANCELLED) out.pending--;
      else out.push({ id, code, message, response: response ?? EMPTY, queueMicros, computeMicros });
    },
  };
  scheduler.submit(job);
  if (!answered) out.jobs.set(id, job);
}

const EMPTY = new Uint8Array(0);
/** Longest status message sent back on the stream (messages are for callers: short). */
const MAX_MESSAGE_CHARS = 1024;

/** The router's span context when it sampled the request, else null (no spans here either). */
function sampledContext(traceparent: string): SpanContext | null {
  const c = parseTraceparent(traceparent);
  return isSampled(c) ? c : null;
}

/** The Runtime service: the multiplexed Infer stream plus load/unload/status, each behind `o.peer` (checked once per call or stream). */
export function runtimeHandlers(manager: ModelManager, scheduler: Scheduler, o: RuntimeOptions, streams: Set<grpc.ServerDuplexStream<Buffer, Buffer>>) {
  const h = {
    infer: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      const out = new StreamWriter(call, o.maxMessageBytes);
      streams.add(call);
      const end = () => {
        out.closed = true;
        streams.delete(call);
      };
      call.on('data', (buf: Buffer) => {
        let frame: RequestFrame;
        try {
          frame = RequestFrame.decode(buf);
        } catch {
          call.emit('error', { code: Status.INVALID_ARGUMENT, details: 'frame: malformed RequestFrame' });
          return;
        }
        out.pending += frame.items.length;
        for (const item of frame.items) handleItem(item, manager, scheduler, o, out);
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
  };
  return { infer: peerGuarded(h.infer, o.peer), load: peerGuarded(h.load, o.peer), unload: peerGuarded(h.unload, o.peer), status: peerGuarded(h.status, o.peer) };
}
