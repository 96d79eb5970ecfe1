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
  | 'TOKEN_MISSING'
  | 'TOKEN_INVALID'
  | 'PERMISSION_DENIED'
  // configuration and start-up
  | 'CONFIG_INVALID'
  | 'DATA_DIR_UNUSABLE'
  | 'LISTEN_FAILED'
  | 'KEY_FILE_INVALID'
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
    code: 'PATH_CONFLICT' | 'PATH_REFERENCED' | 'CACHE_EXISTS' | 'KEY_EXISTS' | 'REALISATION_CONFLICT',
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
    code: 'CONFIG_INVALID' | 'DATA_DIR_UNUSABLE' | 'LISTEN_FAILED' | 'KEY_FILE_INVALID',
    message: string,
    options?: ErrorOptions,
  ) {
    super('config', code, message, options);
  }
}

export class StorageError extends NicheError {
  constructor(message: string, options?: ErrorOptions) {
    super('internal', 'STORAGE_FAILURE', message, options);
  }
}

export class DatabaseError extends NicheError {
  constructor(message: string, options?: ErrorOptions) {
    super('internal', 'DATABASE_FAILURE', message, options);
  }
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

export function isNicheError(error: unknown): error is NicheError {
  return error instanceof NicheError;
}
