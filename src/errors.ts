// The catalogue of errors niche raises on purpose. Every error has a stable `code` (documented below, safe
// to match on in scripts and tests) and a `kind` that says what went wrong in general terms. The HTTP
// layer maps kinds to status codes in one place (src/http/error-mapping.ts) and the CLI maps them to exit
// codes in one place (src/cli/exit-codes.ts); nothing else decides either.

export type ErrorKind =
  | 'invalid' // the request or input is malformed or inconsistent (HTTP 400)
  | 'unauthenticated' // no credentials or wrong credentials (HTTP 401)
  | 'forbidden' // credentials are valid but lack the permission (HTTP 403)
  | 'not-found' // the thing does not exist, or the caller may not know it exists (HTTP 404)
  | 'conflict' // the request contradicts what is already stored (HTTP 409)
  | 'too-large' // a body or field exceeds a configured limit (HTTP 413)
  | 'unsupported' // a well-formed request for something niche does not do (HTTP 415/501)
  | 'unavailable' // a backend is down or the server is shutting down (HTTP 503)
  | 'config' // the configuration or environment is wrong (start-up failure)
  | 'internal'; // a bug or an unexpected backend failure (HTTP 500)

export type ErrorCode =
  // Nix formats (src/nix)
  | 'NIX32_INVALID'
  | 'HASH_INVALID'
  | 'STORE_PATH_INVALID'
  | 'NAR_INVALID'
  | 'NARINFO_INVALID'
  | 'LISTING_INVALID'
  | 'REALISATION_INVALID'
  | 'CACHE_INFO_INVALID'
  | 'KEY_INVALID'
  | 'SIGNATURE_INVALID'
  // the SSH protocols (src/nix/wire.ts, src/ssh)
  | 'PROTOCOL_INVALID'
  | 'SSH_COMMAND_REFUSED'
  // upload verification (src/cache)
  | 'FILE_HASH_MISMATCH'
  | 'FILE_SIZE_MISMATCH'
  | 'NAR_HASH_MISMATCH'
  | 'NAR_SIZE_MISMATCH'
  | 'COMPRESSION_INVALID'
  | 'COMPRESSION_MISMATCH'
  | 'NAR_NOT_UPLOADED'
  | 'REFERENCE_MISSING'
  | 'STORE_PATH_MISMATCH'
  | 'PATH_CONFLICT'
  | 'PATH_REFERENCED'
  | 'PATH_PINNED'
  | 'GC_RUNNING'
  | 'GC_OUT_OF_MEMORY'
  | 'UPLOAD_INCOMPLETE'
  | 'LISTING_MISMATCH'
  | 'REALISATION_CONFLICT'
  | 'BODY_TOO_LARGE'
  // requests and auth
  | 'BAD_REQUEST'
  | 'NOT_SUPPORTED'
  | 'MEDIA_TYPE_UNSUPPORTED'
  | 'RANGE_NOT_SATISFIABLE'
  | 'NOT_FOUND'
  | 'CACHE_NOT_FOUND'
  | 'CACHE_NAME_INVALID'
  | 'CACHE_EXISTS'
  | 'KEY_EXISTS'
  | 'SSH_KEY_INVALID'
  | 'SSH_KEY_EXISTS'
  | 'TOKEN_MISSING'
  | 'TOKEN_INVALID'
  | 'PERMISSION_DENIED'
  // configuration and start-up
  | 'CONFIG_INVALID'
  | 'DATA_DIR_UNUSABLE'
  | 'LISTEN_FAILED'
  | 'KEY_FILE_INVALID'
  | 'TLS_INVALID'
  // `niche serve --workers N` (src/app/cluster-primary.ts)
  | 'WORKERS_FAILING'
  // backends
  | 'STORAGE_FAILURE'
  | 'DATABASE_FAILURE'
  | 'SHUTTING_DOWN'
  | 'OVERLOADED'
  | 'INTERNAL'
  // the client commands (src/client)
  | 'SERVER_UNKNOWN'
  | 'CLIENT_CONFIG_INVALID'
  | 'SERVER_ERROR'
  | 'NETWORK_ERROR'
  | 'RESPONSE_INVALID'
  | 'NIX_UNAVAILABLE'
  | 'NIX_COMMAND_FAILED'
  | 'FILE_NOT_WRITABLE'
  | 'PUSH_FAILED';

