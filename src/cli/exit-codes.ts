// The one place that turns errors into process exit codes (sysexits.h values, so scripts can tell a
// configuration problem from bad input or a refused permission).
import { NicheError, type ErrorKind } from '../errors.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 64;

const EXIT_CODES: Record<ErrorKind, number> = {
  invalid: 65, // EX_DATAERR
  'not-found': 66, // EX_NOINPUT
  unauthenticated: 77, // EX_NOPERM
  forbidden: 77,
  conflict: 65,
  'too-large': 65,
  unsupported: 69, // EX_UNAVAILABLE
  unavailable: 69,
  config: 78, // EX_CONFIG
  internal: 70, // EX_SOFTWARE
};

export function exitCodeOf(error: unknown): number {
  return error instanceof NicheError ? EXIT_CODES[error.kind] : EXIT_FAILURE;
}

export function describeError(error: unknown): string {
  if (error instanceof NicheError) return `error: ${error.message} (${error.code})`;
  if (error instanceof Error) return `error: ${error.message}`;
  return `error: ${String(error)}`;
}
