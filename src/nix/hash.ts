// A cryptographic hash with its algorithm, and the string forms Nix reads and writes (PROTOCOL.md §2.2):
// `algo:<nix32|base16|base64>`, SRI `algo-<base64>` and bare digests. NarHash, FileHash and CA values in
// narinfos go through here.

import { createHash } from 'node:crypto';
import { NixFormatError } from '../errors.js';
import { base64Length, decodeBase64Strict } from './base64.js';
import { decodeNix32, encodeNix32, nix32Length } from './nix32.js';

export type HashAlgorithm = 'md5' | 'sha1' | 'sha256' | 'sha512';

const HASH_SIZES: Readonly<Record<HashAlgorithm, number>> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };

export function isHashAlgorithm(name: string): name is HashAlgorithm {
  return Object.hasOwn(HASH_SIZES, name);
}

/** The digest size in bytes. */
export function hashSize(algorithm: HashAlgorithm): number {
  return HASH_SIZES[algorithm];
}

const BASE16 = /^[0-9a-fA-F]*$/;

function invalid(text: string, why: string): NixFormatError {
  return new NixFormatError('HASH_INVALID', `invalid hash ${JSON.stringify(text)}: ${why}`);
}

function parseAlgorithm(name: string, text: string): HashAlgorithm {
  if (!isHashAlgorithm(name)) throw invalid(text, `unknown hash algorithm ${JSON.stringify(name)}`);
  return name;
}

/** Decodes a digest without a prefix, choosing base16, nix32 or base64 by its length, as Nix does. */
function decodeDigest(digest: string, algorithm: HashAlgorithm, text: string): Buffer {
  const size = HASH_SIZES[algorithm];
  if (digest.length === size * 2) {
    if (!BASE16.test(digest)) throw invalid(text, 'invalid base16 digest');
    return Buffer.from(digest, 'hex');
  }
  if (digest.length === nix32Length(size)) {
    try {
      return decodeNix32(digest, size);
    } catch (error) {
      throw new NixFormatError('HASH_INVALID', `invalid hash ${JSON.stringify(text)}: invalid nix32 digest`, {
        cause: error,
      });
    }
  }
  if (digest.length === base64Length(size)) return decodeBase64Digest(digest, size, text);
  throw invalid(text, `wrong length ${digest.length} for a ${algorithm} digest`);
}

function decodeBase64Digest(digest: string, size: number, text: string): Buffer {
  const bytes = decodeBase64Strict(digest);
  if (bytes === undefined) throw invalid(text, 'invalid base64 digest');
  if (bytes.length !== size) throw invalid(text, `base64 digest has ${bytes.length} bytes, expected ${size}`);
  return bytes;
}

export class Hash {
  constructor(
    readonly algorithm: HashAlgorithm,
    readonly bytes: Buffer,
  ) {
    if (bytes.length !== HASH_SIZES[algorithm]) {
      throw new NixFormatError(
        'HASH_INVALID',
        `a ${algorithm} hash has ${HASH_SIZES[algorithm]} bytes, got ${bytes.length}`,
      );
    }
  }

  /**
   * Parses `algo:<digest>` (nix32, base16 or base64, chosen by length) or SRI `algo-<base64>`. The prefix
   * is required, as in narinfo hash fields. Throws HASH_INVALID.
   */
  static parsePrefixed(text: string): Hash {
    const colon = text.indexOf(':');
    if (colon >= 0) {
      const algorithm = parseAlgorithm(text.slice(0, colon), text);
      return new Hash(algorithm, decodeDigest(text.slice(colon + 1), algorithm, text));
    }
    const dash = text.indexOf('-');
    if (dash >= 0) {
      const algorithm = parseAlgorithm(text.slice(0, dash), text);
      return new Hash(algorithm, decodeBase64Digest(text.slice(dash + 1), HASH_SIZES[algorithm], text));
    }
    throw invalid(text, 'missing "<algorithm>:" or SRI "<algorithm>-" prefix');
  }

  /**
   * Parses a prefixed or SRI hash (whose algorithm must then be `defaultAlgorithm`), or a bare digest of
   * `defaultAlgorithm` in nix32, base16 or base64.
   */
  static parseAny(text: string, defaultAlgorithm: HashAlgorithm): Hash {
    if (text.includes(':') || text.includes('-')) {
      const hash = Hash.parsePrefixed(text);
      if (hash.algorithm !== defaultAlgorithm) {
        throw invalid(text, `expected a ${defaultAlgorithm} hash, got ${hash.algorithm}`);
      }
      return hash;
    }
    return new Hash(defaultAlgorithm, decodeDigest(text, defaultAlgorithm, text));
  }

  static sha256(data: Uint8Array | string): Hash {
    return new Hash('sha256', createHash('sha256').update(data).digest());
  }

  /** The digest in nix32, without the algorithm prefix. */
  toNix32(): string {
    return encodeNix32(this.bytes);
  }

  /** The digest in lower-case hex, without the algorithm prefix. */
  toBase16(): string {
    return this.bytes.toString('hex');
  }

  /** The digest in padded standard base64, without the algorithm prefix. */
  toBase64(): string {
    return this.bytes.toString('base64');
  }

  /** `algo-<base64>`, the form of `nix path-info --json`. */
  toSri(): string {
    return `${this.algorithm}-${this.toBase64()}`;
  }

  /** `algo:<nix32>`, the form Nix writes in narinfos and fingerprints. */
  toString(): string {
    return `${this.algorithm}:${this.toNix32()}`;
  }

  toJSON(): string {
    return this.toString();
  }

  equals(other: Hash): boolean {
    return this.algorithm === other.algorithm && this.bytes.equals(other.bytes);
  }
}
