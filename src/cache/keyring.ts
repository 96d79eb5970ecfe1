// Signing keys per cache, parsed once and kept in memory: the read path never parses a key. Keys live in
// the metadata store (so every replica signs with the same keys); a retired key stays listed as a public
// key clients may still trust, but no longer signs.
import type { CacheRecord, MetadataStore, SigningKeyRecord } from '../db/metadata-store.js';
import { NicheError } from '../errors.js';
import { PublicKey, SecretKey } from '../nix/signing.js';

export interface CacheKeys {
  /** Keys that sign new paths. */
  readonly signing: readonly SecretKey[];
  /** Every key's public half, `name:base64`, oldest first (retired ones included). */
  readonly publicKeys: readonly string[];
  readonly verifying: readonly PublicKey[];
}

export function loadCacheKeys(cache: CacheRecord, records: readonly SigningKeyRecord[]): CacheKeys {
  const signing: SecretKey[] = [];
  const verifying: PublicKey[] = [];
  for (const record of records) {
    let secret: SecretKey;
    try {
      secret = SecretKey.parse(record.secretKey);
    } catch (error) {
      throw new NicheError(
        'config',
        'KEY_INVALID',
        `signing key ${record.name} of cache ${cache.name} is corrupt`,
        {
          cause: error,
        },
      );
    }
    verifying.push(secret.publicKey);
    if (record.retiredAt === undefined) signing.push(secret);
  }
  return { signing, verifying, publicKeys: verifying.map((key) => key.toString()) };
}

/** Key changes made elsewhere (the CLI, another replica) are picked up after this long. */
export const KEYRING_TTL_MS = 30_000;

export class Keyring {
  readonly #db: MetadataStore;
  readonly #ttlMs: number;
  readonly #byCache = new Map<number, { keys: Promise<CacheKeys>; expires: number }>();

  constructor(db: MetadataStore, ttlMs: number = KEYRING_TTL_MS) {
    this.#db = db;
    this.#ttlMs = ttlMs;
  }

  forCache(cache: CacheRecord): Promise<CacheKeys> {
    const now = Date.now();
    const hit = this.#byCache.get(cache.id);
    if (hit !== undefined && hit.expires > now) return hit.keys;
    const keys = this.#db.listSigningKeys(cache.id).then((records) => loadCacheKeys(cache, records));
    keys.catch(() => this.#byCache.delete(cache.id));
    this.#byCache.set(cache.id, { keys, expires: now + this.#ttlMs });
    return keys;
  }

  invalidate(cacheId: number): void {
    this.#byCache.delete(cacheId);
  }
}
