// The embedded deployment's data directory: SQLite metadata and NAR blobs side by side.
//   <data>/niche.sqlite   metadata (WAL mode)
//   <data>/blobs/         blob store (temp files in blobs/.tmp/, wiped at open)
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { SqliteMetadataStore } from '../db/sqlite/sqlite-metadata-store.js';
import { FsBlobStore } from '../storage/fs/fs-blob-store.js';
import type { MetadataStore } from '../db/metadata-store.js';
import type { BlobStore } from '../storage/blob-store.js';

export interface Stores {
  readonly db: MetadataStore;
  readonly blobs: BlobStore;
}

async function ensureDataDir(dataDir: string): Promise<string> {
  const dir = resolve(dataDir);
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw new ConfigError(
      'DATA_DIR_UNUSABLE',
      `cannot create data directory ${dir}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  return dir;
}

/** Opens only the metadata store (for CLI commands that manage caches and tokens). */
export async function openMetadata(dataDir: string): Promise<MetadataStore> {
  const dir = await ensureDataDir(dataDir);
  return SqliteMetadataStore.open(join(dir, 'niche.sqlite')); // throws ConfigError itself
}

export async function openStores(dataDir: string): Promise<Stores> {
  const dir = await ensureDataDir(dataDir);
  const blobs: BlobStore = await FsBlobStore.open(join(dir, 'blobs')); // throws ConfigError itself
  try {
    return { db: await openMetadata(dir), blobs };
  } catch (error) {
    await blobs.close();
    throw error;
  }
}
