// Listing and searching a cache's paths, a page at a time: by hash part (optionally a hash prefix) or by
// name prefix. Each page is one index range read from where the previous page ended (keyset pagination),
// so a page costs the same on the millionth path as on the first and no request scans the cache.
import type { CacheRecord, MetadataStore, PathWithNar } from '../db/metadata-store.js';
import { InvalidInputError } from '../errors.js';
import { NIX32_CLASS } from '../nix/nix32.js';
import {
  STORE_PATH_HASH_LENGTH,
  STORE_PATH_NAME_CLASS,
  STORE_PATH_NAME_MAX_LENGTH,
  StorePath,
} from '../nix/store-path.js';

/** The largest page a request may ask for. */
export const MAX_PATH_PAGE = 1000;

export interface PathPageQuery {
  /** Only paths whose name (what follows `<hash>-`) starts with this; pages in name order. */
  readonly name?: string | undefined;
  /** Only paths whose hash part starts with this; pages in hash order (the order without either). */
  readonly hash?: string | undefined;
  /** The base name (`<hash>-<name>`) of the previous page's last path, as `next` gave it. */
  readonly after?: string | undefined;
  readonly limit: number;
}

export interface PathPage {
  readonly paths: readonly PathWithNar[];
  /** What to pass as `after` for the next page; undefined when this page is the last. */
  readonly next: string | undefined;
}

const NAME_PREFIX = new RegExp(`^${STORE_PATH_NAME_CLASS}*$`);
const HASH_PREFIX = new RegExp(`^${NIX32_CLASS}*$`);

export async function pathPage(
  db: MetadataStore,
  cache: CacheRecord,
  query: PathPageQuery,
): Promise<PathPage> {
  if (!Number.isSafeInteger(query.limit) || query.limit < 1 || query.limit > MAX_PATH_PAGE) {
    throw new InvalidInputError('BAD_REQUEST', `limit must be an integer from 1 to ${MAX_PATH_PAGE}`);
  }
  if (query.name !== undefined && query.hash !== undefined) {
    throw new InvalidInputError('BAD_REQUEST', 'search by name or by hash, not both');
  }
  const after = query.after === undefined ? undefined : parseAfter(query.after);
  let paths: PathWithNar[];
  if (query.name === undefined) {
    const hash = query.hash ?? '';
    if (hash.length > STORE_PATH_HASH_LENGTH || !HASH_PREFIX.test(hash)) {
      throw new InvalidInputError(
        'BAD_REQUEST',
        `hash must be at most ${STORE_PATH_HASH_LENGTH} nix32 characters (0-9, a-z but e, o, u, t)`,
      );
    }
    paths = await db.listPaths(cache.id, {
      after: after?.hash,
      hashPrefix: hash === '' ? undefined : hash,
      limit: query.limit,
    });
  } else {
    if (query.name.length > STORE_PATH_NAME_MAX_LENGTH || !NAME_PREFIX.test(query.name)) {
      throw new InvalidInputError(
        'BAD_REQUEST',
        `name must be at most ${STORE_PATH_NAME_MAX_LENGTH} store path name characters ([A-Za-z0-9+-._?=])`,
      );
    }
    paths = await db.findPathsByName(cache.id, {
      prefix: query.name,
      after: after === undefined ? undefined : { name: after.name, hashPart: after.hash },
      limit: query.limit,
    });
  }
  const last = paths.length === query.limit ? paths.at(-1) : undefined;
  return { paths, next: last === undefined ? undefined : baseNameOf(last) };
}

function parseAfter(text: string): StorePath {
  try {
    return StorePath.parseBaseName(text);
  } catch (error) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `after must be a store path base name <hash>-<name>, as "next" gives it: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

function baseNameOf(entry: PathWithNar): string {
  return entry.path.storePath.slice(entry.path.storePath.lastIndexOf('/') + 1);
}
