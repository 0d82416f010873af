/**
 * One closed error model. Every error a caller can see is one of these
 * classes, each bound to exactly one gRPC status code. The message is written
 * for the caller; `cause` is kept for logs and never sent.
 */
import { status as Status, Metadata, type ServiceError, type StatusObject } from '@grpc/grpc-js';

export { Status };

export abstract class MeshError extends Error {
  abstract readonly code: Status;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The request is malformed; `field` names what is wrong. */
export class InvalidArgumentError extends MeshError {
  readonly code = Status.INVALID_ARGUMENT;
  constructor(readonly field: string, reason: string, options?: { cause?: unknown }) {
    super(`${field}: ${reason}`, options);
  }
}
export class NotFoundError extends MeshError {
  readonly code = Status.NOT_FOUND;
}
export class AlreadyExistsError extends MeshError {
  readonly code = Status.ALREADY_EXISTS;
}
export class FailedPreconditionError extends MeshError {
  readonly code = Status.FAILED_PRECONDITION;
}
/** A compare-and-set lost a race; retrying with fresh state may succeed. */
export class AbortedError extends MeshError {
  readonly code = Status.ABORTED;
}
export class ResourceExhaustedError extends MeshError {
  readonly code = Status.RESOURCE_EXHAUSTED;
}
export class DeadlineExceededError extends MeshError {
  readonly code = Status.DEADLINE_EXCEEDED;
}
export class UnavailableError extends MeshError {
  readonly code = Status.UNAVAILABLE;
}
export class CancelledError extends MeshError {
  readonly code = Status.CANCELLED;
}
export class UnauthenticatedError extends MeshError {
  readonly code = Status.UNAUTHENTICATED;
}
export class PermissionDeniedError extends MeshError {
  readonly code = Status.PERMISSION_DENIED;
}
/** A bug or an unexpected failure: the caller only learns that it happened. */
export class InternalError extends MeshError {
  readonly code = Status.INTERNAL;
}

const byCode: Partial<Record<Status, new (message: string) => MeshError>> = {
  [Status.NOT_FOUND]: NotFoundError,
  [Status.ALREADY_EXISTS]: AlreadyExistsError,
  [Status.FAILED_PRECONDITION]: FailedPreconditionError,
  [Status.ABORTED]: AbortedError,
  [Status.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
  [Status.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [Status.UNAVAILABLE]: UnavailableError,
  [Status.CANCELLED]: CancelledError,
  [Status.UNAUTHENTICATED]: UnauthenticatedError,
  [Status.PERMISSION_DENIED]: PermissionDeniedError,
  [Status.INTERNAL]: InternalError,
};

/**
 * Rebuilds a MeshError from a status that crossed a hop (a gRPC error from
 * another service, or a runtime-stream item's code), keeping its message.
 */
export function fromStatus(code: number, message: string): MeshError {
  if (code === Status.INVALID_ARGUMENT) {
    const at = message.indexOf(': ');
    return at > 0
      ? new InvalidArgumentError(message.slice(0, at), message.slice(at + 2))
      : new InvalidArgumentError('request', message);
  }
  const Ctor = byCode[code as Status] ?? InternalError;
  return new Ctor(message);
}

/** True for a grpc-js ServiceError (an error returned by a remote call). */
export function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as ServiceError).code === 'number' && 'details' in err;
}

/**
 * The one place where errors become gRPC statuses. A MeshError keeps its code
 * and message; a remote ServiceError keeps its code and details; anything else
 * is INTERNAL with a fixed message, so no stack, path or payload leaks.
 */
export function toStatus(err: unknown): Partial<StatusObject> & { code: Status; details: string } {
  if (err instanceof MeshError) return { code: err.code, details: err.message, metadata: new Metadata() };
  if (isServiceError(err)) return { code: err.code, details: err.details, metadata: new Metadata() };
  return { code: Status.INTERNAL, details: 'internal error', metadata: new Metadata() };
}

/**
 * The one mapping from a status to an HTTP status (the REST gateway):
 * INVALID_ARGUMENT and FAILED_PRECONDITION 400 (as Triton answers a refused
 * repository call), UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND
 * 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
 * anything else 500.
 */
export function httpStatusOf(code: number): number {
  return HTTP_STATUS[code as Status] ?? 500;
}

const HTTP_STATUS: Partial<Record<Status, number>> = {
  [Status.INVALID_ARGUMENT]: 400,
  [Status.FAILED_PRECONDITION]: 400,
  [Status.UNAUTHENTICATED]: 401,
  [Status.PERMISSION_DENIED]: 403,
  [Status.NOT_FOUND]: 404,
  [Status.RESOURCE_EXHAUSTED]: 429,
  [Status.UNAVAILABLE]: 503,
  [Status.DEADLINE_EXCEEDED]: 504,
};

/** Status code name, e.g. 5 -> "NOT_FOUND". */
export function codeName(code: number): string {
  return Status[code] ?? String(code);
}
