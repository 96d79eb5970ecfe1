// Store paths (`/nix/store/<hash>-<name>`) as validated values: once parsed, the hash part and name are
// known to be well formed, so code further up never re-checks them and can use the hash part as the cache
// key (PROTOCOL.md §2.3).

import { NixFormatError } from '../errors.js';
import { isNix32 } from './nix32.js';

export const DEFAULT_STORE_DIR = '/nix/store';

/** The 32 nix32 characters that identify a store path (and name its `.narinfo`). */
export type StorePathHash = string & { readonly __brand: 'StorePathHash' };

export const STORE_PATH_HASH_LENGTH = 32;
export const STORE_PATH_NAME_MAX_LENGTH = 211;

/** The characters of a store path name as a regular-expression character class. */
export const STORE_PATH_NAME_CLASS = '[A-Za-z0-9+\\-._?=]';
const NAME_CHARS = new RegExp(`^${STORE_PATH_NAME_CLASS}+$`);

export function isStorePathHash(text: string): text is StorePathHash {
  return isNix32(text, STORE_PATH_HASH_LENGTH);
}

export function parseStorePathHash(text: string): StorePathHash {
  if (!isStorePathHash(text)) {
    throw new NixFormatError(
      'STORE_PATH_INVALID',
      `invalid store path hash ${JSON.stringify(text)}: expected ${STORE_PATH_HASH_LENGTH} nix32 characters`,
    );
  }
  return text;
}

/** Why `name` is not a valid store path name, or undefined if it is. */
export function storePathNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > STORE_PATH_NAME_MAX_LENGTH) {
    return `the name is longer than ${STORE_PATH_NAME_MAX_LENGTH} characters`;
  }
  if (!NAME_CHARS.test(name)) return 'the name contains a character outside [A-Za-z0-9+-._?=]';
  if (name === '.' || name === '..') return `the name may not be "${name}"`;
  if (name.startsWith('.-') || name.startsWith('..-')) return 'the name may not start with ".-" or "..-"';
  return undefined;
}

function invalidPath(text: string, why: string): NixFormatError {
  return new NixFormatError('STORE_PATH_INVALID', `invalid store path ${JSON.stringify(text)}: ${why}`);
}

export class StorePath {
  private constructor(
    readonly hash: StorePathHash,
    readonly name: string,
  ) {}

  /** Parses a full path `<storeDir>/<hash>-<name>`. No trailing slash, no sub-path, no `..`. */
  static parse(fullPath: string, storeDir: string = DEFAULT_STORE_DIR): StorePath {
    const prefix = `${storeDir}/`;
    if (!fullPath.startsWith(prefix)) throw invalidPath(fullPath, `not in the store directory ${storeDir}`);
    const baseName = fullPath.slice(prefix.length);
    if (baseName.includes('/')) {
      throw invalidPath(fullPath, 'expected <storeDir>/<hash>-<name> with nothing after the name');
    }
    const result = StorePath.tryParseBaseName(baseName);
    if (typeof result === 'string') throw invalidPath(fullPath, result);
    return result;
  }

  /** Parses `<hash>-<name>`, the form used in narinfo `References` and `Deriver`. */
  static parseBaseName(baseName: string): StorePath {
    const result = StorePath.tryParseBaseName(baseName);
    if (typeof result === 'string') throw invalidPath(baseName, result);
    return result;
  }

  /** The parsed path, or why `baseName` is not `<hash>-<name>`. */
  private static tryParseBaseName(baseName: string): StorePath | string {
    const hash = baseName.slice(0, STORE_PATH_HASH_LENGTH);
    if (baseName.length < STORE_PATH_HASH_LENGTH + 2 || baseName[STORE_PATH_HASH_LENGTH] !== '-') {
      return 'expected <32-character hash>-<name>';
    }
    if (!isStorePathHash(hash)) return 'the hash part is not 32 nix32 characters';
    const name = baseName.slice(STORE_PATH_HASH_LENGTH + 1);
    return storePathNameProblem(name) ?? new StorePath(hash, name);
  }

  /** Builds a store path from parts, validating both. */
  static fromParts(hash: string, name: string): StorePath {
    return StorePath.parseBaseName(`${hash}-${name}`);
  }

  /** `<hash>-<name>`. */
  get baseName(): string {
    return `${this.hash}-${this.name}`;
  }

  /** The full path in `storeDir`. */
  toString(storeDir: string = DEFAULT_STORE_DIR): string {
    return `${storeDir}/${this.hash}-${this.name}`;
  }

  toJSON(): string {
    return this.toString();
  }

  equals(other: StorePath): boolean {
    return this.hash === other.hash && this.name === other.name;
  }
}
