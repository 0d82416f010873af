import type * as grpc from '@grpc/grpc-js';
import { propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { toStatus } from '../errors/index.js';

const tracer = trace.getTracer('infermesh');
const metadataGetter = {
  keys: (md: grpc.Metadata) => Object.keys(md.getMap()),
  get: (md: grpc.Metadata, key: string) => md.get(key).map(String),
};

/**
 * Runs a management-plane handler inside a server span whose parent is the
 * caller's `traceparent`, so what it publishes (NATS events) joins the trace.
 */
function traced<T>(name: string, md: grpc.Metadata, fn: () => Promise<T>): Promise<T> {
  const parent = propagation.extract(ROOT_CONTEXT, md, metadataGetter);
  return tracer.startActiveSpan(name, { kind: SpanKind.SERVER, attributes: { 'rpc.system': 'grpc', 'rpc.method': name } }, parent, (span) =>
    fn().then(
      (v) => {
        span.end();
        return v;
      },
      (err) => {
        span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
        throw err;
      },
    ),
  );
}

/** What every handler gets: when the caller gives up, and a signal for it. */
export interface CallContext {
  /** Epoch milliseconds; Infinity when the caller set no deadline. */
  readonly deadline: number;
  /** Aborted when the caller cancels or the deadline passes. */
  readonly signal: AbortSignal;
  readonly metadata: grpc.Metadata;
}

/** The RPC's method name (e.g. SetAlias) from its path. */
function fnName(call: { getPath(): string }): string {
  const p = call.getPath();
  return p.slice(p.lastIndexOf('/') + 1);
}

function contextOf(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown>): CallContext {
  const d = call.getDeadline();
  const deadline = d instanceof Date ? d.getTime() : Number.isFinite(d) ? Number(d) : Infinity;
  const ac = new AbortController();
  call.once('cancelled', () => ac.abort());
  let timer: NodeJS.Timeout | undefined;
  if (Number.isFinite(deadline)) {
    timer = setTimeout(() => ac.abort(), Math.max(0, deadline - Date.now()));
    timer.unref();
    ac.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  }
  return { deadline, signal: ac.signal, metadata: call.metadata };
}

/**
 * Adapts an async unary handler to grpc-js. Errors become statuses through
 * the one wrapper in libs/errors (management plane; the data plane has its
 * own allocation-free handlers).
 */
export function unary<Req, Res>(fn: (req: Req, ctx: CallContext) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const ctx = contextOf(call);
    traced(fnName(call), call.metadata, () => fn(call.request, ctx)).then(
      (res) => callback(null, res),
      (err) => callback(toStatus(err)),
    );
  };
}

/** Like `unary` for a client-streaming call: the handler gets the request stream. */
export function clientStream<Req, Res>(
  fn: (stream: AsyncIterable<Req>, ctx: CallContext) => Promise<Res>,
): grpc.handleClientStreamingCall<Req, Res> {
  return (call, callback) => {
    const ctx = contextOf(call);
    traced(fnName(call), call.metadata, () => fn(call, ctx)).then(
      (res) => callback(null, res),
      (err) => callback(toStatus(err)),
    );
  };
}
