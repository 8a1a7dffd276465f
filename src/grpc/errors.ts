/**
 * The one place a failure becomes a gRPC status, and a gRPC status becomes a CitadelError.
 */
import { status as Status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { CitadelError, type ErrorCode } from '../errors.js';

/** What a handler sends back: only the safe message of a CitadelError; anything else is a bare INTERNAL. */
export function toGrpcStatus(err: unknown): Pick<StatusObject, 'code' | 'details'> {
  if (err instanceof CitadelError) return { code: err.grpcStatus, details: err.message };
  return { code: Status.INTERNAL, details: 'internal error' };
}

// How a client classifies what the server (or the transport) answered.
const CLIENT_CODES: Partial<Record<Status, ErrorCode>> = {
  [Status.UNAUTHENTICATED]: 'UNAUTHENTICATED',
  [Status.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [Status.RESOURCE_EXHAUSTED]: 'RATE_LIMITED',
  [Status.INVALID_ARGUMENT]: 'CSR_INVALID',
  [Status.FAILED_PRECONDITION]: 'CHAIN_INVALID',
  [Status.UNAVAILABLE]: 'UPSTREAM_UNAVAILABLE',
  [Status.DEADLINE_EXCEEDED]: 'UPSTREAM_UNAVAILABLE',
  [Status.CANCELLED]: 'UPSTREAM_UNAVAILABLE',
  [Status.ABORTED]: 'UPSTREAM_UNAVAILABLE',
  [Status.UNIMPLEMENTED]: 'UPSTREAM_UNAVAILABLE',
};

/**
 * Maps an error from a gRPC client call to a CitadelError. The message names the remote status and carries the
 * server's details (already safe by construction on our server; from a foreign CA it is the peer's text).
 */
export function fromGrpcError(err: unknown, what: string): CitadelError {
  if (err instanceof CitadelError) return err;
  const e = err as Partial<ServiceError>;
  if (typeof e?.code !== 'number') {
    return new CitadelError('INTERNAL', `${what}: internal error`, err instanceof Error ? err.message : String(err), { cause: err });
  }
  const code = CLIENT_CODES[e.code as Status] ?? 'UPSTREAM_UNAVAILABLE';
  const statusName = Status[e.code] ?? String(e.code);
  const details = e.details ?? '';
  return new CitadelError(code, `${what}: ${statusName}${details ? `: ${details}` : ''}`, details || undefined, { cause: err });
}

/** True for statuses worth retrying after rebuilding the connection (Istio retries the same set). */
export function isRetryableStatus(code: number): boolean {
  return [Status.CANCELLED, Status.DEADLINE_EXCEEDED, Status.RESOURCE_EXHAUSTED, Status.ABORTED, Status.INTERNAL, Status.UNAVAILABLE].includes(code);
}
