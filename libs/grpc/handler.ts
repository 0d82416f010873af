import type * as grpc from '@grpc/grpc-js';
import { propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { toStatus } from '../errors/index.js';
import type { Guard } from './access.js';

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
  /** Who the caller's token names, when a guard checked one (else undefined: open management plane). */
  readonly subject?: string;
}

/** Subjects of calls a guard has let through, for their handler's context. */
const subjects = new WeakMap<object, string>();

type AnyServerCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

/**
 * Puts `guard` in front of a grpc-js unary, client- or server-streaming
 * handler: a call the guard refuses is answered UNAUTHENTICATED or
 * PERMISSION_DENIED before the handler sees it; one it admits reaches the
 * handler with the subject in its CallContext. Without a guard (open
 * management plane) the handler is returned as it is.
 */
export function guarded<H extends (call: never, ...rest: never[]) => void>(handler: H, guard: Guard | undefined): H {
  if (!guard) return handler;
  const g = guard;
  return ((call: AnyServerCall, ...rest: unknown[]) => {
    let subject: string;
    try {
      subject = g(call.metadata);
    } catch (err) {
      const status = toStatus(err);
      const cb = rest[0];
      if (typeof cb === 'function') return void (cb as grpc.sendUnaryData<unknown>)(status);
      return void (call as grpc.ServerWritableStream<unknown, unknown>).emit('error', status);
    }
    subjects.set(call, subject);
    return (handler as unknown as (...a: unknown[]) => void)(call, ...rest);
  }) as unknown as H;
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
  return { deadline, signal: ac.signal, metadata: call.metadata, subject: subjects.get(call) };
}

/**
 * Adapts an async unary handler to grpc-js. Errors become statuses through
 * the one wrapper in libs/errors (management plane; the data plane has its
 * own allocation-free handlers).
 */
export function unary<Req, Res>(fn: (req: Req, ctx: CallContext) => Promise<Res>, guard?: Guard): grpc.handleUnaryCall<Req, Res> {
  return guarded<grpc.handleUnaryCall<Req, Res>>((call, callback) => {
    const ctx = contextOf(call);
    traced(fnName(call), call.metadata, () => fn(call.request, ctx)).then(
      (res) => callback(null, res),
      (err) => callback(toStatus(err)),
    );
  }, guard);
}

/** Like `unary` for a client-streaming call: the handler gets the request stream. */
export function clientStream<Req, Res>(
  fn: (stream: AsyncIterable<Req>, ctx: CallContext) => Promise<Res>,
  guard?: Guard,
): grpc.handleClientStreamingCall<Req, Res> {
  return guarded<grpc.handleClientStreamingCall<Req, Res>>((call, callback) => {
    const ctx = contextOf(call);
    traced(fnName(call), call.metadata, () => fn(call, ctx)).then(
      (res) => callback(null, res),
      (err) => callback(toStatus(err)),
    );
  }, guard);
}