export interface ErrorOptions {
  readonly cause?: unknown;
}

/** Base of every error niche throws on purpose. */
export class NicheError extends Error {
  readonly code: ErrorCode;
  readonly kind: ErrorKind;

  constructor(kind: ErrorKind, code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.kind = kind;
    this.code = code;
  }
}

/** Input that is malformed or inconsistent: bad NAR, bad narinfo, hash mismatch, bad URL. */
export class InvalidInputError extends NicheError {
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super('invalid', code, message, options);
  }
}

/** A Nix format (NAR, narinfo, nix32, store path, key) could not be parsed. */
export class NixFormatError extends InvalidInputError {}

/**
 * A peer of the SSH protocols (serve or worker) sent bytes that break the wire format or the protocol:
 * a string or list longer than the limit, an integer out of range, a bad magic, an unknown opcode.
 */
export class ProtocolError extends InvalidInputError {
  constructor(message: string, options?: ErrorOptions) {
    super('PROTOCOL_INVALID', message, options);
  }
}

/** An SSH client asked to run a command niche does not serve (a shell, scp, anything but Nix's own). */
export class SshCommandRefusedError extends NicheError {
  constructor(message: string) {
    super('forbidden', 'SSH_COMMAND_REFUSED', message);
  }
}

export class UnauthenticatedError extends NicheError {
  constructor(code: 'TOKEN_MISSING' | 'TOKEN_INVALID', message: string) {
    super('unauthenticated', code, message);
  }
}

export class ForbiddenError extends NicheError {
  constructor(message: string) {
    super('forbidden', 'PERMISSION_DENIED', message);
  }
}

export class NotFoundError extends NicheError {
  constructor(code: 'NOT_FOUND' | 'CACHE_NOT_FOUND' | 'NAR_NOT_UPLOADED', message: string) {
    super('not-found', code, message);
  }
}

export class ConflictError extends NicheError {
  constructor(
    code:
      | 'PATH_CONFLICT'
      | 'PATH_REFERENCED'
      | 'PATH_PINNED'
      | 'GC_RUNNING'
      | 'CACHE_EXISTS'
      | 'KEY_EXISTS'
      | 'SSH_KEY_EXISTS'
      | 'REALISATION_CONFLICT',
    message: string,
  ) {
    super('conflict', code, message);
  }
}

export class TooLargeError extends NicheError {
  constructor(message: string) {
    super('too-large', 'BODY_TOO_LARGE', message);
  }
}

export class RangeNotSatisfiableError extends NicheError {
  readonly size: number;
  constructor(size: number, message: string) {
    super('invalid', 'RANGE_NOT_SATISFIABLE', message);
    this.size = size;
  }
}

/** A well-formed request for something niche does not do (yet). */
export class UnsupportedError extends NicheError {
  constructor(message: string) {
    super('unsupported', 'NOT_SUPPORTED', message);
  }
}

/** A request body whose Content-Type the endpoint does not take (HTTP 415). */
export class UnsupportedMediaTypeError extends NicheError {
  constructor(message: string) {
    super('unsupported', 'MEDIA_TYPE_UNSUPPORTED', message);
  }
}

/** Too much of some costly work is already under way; the client should retry later (HTTP 503). */
export class ConfigError extends NicheError {
  constructor(
    code: 'CONFIG_INVALID' | 'DATA_DIR_UNUSABLE' | 'LISTEN_FAILED' | 'KEY_FILE_INVALID' | 'TLS_INVALID',
    message: string,
    options?: ErrorOptions,
  ) {
    super('config', code, message, options);
  }
}

/**
 * A blob store failure. One whose cause is transient (a connection refused or reset, S3 throttling or a
 * 5xx, too many open files) is `unavailable` (HTTP 503 with Retry-After: clients retry); any other is
 * `internal` (HTTP 500).
 */
