// Opens the configured backends: blob storage (local files or S3) and metadata (SQLite or PostgreSQL).
// The embedded default keeps both in the data directory:
//   <data>/niche.sqlite   metadata (WAL mode)
//   <data>/blobs/         blob store (temp files in blobs/.tmp/, wiped at open)
// A backend that cannot be opened stops the start with a ConfigError naming it.
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { DatabaseConfig, StorageConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import type { MetadataStore } from '../db/metadata-store.js';
import type { BlobStore } from '../storage/blob-store.js';

// Backends are imported when configured, not before: the AWS SDK and pg cost start-up time that every
// CLI command (and the embedded default) would otherwise pay.

export interface Stores {
  readonly db: MetadataStore;
  readonly blobs: BlobStore;
}

async function ensureDir(dir: string, what: string): Promise<string> {
  const absolute = resolve(dir);
  try {
    await mkdir(absolute, { recursive: true });
  } catch (error) {
    throw new ConfigError(
      'DATA_DIR_UNUSABLE',
      `cannot create ${what} ${absolute}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  return absolute;
}

export async function openDatabase(config: DatabaseConfig): Promise<MetadataStore> {
  if (config.type === 'postgres') {
    const { PostgresMetadataStore } = await import('../db/postgres/postgres-metadata-store.js');
    return PostgresMetadataStore.open({
      connectionString: config.url,
      maxConnections: config.maxConnections,
    });
  }
  await ensureDir(join(config.path, '..'), 'data directory');
  const { SqliteMetadataStore } = await import('../db/sqlite/sqlite-metadata-store.js');
  return SqliteMetadataStore.open(config.path); // throws ConfigError itself
}

export async function openStorage(config: StorageConfig): Promise<BlobStore> {
  if (config.type === 's3') {
    const { S3BlobStore } = await import('../storage/s3/s3-blob-store.js');
    return S3BlobStore.open({
      bucket: config.bucket,
      ...(config.endpoint === undefined ? {} : { endpoint: config.endpoint }),
      ...(config.region === undefined ? {} : { region: config.region }),
      forcePathStyle: config.forcePathStyle,
      prefix: config.prefix,
      partSize: config.partSize,
      queueSize: config.partsInFlight,
    });
  }
  const { FsBlobStore } = await import('../storage/fs/fs-blob-store.js');
  return FsBlobStore.open(await ensureDir(config.path, 'blob directory')); // throws ConfigError itself
}

/** Opens only the metadata store of the embedded layout (for CLI commands on a data directory). */
export async function openMetadata(dataDir: string): Promise<MetadataStore> {
  return openDatabase({ type: 'sqlite', path: join(dataDir, 'niche.sqlite') });
}

export async function openStores(config: {
  storage: StorageConfig;
  database: DatabaseConfig;
}): Promise<Stores> {
  const blobs = await openStorage(config.storage);
  try {
    return { db: await openDatabase(config.database), blobs };
  } catch (error) {
    await blobs.close();
    throw error;
  }
}
