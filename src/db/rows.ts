// The rows both SQL backends read (the schemas share column names) and their conversion to records. Only
// how a list column arrives differs: JSON text in SQLite, an already-parsed JSONB value in PostgreSQL, so
// the backend passes its decoder.
import { InvalidInputError } from '../errors.js';
import type {
  BuildLogRecord,
  CacheUsage,
  PinRecord,
  NarRecord,
  PathWithNar,
  RealisationRecord,
  SigningKeyRecord,
} from './metadata-store.js';

/** Decodes a stored list of strings, throwing DatabaseError if it is not one. */
export type ListDecoder<L> = (value: L, what: string) => string[];

export interface SigningKeyRow {
  id: number;
  cache_id: number;
  name: string;
  secret_key: string;
  public_key: string;
  created_at: number;
  retired_at: number | null;
}

export interface NarRow {
  file_hash: string;
  file_size: number;
  compression: string;
  nar_hash: string;
  nar_size: number;
  blob_key: string;
}

/** A path joined with its NAR (the NAR's columns prefixed `n_`). */
export interface PathNarRow<L> {
  hash_part: string;
  store_path: string;
  file_hash: string;
  nar_hash: string;
  nar_size: number;
  refs: L;
  deriver: string | null;
  ca: string | null;
  signatures: L;
  created_at: number;
  /** coalesce(last_access_at, created_at). */
  last_access: number;
  n_file_size: number;
  n_compression: string;
  n_nar_hash: string;
  n_nar_size: number;
  n_blob_key: string;
}

export function optionalDate(ms: number | null): Date | undefined {
  return ms === null ? undefined : new Date(ms);
}

export function toSigningKey(row: SigningKeyRow): SigningKeyRecord {
  return {
    id: row.id,
    cacheId: row.cache_id,
    name: row.name,
    secretKey: row.secret_key,
    publicKey: row.public_key,
    createdAt: new Date(row.created_at),
    retiredAt: optionalDate(row.retired_at),
  };
}

export function toNar(row: NarRow): NarRecord {
  return {
    fileHash: row.file_hash,
    fileSize: row.file_size,
    compression: row.compression,
    narHash: row.nar_hash,
    narSize: row.nar_size,
    blobKey: row.blob_key,
  };
}

export function toPathWithNar<L>(row: PathNarRow<L>, list: ListDecoder<L>): PathWithNar {
  return {
    path: {
      hashPart: row.hash_part,
      storePath: row.store_path,
      fileHash: row.file_hash,
      narHash: row.nar_hash,
      narSize: row.nar_size,
      references: list(row.refs, 'references'),
      deriver: row.deriver ?? undefined,
      ca: row.ca ?? undefined,
      signatures: list(row.signatures, 'signatures'),
      createdAt: new Date(row.created_at),
    },
    lastAccessAt: new Date(row.last_access),
    nar: {
      fileHash: row.file_hash,
      fileSize: row.n_file_size,
      compression: row.n_compression,
      narHash: row.n_nar_hash,
      narSize: row.n_nar_size,
      blobKey: row.n_blob_key,
    },
  };
}

/** The distinct hash parts (first 32 characters) of store path base names. */
export function hashPartsOf(baseNames: readonly string[]): string[] {
  return [...new Set(baseNames.map((baseName) => baseName.slice(0, 32)))];
}

/**
 * Which of `baseNames` are exactly the base names of `storePaths` (the cache's paths found by hash part):
 * a stored path with the same hash part and another name does not count.
 */
export function presentBaseNames(baseNames: readonly string[], storePaths: Iterable<string>): Set<string> {
  const wanted = new Set(baseNames);
  const present = new Set<string>();
  for (const storePath of storePaths) {
    const baseName = storePath.slice(storePath.lastIndexOf('/') + 1);
    if (wanted.has(baseName)) present.add(baseName);
  }
  return present;
}

export interface BuildLogRow {
  drv: string;
  blob_key: string;
  compression: string;
  size: number;
  stored_size: number;
  created_at: number;
}

export const BUILD_LOG_COLUMNS = 'drv, blob_key, compression, size, stored_size, created_at';

export function toBuildLog(row: BuildLogRow): BuildLogRecord {
  return {
    drv: row.drv,
    blobKey: row.blob_key,
    compression: row.compression,
    size: row.size,
    storedSize: row.stored_size,
    createdAt: new Date(row.created_at),
  };
}

/** A realisation; `dependents` (an object) and `signatures` (a list) arrive as the backend stores JSON. */
export interface RealisationRow<J> {
  id: string;
  out_path: string;
  dependents: J;
  signatures: J;
  created_at: number;
}

export const REALISATION_COLUMNS = 'id, out_path, dependents, signatures, created_at';

/** Decodes a stored object of strings, throwing DatabaseError if it is not one. */
export type MapDecoder<J> = (value: J, what: string) => Record<string, string>;

export function toRealisation<J>(
  row: RealisationRow<J>,
  list: ListDecoder<J>,
  map: MapDecoder<J>,
): RealisationRecord {
  return {
    id: row.id,
    outPath: row.out_path,
    dependentRealisations: map(row.dependents, 'dependent realisations'),
    signatures: list(row.signatures, 'signatures'),
    createdAt: new Date(row.created_at),
  };
}

/** Checks that a parsed JSON value is an object whose values are strings. */
export function stringRecord(value: unknown): Record<string, string> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const record: Record<string, string> = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    if (typeof item !== 'string') return undefined;
    record[key] = item;
  }
  return record;
}

/** addPath's refusal when a required reference is not in the cache (deleted since the caller checked). */
export function referencesGone(absent: readonly string[]): InvalidInputError {
  return new InvalidInputError(
    'REFERENCE_MISSING',
    `references are no longer in the cache (deleted meanwhile): ${absent.slice(0, 5).join(', ')}` +
      (absent.length > 5 ? ` and ${absent.length - 5} more` : '') +
      '; upload them again',
  );
}

/** A pins row, as both backends read it. */
export interface PinRow {
  name: string;
  hash_part: string;
  store_path: string;
  created_at: number;
  expires_at: number | null;
}

export const PIN_COLUMNS = 'name, hash_part, store_path, created_at, expires_at';

export function toPin(row: PinRow): PinRecord {
  return {
    name: row.name,
    hashPart: row.hash_part,
    storePath: row.store_path,
    createdAt: new Date(row.created_at),
    expiresAt: optionalDate(row.expires_at),
  };
}

/** A cache_usage row. */
export interface UsageRow {
  paths: number;
  nar_bytes: number;
  stored_bytes: number;
  last_push_at: number | null;
}

export const USAGE_COLUMNS = 'paths, nar_bytes, stored_bytes, last_push_at';

export function toCacheUsage(row: UsageRow): CacheUsage {
  return {
    paths: row.paths,
    narBytes: row.nar_bytes,
    storedBytes: row.stored_bytes,
    lastPushAt: optionalDate(row.last_push_at),
  };
}