export class StorageError extends NicheError {
  constructor(message: string, options?: ErrorOptions) {
    super(
      isTransientFailure(options?.cause) ? 'unavailable' : 'internal',
      'STORAGE_FAILURE',
      message,
      options,
    );
  }
}

/** A metadata store failure; transient ones (connection lost, database busy) are `unavailable`, as above. */
export class DatabaseError extends NicheError {
  constructor(message: string, options?: ErrorOptions) {
    super(
      isTransientFailure(options?.cause) ? 'unavailable' : 'internal',
      'DATABASE_FAILURE',
      message,
      options,
    );
  }
}

/** errno codes of failures that go away by themselves: the network, a peer restarting, descriptors. */
const TRANSIENT_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'EMFILE',
  'ENFILE',
  'EAGAIN',
  'EBUSY',
]);

/** AWS SDK error names of S3 asking the client to slow down or try again. */
const TRANSIENT_S3_NAMES = new Set([
  'SlowDown',
  'ServiceUnavailable',
  'InternalError',
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'Throttling',
  'ThrottlingException',
  'TimeoutError',
]);

/** node-postgres messages of a connection lost or never made (they carry no SQLSTATE). */
const TRANSIENT_PG_MESSAGE =
  /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/;

/**
 * Whether a backend failure is worth retrying: walks the cause chain (bounded) and an AggregateError's
 * members (Node's happy-eyeballs connect failures) looking for a transient errno, SQLite busy, a PostgreSQL
 * connection or resource class SQLSTATE (08, 53, 57P0x, serialization failures), or S3 throttling and 5xx.
 * Recognised by shape, so this layer imports no backend library.
 */
export function isTransientFailure(error: unknown, depth = 0): boolean {
  if (depth > 8 || typeof error !== 'object' || error === null) return false;
  const fields = error as {
    code?: unknown;
    name?: unknown;
    message?: unknown;
    cause?: unknown;
    errors?: unknown;
    $metadata?: { httpStatusCode?: unknown };
  };
  const code = typeof fields.code === 'string' ? fields.code : undefined;
  if (code !== undefined) {
    if (TRANSIENT_ERRNO.has(code)) return true;
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return true;
    if (
      /^(08|53)[0-9A-Z]{3}$/.test(code) ||
      /^57P0[123]$/.test(code) ||
      code === '40001' ||
      code === '40P01'
    ) {
      return true;
    }
  }
  const status = fields.$metadata?.httpStatusCode;
  if (typeof status === 'number' && (status >= 500 || status === 429)) return true;
  if (typeof fields.name === 'string' && TRANSIENT_S3_NAMES.has(fields.name)) return true;
  if (typeof fields.message === 'string' && TRANSIENT_PG_MESSAGE.test(fields.message)) return true;
  if (
    Array.isArray(fields.errors) &&
    fields.errors.slice(0, 8).some((e) => isTransientFailure(e, depth + 1))
  ) {
    return true;
  }
  return isTransientFailure(fields.cause, depth + 1);
}

/**
 * The server sheds load (too many uploads in progress): answered 503 with `Retry-After`, which Nix 2.29
 * and later honour, before the request body is read.
 */
export class OverloadedError extends NicheError {
  constructor(
    message: string,
    /** Seconds the client should wait before retrying. */
    readonly retryAfterSeconds: number,
  ) {
    super('unavailable', 'OVERLOADED', message);
  }
}

/**
 * `niche serve --workers N`: a worker process failed. Either it could not start (the error it reported, with
 * its kind and code, so the primary exits as one process would have), or workers kept dying soon after
 * starting (`WORKERS_FAILING`), and the primary gave up instead of forking them forever.
 */
export class WorkerError extends NicheError {}

/**
 * Garbage collection in its process or thread (src/app/isolated-gc.ts) failed: with the kind and code of the
 * error it raised there, or `GC_OUT_OF_MEMORY` when it needed more heap than it may use.
 */
export class IsolatedGcError extends NicheError {}

export function isNicheError(error: unknown): error is NicheError {
  return error instanceof NicheError;
}
