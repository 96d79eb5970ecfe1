// Errors only the client commands raise: a server that answered with a failure niche has no specific class
// for, a server that could not be reached, and a `nix` command that failed. `retryable` says whether trying
// the same request again later may succeed (5xx, 408, 429, network trouble), which the push scheduler
// honours; other 4xx answers are final.
import {
  type ErrorCode,
  type ErrorKind,
  ForbiddenError,
  NicheError,
  NotFoundError,
  UnauthenticatedError,
} from '../errors.js';

/** A server answer that maps to no more specific class (5xx, 429, unexpected statuses). */
export class RemoteError extends NicheError {
  constructor(
    kind: ErrorKind,
    code: ErrorCode,
    message: string,
    readonly status: number,
    readonly retryable: boolean,
    /** How long the server asked to wait before retrying (its Retry-After), if it said. */
    readonly retryAfterMs?: number,
  ) {
    super(kind, code, message);
  }
}

/** The wait the server asked for before retrying after `error`, in milliseconds (0 if none). */
export function retryAfterOf(error: unknown): number {
  return error instanceof RemoteError ? (error.retryAfterMs ?? 0) : 0;
}

/** The server could not be reached, or did not answer in time. */
export class NetworkError extends NicheError {
  readonly retryable = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super('unavailable', 'NETWORK_ERROR', message, options);
  }
}

/** The server answered 2xx with a body that is not what src/api/v1.ts promises. */
export class ResponseInvalidError extends NicheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('internal', 'RESPONSE_INVALID', message, options);
  }
}

/** `nix` is not installed, or a nix command failed. */
export class NixCommandError extends NicheError {
  constructor(
    code: 'NIX_UNAVAILABLE' | 'NIX_COMMAND_FAILED',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code === 'NIX_UNAVAILABLE' ? 'unavailable' : 'internal', code, message, options);
  }
}

/** Whether an error is worth retrying: network trouble, timeouts, 5xx, 408 and 429 answers. */
export function isRetryable(error: unknown): boolean {
  return (error instanceof RemoteError || error instanceof NetworkError) && error.retryable;
}

/**
 * Whether an error ends a whole push rather than one path: the token is refused or lacks the permission,
 * or the cache is gone. Every other path would get the same answer, so pushing stops at the first.
 */
export function endsPush(error: unknown): error is NicheError {
  return (
    error instanceof UnauthenticatedError ||
    error instanceof ForbiddenError ||
    (error instanceof NotFoundError && error.code === 'CACHE_NOT_FOUND')
  );
}
