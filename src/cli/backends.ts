// How operator commands (cache, key, token, import) reach the server's state: through the same
// configuration as `niche serve` (config file, environment, --data), so they work on the embedded data
// directory and on a PostgreSQL/S3 deployment alike.
import { openDatabase, openStores, type Stores } from '../app/data-dir.js';
import { loadServeConfig } from '../config.js';
import type { CacheRecord, MetadataStore } from '../db/metadata-store.js';
import { NotFoundError } from '../errors.js';
import type { CliIo } from './io.js';

export interface BackendOptions {
  readonly data?: string | undefined;
  readonly config?: string | undefined;
}

export const DATA_OPTION_HELP = 'data directory (env NICHE_DATA, default ./niche-data)';
export const CONFIG_OPTION_HELP = 'config file, as for niche serve (env NICHE_CONFIG)';

/** Runs `action` with the metadata store open, and closes it whatever happens. */
export async function withMetadata<T>(
  io: CliIo,
  options: BackendOptions,
  action: (db: MetadataStore) => Promise<T>,
): Promise<T> {
  const config = loadServeConfig({ data: options.data, config: options.config }, io.env);
  const db = await openDatabase(config.database);
  try {
    return await action(db);
  } finally {
    await db.close();
  }
}

/** The named cache, or a NotFoundError saying there is none. */
export async function requireCache(db: MetadataStore, name: string): Promise<CacheRecord> {
  const cache = await db.getCache(name);
  if (cache === undefined) throw new NotFoundError('CACHE_NOT_FOUND', `no cache named ${name}`);
  return cache;
}

export async function openStoresFor(io: CliIo, options: BackendOptions): Promise<Stores> {
  return openStores(loadServeConfig({ data: options.data, config: options.config }, io.env));
}
