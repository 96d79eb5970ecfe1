// First-start set-up: a cache to push to and a key to sign with, so `niche serve` is useful at once.
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { CacheRecord, MetadataStore } from '../db/metadata-store.js';
import { ConfigError } from '../errors.js';
import { DEFAULT_STORE_DIR } from '../nix/store-path.js';
import { SecretKey } from '../nix/signing.js';
import { parseCacheName } from '../cache/cache-name.js';

export const DEFAULT_PRIORITY = 40;
/** Paths signed by cache.nixos.org need not be pushed to a private cache. */
export const DEFAULT_UPSTREAM_KEYS: readonly string[] = [
  'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=',
];

/** `<host>-<cache>-1`: key names are lookup keys in nix.conf, so they should be unique per server. */
export function defaultKeyName(cacheName: string, host: string = hostname()): string {
  const safeHost =
    host
      .toLowerCase()
      .replace(/[^a-z0-9.-]+/g, '-')
      .replace(/^[-.]+|[-.]+$/g, '') || 'niche';
  return `${safeHost}-${cacheName}-1`;
}

export async function readKeyFile(file: string): Promise<SecretKey> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      'KEY_FILE_INVALID',
      `cannot read signing key file ${file}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  try {
    return SecretKey.parse(text);
  } catch (error) {
    throw new ConfigError(
      'KEY_FILE_INVALID',
      `signing key file ${file} is not a Nix secret key (name:base64, as made by nix-store --generate-binary-cache-key): ${(error as Error).message}`,
      { cause: error },
    );
  }
}

export interface CreateCacheOptions {
  readonly name: string;
  readonly isPublic: boolean;
  readonly priority: number;
  readonly upstreamKeys?: readonly string[];
  /** The key to sign with; a new one is generated if absent. */
  readonly key?: SecretKey;
}

export async function createCacheWithKey(
  db: MetadataStore,
  options: CreateCacheOptions,
): Promise<CacheRecord> {
  const name = parseCacheName(options.name);
  const cache = await db.createCache({
    name,
    isPublic: options.isPublic,
    priority: options.priority,
    storeDir: DEFAULT_STORE_DIR,
    upstreamKeys: options.upstreamKeys ?? DEFAULT_UPSTREAM_KEYS,
  });
  const key = options.key ?? SecretKey.generate(defaultKeyName(name));
  await db.addSigningKey(cache.id, {
    name: key.name,
    secretKey: key.toString(),
    publicKey: key.publicKey.toString(),
  });
  return cache;
}

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
  const key = options.signingKeyFile === undefined ? undefined : await readKeyFile(options.signingKeyFile);
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
  const cache = await createCacheWithKey(db, {
    name: options.defaultCache,
    isPublic: true,
    priority: DEFAULT_PRIORITY,
    ...(key === undefined ? {} : { key }),
  });
  return { cache, created: true };
}
