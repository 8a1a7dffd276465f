/**
 * Typed errors with stable codes. Every failure that crosses a module boundary is a CitadelError whose
 * `code` picks one row of ERROR_TABLE: the gRPC status it maps to and the label it is counted under.
 * `message` is short and safe to return to a caller; `detail` is for logs only (never keys or tokens).
 */

/** gRPC status codes (numbers from the gRPC spec), kept here so pure modules need not import @grpc. */
export const GrpcStatus = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

interface ErrorRow {
  grpc: GrpcStatusCode;
  /** Label for `citadel_server_csr_sign_err_count{error}` and similar counters (Istio's names where they exist). */
  metric: string;
}

export const ERROR_TABLE = {
  // Input that could not be parsed or is malformed.
  PEM_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  PEM_MULTIPLE: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  DER_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  INPUT_TOO_LARGE: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  CSR_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  SIGNATURE_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  KEY_UNSUPPORTED: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  KEY_TOO_WEAK: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  SPIFFE_ID_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CSR_ERROR' },
  TTL_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'TTL_ERROR' },
  /** A request that breaks its protocol's rules (Workload API: no security header, no audience). */
  REQUEST_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'REQUEST_ERROR' },
  /** A JWT-SVID or SPIFFE bundle that does not validate. */
  JWT_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'JWT_ERROR' },
  // Certificates and chains that do not hold together.
  CERT_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CERT_ERROR' },
  CHAIN_INVALID: { grpc: GrpcStatus.FAILED_PRECONDITION, metric: 'CHAIN_ERROR' },
  CERT_EXPIRED: { grpc: GrpcStatus.FAILED_PRECONDITION, metric: 'CHAIN_ERROR' },
  KEY_MISMATCH: { grpc: GrpcStatus.FAILED_PRECONDITION, metric: 'CHAIN_ERROR' },
  NOT_A_CA: { grpc: GrpcStatus.FAILED_PRECONDITION, metric: 'CHAIN_ERROR' },
  // Callers.
  UNAUTHENTICATED: { grpc: GrpcStatus.UNAUTHENTICATED, metric: 'AUTHN_ERROR' },
  PERMISSION_DENIED: { grpc: GrpcStatus.PERMISSION_DENIED, metric: 'IDENTITY_MISMATCH' },
  RATE_LIMITED: { grpc: GrpcStatus.RESOURCE_EXHAUSTED, metric: 'RATE_LIMITED' },
  /** The Workload API has no identity for the caller yet (the spec's PermissionDenied; clients retry). */
  NO_IDENTITY: { grpc: GrpcStatus.PERMISSION_DENIED, metric: 'NO_IDENTITY' },
  // Load shedding: the CA could not give the call a turn before its deadline (src/ca/admission.ts).
  CA_BUSY: { grpc: GrpcStatus.RESOURCE_EXHAUSTED, metric: 'CA_BUSY' },
  // The CA itself.
  // Not ready is a state that passes (material loading, a signing certificate renewing): UNAVAILABLE, so callers retry.
  CA_NOT_READY: { grpc: GrpcStatus.UNAVAILABLE, metric: 'CA_NOT_READY' },
  CERT_GEN_ERROR: { grpc: GrpcStatus.INTERNAL, metric: 'CERT_GEN_ERROR' },
  CA_MATERIAL_INVALID: { grpc: GrpcStatus.INTERNAL, metric: 'CA_MATERIAL_INVALID' },
  // Configuration and the outside world.
  CONFIG_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, metric: 'CONFIG_ERROR' },
  UPSTREAM_UNAVAILABLE: { grpc: GrpcStatus.UNAVAILABLE, metric: 'UPSTREAM_UNAVAILABLE' },
  INTERNAL: { grpc: GrpcStatus.INTERNAL, metric: 'INTERNAL' },
} as const satisfies Record<string, ErrorRow>;

export type ErrorCode = keyof typeof ERROR_TABLE;

export class CitadelError extends Error {
  override readonly name = 'CitadelError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Extra context for logs; never shown to remote callers. */
    readonly detail?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get grpcStatus(): GrpcStatusCode {
    return ERROR_TABLE[this.code].grpc;
  }

  get metricLabel(): string {
    return ERROR_TABLE[this.code].metric;
  }
}

/** Wraps anything thrown into a CitadelError, keeping CitadelErrors as they are. */
export function toCitadelError(err: unknown, fallback: ErrorCode = 'INTERNAL'): CitadelError {
  if (err instanceof CitadelError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CitadelError(fallback, fallback === 'INTERNAL' ? 'internal error' : message, message, { cause: err });
}

export function isCitadelError(err: unknown, code?: ErrorCode): err is CitadelError {
  return err instanceof CitadelError && (code === undefined || err.code === code);
}
