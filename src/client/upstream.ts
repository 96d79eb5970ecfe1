// Paths an upstream cache (cache.nixos.org by default) already serves need not be pushed: a cache lists the
// keys of its upstreams (`upstreamKeys`), and a local path carrying a signature that really verifies with
// one of them over the path's fingerprint is skipped. A matching key *name* alone proves nothing; anyone
// can write `cache.nixos.org-1:…` into a path's signatures.
import { PublicKey, countValidSignatures } from '../nix/signing.js';
import type { LocalPathInfo } from './path-info.js';

export interface UpstreamKeys {
  readonly keys: readonly PublicKey[];
  /** Entries that do not parse as public keys (reported, then ignored). */
  readonly invalid: readonly string[];
}

export function parseUpstreamKeys(texts: readonly string[]): UpstreamKeys {
  const keys: PublicKey[] = [];
  const invalid: string[] = [];
  for (const text of texts) {
    try {
      keys.push(PublicKey.parse(text));
    } catch {
      invalid.push(text);
    }
  }
  return { keys, invalid };
}

/** Whether one of the path's signatures verifies with one of the upstream keys. */
export function signedByUpstream(info: LocalPathInfo, upstream: UpstreamKeys, storeDir?: string): boolean {
  if (upstream.keys.length === 0 || info.signatures.length === 0) return false;
  return (
    countValidSignatures(
      {
        storePath: info.storePath,
        narHash: info.narHash,
        narSize: info.narSize,
        references: [...info.references],
        signatures: [...info.signatures],
      },
      upstream.keys,
      storeDir,
    ) > 0
  );
}
