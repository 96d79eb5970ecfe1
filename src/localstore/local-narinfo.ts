// The narinfo of a local store path, made per request from the Nix database: uncompressed NAR at a URL
// that names both hashes (nar-url.ts), the signatures the database already holds (when well formed), and
// one signature per configured key. Nothing but signatures is cached, so a path deleted or re-registered
// is reflected by the next request; signing (50-60 µs, three quarters of a narinfo's cost) is memoised
// by fingerprint, which cannot go stale: a signature is a pure function of the key and the fingerprint,
// and the fingerprint covers everything that is signed.
import { parseContentAddress } from '../nix/content-address.js';
import { formatNarInfo, narInfoFingerprint } from '../nix/narinfo.js';
import { parseSignature, type SecretKey } from '../nix/signing.js';
import type { ValidPathInfo } from '../nix/path-info.js';
import { localNarUrl } from './nar-url.js';

function wellFormedSignature(signature: string): boolean {
  try {
    parseSignature(signature);
    return true;
  } catch {
    return false; // Nix 2.34+ refuses a whole narinfo for one malformed Sig line
  }
}

/**
 * A CA value every client can parse: Nix 2.8 cannot parse `fixed:git:` (the whole narinfo would be
 * unreadable), and the CA is only a shortcut past signatures, which local store narinfos carry anyway.
 */
function portableContentAddress(ca: string | undefined): string | undefined {
  if (ca === undefined) return undefined;
  try {
    return parseContentAddress(ca).method === 'git' ? undefined : ca;
  } catch {
    return undefined;
  }
}

/** The configured keys' signatures of recent fingerprints, least recently used dropped first. */
export class NarInfoSigner {
  private readonly recent = new Map<string, readonly string[]>();

  constructor(
    private readonly keys: readonly SecretKey[],
    private readonly capacity = 16_384,
  ) {}

  sign(fingerprint: string): readonly string[] {
    const known = this.recent.get(fingerprint);
    if (known !== undefined) {
      this.recent.delete(fingerprint); // re-inserted below as the most recent
      this.recent.set(fingerprint, known);
      return known;
    }
    const signatures = this.keys.map((key) => key.sign(fingerprint));
    this.recent.set(fingerprint, signatures);
    if (this.recent.size > this.capacity) {
      for (const oldest of this.recent.keys()) {
        this.recent.delete(oldest);
        break;
      }
    }
    return signatures;
  }
}

export function renderLocalNarInfo(info: ValidPathInfo, signer: NarInfoSigner, storeDir: string): string {
  const fingerprint = narInfoFingerprint({ ...info, references: [...info.references] }, storeDir);
  const signatures = [
    ...new Set([...info.signatures.filter(wellFormedSignature), ...signer.sign(fingerprint)]),
  ];
  return formatNarInfo(
    {
      storePath: info.storePath,
      url: localNarUrl(info.storePath.hash, info.narHash),
      compression: 'none',
      fileHash: info.narHash,
      fileSize: info.narSize,
      narHash: info.narHash,
      narSize: info.narSize,
      references: [...info.references],
      deriver: info.deriver,
      system: undefined,
      signatures,
      ca: portableContentAddress(info.ca),
    },
    storeDir,
  );
}
