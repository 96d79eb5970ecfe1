// Shared assertion for the nix format tests: a call must throw a NixFormatError with a given code and,
// optionally, a message matching a pattern.

import assert from 'node:assert/strict';
import { type ErrorCode, NixFormatError } from '../../../src/errors.js';

export function assertNixError(fn: () => unknown, code: ErrorCode, message?: RegExp): NixFormatError {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  assert.ok(thrown instanceof NixFormatError, `expected a NixFormatError ${code}, got ${String(thrown)}`);
  assert.equal(thrown.code, code, thrown.message);
  if (message !== undefined) assert.match(thrown.message, message);
  return thrown;
}
