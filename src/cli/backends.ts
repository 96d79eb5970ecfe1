// How operator commands (cache, key, token, import) reach the server's state: through the same
// configuration as `niche serve` (config file, environment, --data), so they work on the embedded data
// directory and on a PostgreSQL/S3 deployment alike.
import { openDatabase, openStores, type Stores } from '../app/data-dir.js';
import { loadServeConfig } from '../config.js';
import type { MetadataStore } from '../db/metadata-store.js';
import type { CliIo } from './io.js';

export interface BackendOptions {
  readonly data?: string | undefined;
  readonly config?: string | undefined;
}

export const DATA_OPTION_HELP = 'data directory (env NICHE_DATA, default ./niche-data)';
export const CONFIG_OPTION_HELP = 'config file, as for niche serve (env NICHE_CONFIG)';

export async function openMetadataFor(io: CliIo, options: BackendOptions): Promise<MetadataStore> {
  const config = loadServeConfig({ data: options.data, config: options.config }, io.env);
  return openDatabase(config.database);
}

export async function openStoresFor(io: CliIo, options: BackendOptions): Promise<Stores> {
  return openStores(loadServeConfig({ data: options.data, config: options.config }, io.env));
}
