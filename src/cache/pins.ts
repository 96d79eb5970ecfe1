// Pins: named roots of a cache that keep a path and its whole closure from retention and quotas
// (`niche pin`, `/api/v1/caches/<cache>/pins`). Re-pinning a name moves it, like a release channel
// (`prod` → the new system), and the old closure becomes collectable by the usual rules.
import type { CacheRecord, MetadataStore, PinRecord } from '../db/metadata-store.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { StorePath } from '../nix/store-path.js';

const PIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export function parsePinName(text: string): string {
  if (!PIN_NAME.test(text)) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `invalid pin name ${JSON.stringify(text.slice(0, 120))}: letters, digits, '.', '_' and '-', at most 100`,
    );
  }
  return text;
}

/**
 * Pins `storePath` (a full path in the cache's store directory, or a base name) under `name`. The cache
 * must hold the path under exactly that name.
 */
export async function pinPath(
  db: MetadataStore,
  cache: CacheRecord,
  request: { readonly name: string; readonly storePath: string; readonly expiresAt?: Date | undefined },
  now: Date,
): Promise<PinRecord> {
  const name = parsePinName(request.name);
  let path: StorePath;
  try {
    path = request.storePath.startsWith('/')
      ? StorePath.parse(request.storePath, cache.storeDir)
      : StorePath.parseBaseName(request.storePath);
  } catch (error) {
    throw new InvalidInputError(
      'STORE_PATH_INVALID',
      `invalid store path ${JSON.stringify(request.storePath.slice(0, 200))} for cache ${cache.name}`,
      { cause: error },
    );
  }
  if (request.expiresAt !== undefined && request.expiresAt <= now) {
    throw new InvalidInputError('BAD_REQUEST', 'a pin must expire in the future');
  }
  const present = await db.findPresentBaseNames(cache.id, [path.baseName]);
  if (!present.has(path.baseName)) {
    throw new NotFoundError('NOT_FOUND', `${path.baseName} is not in cache ${cache.name}`);
  }
  return db.putPin(cache.id, {
    name,
    hashPart: String(path.hash),
    storePath: path.toString(cache.storeDir),
    createdAt: now,
    expiresAt: request.expiresAt,
  });
}

export async function unpin(db: MetadataStore, cache: CacheRecord, name: string): Promise<void> {
  if (!(await db.deletePin(cache.id, parsePinName(name)))) {
    throw new NotFoundError('NOT_FOUND', `cache ${cache.name} has no pin named ${name}`);
  }
}
