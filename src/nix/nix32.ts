// Nix's own base-32 ("nix32"): the encoding of store path hashes and of hashes in narinfos. It is not
// RFC 4648: the bytes are read as a little-endian number and printed most significant digit first, with an
// alphabet that omits e, o, u and t (PROTOCOL.md §2.1).

import { NixFormatError } from '../errors.js';

export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';
/** The alphabet as a regular-expression character class, for URL patterns. */
export const NIX32_CLASS = '[0-9a-df-np-sv-z]';

// Character code -> digit value, or -1. Covers the ASCII range; anything above is invalid.
const DIGIT_OF = new Int8Array(128).fill(-1);
for (let digit = 0; digit < NIX32_ALPHABET.length; digit++) {
  DIGIT_OF[NIX32_ALPHABET.charCodeAt(digit)] = digit;
}

/** The number of nix32 characters for `byteLength` bytes: ceil(8·n / 5). */
export function nix32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

export function encodeNix32(bytes: Uint8Array): string {
  const size = bytes.length;
  let out = '';
  for (let n = nix32Length(size) - 1; n >= 0; n--) {
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    const low = bytes[i] ?? 0;
    const high = i + 1 < size ? (bytes[i + 1] ?? 0) : 0;
    out += NIX32_ALPHABET.charAt(((low >> j) | (high << (8 - j))) & 0x1f);
  }
  return out;
}

/** Decodes into `output` (zero-filled, `byteLength` long); returns an error message or undefined. */
function decodeInto(text: string, output: Uint8Array): string | undefined {
  const size = output.length;
  if (text.length !== nix32Length(size)) {
    return `expected ${nix32Length(size)} characters for ${size} bytes, got ${text.length}`;
  }
  const last = text.length - 1;
  for (let k = 0; k <= last; k++) {
    const code = text.charCodeAt(k);
    const digit = code < 128 ? (DIGIT_OF[code] ?? -1) : -1;
    if (digit < 0) return `invalid character ${JSON.stringify(text.charAt(k))} at position ${k}`;
    const bit = (last - k) * 5;
    const i = bit >> 3;
    const j = bit & 7;
    output[i] = (output[i] ?? 0) | ((digit << j) & 0xff);
    const carry = digit >> (8 - j);
    if (i + 1 < size) {
      output[i + 1] = (output[i + 1] ?? 0) | carry;
    } else if (carry !== 0) {
      return 'non-zero excess bits in the first character';
    }
  }
  return undefined;
}

/** Decodes nix32 text that must encode exactly `byteLength` bytes. Throws NIX32_INVALID otherwise. */
export function decodeNix32(text: string, byteLength: number): Buffer {
  const output = Buffer.alloc(byteLength);
  const problem = decodeInto(text, output);
  if (problem !== undefined) {
    throw new NixFormatError('NIX32_INVALID', `invalid nix32 string ${JSON.stringify(text)}: ${problem}`);
  }
  return output;
}

/**
 * Whether `text` is valid nix32 of exactly `length` characters (a length that some byte count encodes to,
 * e.g. 32 for store path hashes, 52 for SHA-256), including the check that excess high bits are zero.
 */
export function isNix32(text: string, length: number): boolean {
  if (text.length !== length) return false;
  const byteLength = Math.floor((length * 5) / 8);
  if (nix32Length(byteLength) !== length) return false;
  return decodeInto(text, new Uint8Array(byteLength)) === undefined;
}
