// First-start set-up: a cache to push to and a key to sign with, so `niche serve` is useful at once.
import type { CacheRecord, MetadataStore } from '../db/metadata-store.js';
import { ConfigError, ConflictError } from '../errors.js';
import { readSecretKeyFile } from '../nix/key-file.js';
import { createCacheWithKey, DEFAULT_PRIORITY } from '../cache/admin-service.js';

export interface BootstrapResult {
  readonly cache: CacheRecord;
  readonly created: boolean;
}

/**
 * Creates the default cache if the server has no caches at all, and makes sure the configured key file
 * (if any) is one of its signing keys.
 */
export async function bootstrap(
  db: MetadataStore,
  options: { readonly defaultCache: string; readonly signingKeyFile: string | undefined },
): Promise<BootstrapResult | undefined> {
  const key =
    options.signingKeyFile === undefined ? undefined : await readSecretKeyFile(options.signingKeyFile);
  const existing = await db.getCache(options.defaultCache);
  if (existing !== undefined) {
    if (key !== undefined) {
      const keys = await db.listSigningKeys(existing.id);
      if (!keys.some((record) => record.secretKey === key.toString())) {
        if (keys.some((record) => record.name === key.name)) {
          throw new ConfigError(
            'KEY_FILE_INVALID',
            `cache ${existing.name} already has a different key named ${key.name}`,
          );
        }
        await db.addSigningKey(existing.id, {
          name: key.name,
          secretKey: key.toString(),
          publicKey: key.publicKey.toString(),
        });
      }
    }
    return { cache: existing, created: false };
  }
  if ((await db.listCaches()).length > 0) return undefined;
  try {
    const cache = await createCacheWithKey(db, {
      name: options.defaultCache,
      isPublic: true,
      priority: DEFAULT_PRIORITY,
      ...(key === undefined ? {} : { key }),
    });
    return { cache, created: true };
  } catch (error) {
    // Another replica starting at the same moment created it first (with its key, atomically).
    if (!(error instanceof ConflictError && error.code === 'CACHE_EXISTS')) throw error;
    const cache = await db.getCache(options.defaultCache);
    if (cache === undefined) throw error;
    return { cache, created: false };
  }
}

/** Re-exported for callers that bootstrap caches (tests, tools). */
export { createCacheWithKey } from '../cache/admin-service.js';
