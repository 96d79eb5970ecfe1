// Content addresses (the narinfo `CA` field, PROTOCOL.md §2.4) and the store path computation they imply
// (§2.3). A path whose store path really follows from its CA is trusted without signatures (§4.3), so the
// cache must be able to check such claims rather than take them on faith.

import { createHash } from 'node:crypto';
import { NixFormatError } from '../errors.js';
import { Hash } from './hash.js';
import { encodeNix32 } from './nix32.js';
import { DEFAULT_STORE_DIR, StorePath } from './store-path.js';

/** `text`: builtins.toFile/.drv; `flat`: a single file's bytes; `nar`: a NAR (`r:`); `git`: Nix ≥2.20. */
export type ContentAddressMethod = 'text' | 'flat' | 'nar' | 'git';

export interface ContentAddress {
  readonly method: ContentAddressMethod;
  readonly hash: Hash;
}

function invalid(text: string, why: string, cause?: unknown): NixFormatError {
  return new NixFormatError(
    'HASH_INVALID',
    `invalid content address ${JSON.stringify(text)}: ${why}`,
    cause === undefined ? undefined : { cause },
  );
}

/** Parses `text:sha256:<hash>`, `fixed:r:<algo>:<hash>`, `fixed:git:<algo>:<hash>` or `fixed:<algo>:<hash>`. */
export function parseContentAddress(text: string): ContentAddress {
  let method: ContentAddressMethod;
  let rest: string;
  if (text.startsWith('text:')) {
    method = 'text';
    rest = text.slice('text:'.length);
  } else if (text.startsWith('fixed:r:')) {
    method = 'nar';
    rest = text.slice('fixed:r:'.length);
  } else if (text.startsWith('fixed:git:')) {
    method = 'git';
    rest = text.slice('fixed:git:'.length);
  } else if (text.startsWith('fixed:')) {
    method = 'flat';
    rest = text.slice('fixed:'.length);
  } else {
    throw invalid(text, 'expected a "text:" or "fixed:" prefix');
  }
  if (!/^[a-z0-9]+:/.test(rest)) throw invalid(text, 'expected <algorithm>:<hash> after the method');
  let hash: Hash;
  try {
    hash = Hash.parsePrefixed(rest);
  } catch (error) {
    throw invalid(text, 'the hash does not parse', error);
  }
  if (method === 'text' && hash.algorithm !== 'sha256') throw invalid(text, 'text hashes must be sha256');
  if (method === 'git' && hash.algorithm !== 'sha1') throw invalid(text, 'git hashes must be sha1');
  return { method, hash };
}

const METHOD_PREFIX: Readonly<Record<ContentAddressMethod, string>> = {
  text: 'text:',
  flat: 'fixed:',
  nar: 'fixed:r:',
  git: 'fixed:git:',
};

/** The canonical form, with the hash in nix32. */
export function formatContentAddress(ca: ContentAddress): string {
  return `${METHOD_PREFIX[ca.method]}${ca.hash.toString()}`;
}

/**
 * Nix's `makeStorePath`: the store path named `name` whose hash part is
 * nix32(compress20(sha256("<type>:<algo>:<hex>:<storeDir>:<name>"))).
 */
export function makeStorePath(
  type: string,
  inner: Hash,
  name: string,
  storeDir = DEFAULT_STORE_DIR,
): StorePath {
  const digest = createHash('sha256')
    .update(`${type}:${inner.algorithm}:${inner.toBase16()}:${storeDir}:${name}`)
    .digest();
  const compressed = Buffer.alloc(20);
  for (let i = 0; i < digest.length; i++) {
    compressed[i % 20] = (compressed[i % 20] ?? 0) ^ (digest[i] ?? 0);
  }
  return StorePath.fromParts(encodeNix32(compressed), name);
}

function typeWithReferences(
  type: string,
  references: readonly StorePath[],
  selfReference: boolean,
  storeDir: string,
): string {
  const paths = [...new Set(references.map((reference) => reference.toString(storeDir)))].sort();
  return [type, ...paths, ...(selfReference ? ['self'] : [])].join(':');
}

/**
 * The store path a content-addressed object must have, or undefined if no such object can exist
 * (a text object referring to itself, or a non-NAR-SHA-256 one with references).
 * `references` excludes the path itself; `selfReference` says whether it refers to itself.
 */
export function contentAddressedStorePath(
  name: string,
  ca: ContentAddress,
  references: readonly StorePath[],
  selfReference: boolean,
  storeDir = DEFAULT_STORE_DIR,
): StorePath | undefined {
  if (ca.method === 'text') {
    if (selfReference) return undefined;
    return makeStorePath(typeWithReferences('text', references, false, storeDir), ca.hash, name, storeDir);
  }
  if (ca.method === 'nar' && ca.hash.algorithm === 'sha256') {
    return makeStorePath(
      typeWithReferences('source', references, selfReference, storeDir),
      ca.hash,
      name,
      storeDir,
    );
  }
  if (references.length > 0 || selfReference) return undefined;
  const prefix = ca.method === 'nar' ? 'r:' : ca.method === 'git' ? 'git:' : '';
  const inner = Hash.sha256(`fixed:out:${prefix}${ca.hash.algorithm}:${ca.hash.toBase16()}:`);
  return makeStorePath('output:out', inner, name, storeDir);
}

/**
 * Whether the object really is content-addressed: its CA parses and, with its name and references
 * (which may include itself), yields exactly its store path. Such paths need no signature.
 */
export function isValidContentAddress(
  info: {
    readonly storePath: StorePath;
    readonly ca: string | undefined;
    readonly references: readonly StorePath[];
  },
  storeDir = DEFAULT_STORE_DIR,
): boolean {
  if (info.ca === undefined) return false;
  let ca: ContentAddress;
  try {
    ca = parseContentAddress(info.ca);
  } catch {
    return false;
  }
  const others = info.references.filter((reference) => !reference.equals(info.storePath));
  const selfReference = others.length !== info.references.length;
  const expected = contentAddressedStorePath(info.storePath.name, ca, others, selfReference, storeDir);
  return expected?.equals(info.storePath) ?? false;
}
