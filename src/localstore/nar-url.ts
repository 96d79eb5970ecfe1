// The NAR URLs of the local store. A NAR made on the fly has no file of its own, so its URL must say which
// store path to dump (the store hash, for the indexed lookup) and which contents the narinfo promised (the
// NAR hash, so that a URL from a narinfo a client cached before the path was deleted and rebuilt
// differently is a 404, which Nix treats as "gone", never a NAR that fails its hash check).
//
// niche writes   nar/<store hash>-<nar hash nix32>.nar             (the form nix-serve writes, too)
// and accepts    nar/<nar hash nix32>.nar?hash=<store hash>        (harmonia)
//                nar/<store hash>.nar                              (nix-serve before 0.2; unchecked contents)
// so clients that switch from either server keep working with the narinfos they have cached.
import type { Hash } from '../nix/hash.js';
import { isNix32 } from '../nix/nix32.js';
import { isStorePathHash, type StorePathHash } from '../nix/store-path.js';

export interface NarUrlTarget {
  readonly storeHash: StorePathHash;
  /** The NAR hash (nix32) the URL was issued for; undefined for the legacy form that has none. */
  readonly narHash: string | undefined;
}

const NAR_HASH_LENGTH = 52;

/** `nar/<store hash>-<nar hash>.nar`, relative to the mount (no leading slash, PROTOCOL.md §6.1). */
export function localNarUrl(storeHash: StorePathHash, narHash: Hash): string {
  return `nar/${storeHash}-${narHash.toNix32()}.nar`;
}

/**
 * Parses the file name after `nar/` and the `hash` query parameter. Undefined for anything that is not
 * one of the three forms; the hashes are validated (nix32, exact lengths) before anyone looks them up.
 */
export function parseLocalNarUrl(file: string, hashParameter: unknown): NarUrlTarget | undefined {
  if (!file.endsWith('.nar')) return undefined;
  const stem = file.slice(0, -'.nar'.length);
  if (stem.length === 32 + 1 + NAR_HASH_LENGTH && stem[32] === '-') {
    const storeHash = stem.slice(0, 32);
    const narHash = stem.slice(33);
    return isStorePathHash(storeHash) && isNix32(narHash, NAR_HASH_LENGTH)
      ? { storeHash, narHash }
      : undefined;
  }
  if (stem.length === NAR_HASH_LENGTH && typeof hashParameter === 'string') {
    return isNix32(stem, NAR_HASH_LENGTH) && isStorePathHash(hashParameter)
      ? { storeHash: hashParameter, narHash: stem }
      : undefined;
  }
  if (isStorePathHash(stem)) return { storeHash: stem, narHash: undefined };
  return undefined;
}
