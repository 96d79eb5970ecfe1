// The `<key name>:<base64>` signature string of narinfo `Sig` lines (PROTOCOL.md §4.1). Kept apart from
// the keys (signing.ts) so the narinfo parser can validate `Sig` lines without depending on signing.

import { NixFormatError } from '../errors.js';
import { decodeBase64Strict } from './base64.js';

export const SIGNATURE_LENGTH = 64;

export interface ParsedSignature {
  readonly keyName: string;
  readonly signature: Buffer;
}

/** Key names: non-empty, no whitespace or control characters (they are split off at the first ':'). */
// eslint-disable-next-line no-control-regex
const KEY_NAME_BAD_CHARS = /[\s\u0000-\u001f\u007f]/;

export function keyNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the key name is empty';
  if (KEY_NAME_BAD_CHARS.test(name)) return 'the key name contains whitespace or control characters';
  return undefined;
}

/** Parses `<name>:<base64 of 64 bytes>`. Throws SIGNATURE_INVALID. */
export function parseSignature(text: string): ParsedSignature {
  const invalid = (why: string): NixFormatError =>
    new NixFormatError('SIGNATURE_INVALID', `invalid signature ${JSON.stringify(text)}: ${why}`);
  const colon = text.indexOf(':');
  if (colon < 0) throw invalid('expected <key name>:<base64>');
  const keyName = text.slice(0, colon);
  const problem = keyNameProblem(keyName);
  if (problem !== undefined) throw invalid(problem);
  const signature = decodeBase64Strict(text.slice(colon + 1));
  if (signature === undefined) throw invalid('the signature is not valid base64');
  if (signature.length !== SIGNATURE_LENGTH) {
    throw invalid(`the signature has ${signature.length} bytes, expected ${SIGNATURE_LENGTH}`);
  }
  return { keyName, signature };
}
