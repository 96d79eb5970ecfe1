// The MetadataStore on PostgreSQL (node-postgres), for deployments that run several niche replicas against
// one database. Unlike SQLite, where one process serialises every write, here two replicas can race on the
// same row, so every change that must not be lost or doubled is a single conditional statement
// (INSERT … ON CONFLICT, UPDATE … WHERE) whose outcome is read back, never a check followed by an insert,
// and every multi-statement change runs in one transaction on one pooled connection. Nothing is cached in
// the process: a token revoked by one replica is refused by all others on their next lookup.
import { inspect } from 'node:util';

import pg from 'pg';

import { ConfigError, ConflictError, DatabaseError, isNicheError, NotFoundError } from '../../errors.js';
import {
  prefixUpperBound,
  PERMISSIONS,
  type AccessRecord,
  type AddPathOutcome,
  type AddRealisationOutcome,
  type BuildLogRecord,
  type CacheChanges,
  type CacheNar,
  type CacheRecord,
  type CacheUsage,
  type DeleteCandidate,
  type GcPathRow,
  type GcRefRow,
  type MetadataStore,
  type NamePageOptions,
  type NarRecord,
  type NewCache,
  type NewSigningKey,
  type NewToken,
  type PathPageOptions,
  type PathRecord,
  type PathWithNar,
  type Permission,
  type PinRecord,
  type RealisationRecord,
  type SigningKeyRecord,
  type TokenRecord,
  type TokenScope,
} from '../metadata-store.js';
import {
  BUILD_LOG_COLUMNS,
  REALISATION_COLUMNS,
  hashPartsOf,
  optionalDate,
  PIN_COLUMNS,
  presentBaseNames,
  referencesGone,
  toCacheUsage,
  toPin,
  USAGE_COLUMNS,
  type PinRow,
  type UsageRow,
  toNar,
  toPathWithNar,
  stringRecord,
  toBuildLog,
  toRealisation,
  toSigningKey,
  type BuildLogRow,
  type RealisationRow,
  type NarRow,
  type PathNarRow,
  type SigningKeyRow,
} from '../rows.js';
import { MIGRATIONS } from './migrations.js';

export interface PostgresMetadataStoreOptions {
  /** A `postgres://user:password@host:port/database` URL. */
  readonly connectionString: string;
  /** Upper bound of the connection pool (default 10). */
  readonly maxConnections?: number;
  /**
   * A schema to keep the tables in, created if missing and set as the only entry of every connection's
   * search_path (through the `options` startup parameter, so it holds before the first query). Meant for
   * isolating test runs; without it the tables go where the role's search_path puts them.
   */
  readonly schema?: string;
}

const DEFAULT_MAX_CONNECTIONS = 10;
/**
 * How long to wait for a connection: when opening (fail fast on an unreachable server), and for a free one
 * when the pool is exhausted (a call that waits longer fails with DATABASE_FAILURE instead of queueing on).
 */
const CONNECT_TIMEOUT_MS = 10_000;
/** First key of the two-key advisory lock that serialises migrations ('nich'); the second is the schema. */
const MIGRATION_LOCK_CLASS = 0x6e696368;
/** addPath's attempts when a rival path vanishes between its insert and its re-read. */
const ADD_PATH_ATTEMPTS = 3;
/** Lower-case unquoted identifiers only: no quoting rules to get wrong in search_path or in SQL. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** int8 columns (sizes, dates, ids) as JS numbers; a value beyond 2^53 is refused rather than rounded. */
const TYPES = new pg.TypeOverrides();
TYPES.setTypeParser(pg.types.builtins.INT8, (text: string): number => {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new DatabaseError(`the stored integer ${text} exceeds 2^53`);
  return value;
});

type CacheRow = {
  id: number;
  name: string;
  is_public: boolean;
  priority: number;
  store_dir: string;
  upstream_keys: unknown;
  created_at: number;
  retention_ms: number | null;
  max_size: number | null;
};

/** How often a GC deletion is tried again after PostgreSQL found a deadlock with a concurrent upload. */
const DEADLOCK_ATTEMPTS = 3;

/** A token joined with one of its scopes (all scope columns null for a token without scopes). */
type TokenScopeRow = {
  id: number;
  description: string;
  token_hash: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  ssh_key_fingerprint: string | null;
  ssh_public_key: string | null;
  cache_pattern: string | null;
  permissions: unknown;
};

/** Something that runs queries: the pool, or one of its clients inside a transaction. */
type Queryable = Pick<pg.Pool, 'query'>;

// Explicit column lists, never `*`: a prepared statement whose result shape changes under a later
// migration fails ("cached plan must not change result type").
const CACHE_COLUMNS =
  'id, name, is_public, priority, store_dir, upstream_keys, created_at, retention_ms, max_size';
const SIGNING_KEY_COLUMNS = 'id, cache_id, name, secret_key, public_key, created_at, retired_at';
const NAR_COLUMNS = 'file_hash, file_size, compression, nar_hash, nar_size, blob_key';

const TOKEN_WITH_SCOPES_SELECT = `
  SELECT t.id, t.description, t.token_hash, t.created_at, t.expires_at, t.revoked_at,
         t.ssh_key_fingerprint, t.ssh_public_key, s.cache_pattern, s.permissions
  FROM tokens AS t LEFT JOIN token_scopes AS s ON s.token_id = t.id`;

/** The narinfo lookup, the hottest query in the server: one primary-key probe on paths, one on nars. */
/**
 * A path's name, what follows `<hash>-` in its store path, in byte order: the expression of the paths_name
 * index (migration 7), which the planner uses only for this exact expression.
 */
const PATH_NAME_EXPRESSION = `(substr(p.store_path, strpos(p.store_path, '/' || p.hash_part || '-') + 34) COLLATE "C")`;

const PATH_WITH_NAR_SELECT = `
  SELECT p.hash_part, p.store_path, p.file_hash, p.nar_hash, p.nar_size, p.refs, p.deriver, p.ca,
         p.signatures, p.created_at, coalesce(p.last_access_at, p.created_at) AS last_access,
         n.file_size AS n_file_size, n.compression AS n_compression,
         n.nar_hash AS n_nar_hash, n.nar_size AS n_nar_size, n.blob_key AS n_blob_key
  FROM paths AS p JOIN nars AS n ON n.file_hash = p.file_hash`;

/** Named statements: parsed and planned once per pooled connection, then only bound and executed. */
const GET_CACHE = {
  name: 'niche_get_cache',
  text: `SELECT ${CACHE_COLUMNS} FROM caches WHERE name = $1`,
};

const FIND_TOKEN_BY_HASH = {
  name: 'niche_find_token_by_hash',
  text: `${TOKEN_WITH_SCOPES_SELECT} WHERE t.token_hash = $1 ORDER BY s.position`,
};

const FIND_TOKEN_BY_SSH_KEY = {
  name: 'niche_find_token_by_ssh_key',
  text: `${TOKEN_WITH_SCOPES_SELECT}
    WHERE t.id = (SELECT max(id) FROM tokens WHERE ssh_key_fingerprint = $1 AND revoked_at IS NULL)
    ORDER BY s.position`,
};

export const GET_PATH = {
  name: 'niche_get_path',
  text: `${PATH_WITH_NAR_SELECT} WHERE p.cache_id = $1 AND p.hash_part = $2`,
};

/** A page of paths by hash part: $2 the previous page's last, [$3, $4) the prefix's range. */
export const LIST_PATHS = {
  name: 'niche_list_paths',
  text: `${PATH_WITH_NAR_SELECT}
    WHERE p.cache_id = $1 AND p.hash_part > $2 AND p.hash_part >= $3 AND p.hash_part < $4
    ORDER BY p.hash_part LIMIT $5`,
};

/** A page of paths by name: [$2, $3) the prefix's range, ($4, $5) the previous page's last name and hash. */
export const FIND_PATHS_BY_NAME = {
  name: 'niche_find_paths_by_name',
  text: `${PATH_WITH_NAR_SELECT}
    WHERE p.cache_id = $1 AND ${PATH_NAME_EXPRESSION} >= $2 AND ${PATH_NAME_EXPRESSION} < $3
      AND (${PATH_NAME_EXPRESSION}, p.hash_part) > ($4, $5)
    ORDER BY ${PATH_NAME_EXPRESSION}, p.hash_part LIMIT $6`,
};

/**
 * The batch presence check: the hash parts bound as one array, answered by probes of the primary key.
 * Returns the stored paths, whose base names the caller compares with the names it was asked about.
 */
export const FIND_PRESENT_PATHS = {
  name: 'niche_find_present_paths',
  text: 'SELECT store_path FROM paths WHERE cache_id = $1 AND hash_part = ANY($2::text[])',
};

/** The NAR, with whether a path of the cache publishes it and when it was uploaded there (if pending). */
const NAR_IN_CACHE = {
  name: 'niche_nar_in_cache',
  text: `
    SELECT ${NAR_COLUMNS},
           EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = $2 AND p.cache_id = $1) AS published,
           (SELECT u.uploaded_at FROM nar_uploads AS u WHERE u.cache_id = $1 AND u.file_hash = $2)
             AS uploaded_at
    FROM nars AS n WHERE n.file_hash = $2`,
};

/** A NAR with how it is attached to one cache. */
type CacheNarRow = NarRow & { published: boolean; uploaded_at: number | null };

export class PostgresMetadataStore implements MetadataStore {
  readonly #pool: pg.Pool;
  #closed = false;

  private constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  /**
   * Connects (failing fast if the server cannot be reached) and brings the schema up to date. Throws
   * ConfigError('CONFIG_INVALID') if the options are wrong, the database cannot be reached or prepared, or
   * it was migrated by a newer niche. Messages name the server but never the password.
   */
  static async open(options: PostgresMetadataStoreOptions): Promise<PostgresMetadataStore> {
    const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (!Number.isSafeInteger(maxConnections) || maxConnections < 1) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `maxConnections must be a positive integer, not ${maxConnections}`,
      );
    }
    const { schema } = options;
    if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `the PostgreSQL schema name ${JSON.stringify(schema)} must match ${String(SCHEMA_NAME)}`,
      );
    }
    const target = redactConnectionString(options.connectionString);
    const failure = (what: string, error: unknown): ConfigError => {
      if (error instanceof ConfigError) return error;
      const reason = scrub(describe(error), target.secrets);
      const cause = target.parsed && !containsSecret(error, target.secrets) ? error : undefined;
      return new ConfigError('CONFIG_INVALID', `${what} PostgreSQL at ${target.display}: ${reason}`, {
        cause,
      });
    };

    const pool = new pg.Pool({
      connectionString: options.connectionString,
      max: maxConnections,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      application_name: 'niche',
      types: TYPES,
      ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
    });
    // An idle connection that breaks (server restart, network) is dropped by the pool, which then emits
    // 'error'; without a listener that would crash the process. The next query opens a fresh connection,
    // and fails loudly if the server is really gone, so there is nothing to do here.
    pool.on('error', () => undefined);

    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (error) {
      await pool.end();
      throw failure('cannot connect to', error);
    }
    try {
      await migrate(client, schema);
      client.release();
    } catch (error) {
      client.release(true);
      await pool.end();
      throw failure('cannot prepare the schema in', error);
    }
    return new PostgresMetadataStore(pool);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }

  ping(): Promise<void> {
    return this.#run('ping', async () => {
      await this.#pool.query('SELECT 1');
    });
  }

  createCache(cache: NewCache): Promise<CacheRecord> {
    return this.#run('createCache', async () => {
      try {
        return await this.#transaction(async (client) => {
          const { rows } = await client.query<CacheRow>(
            `INSERT INTO caches (name, is_public, priority, store_dir, upstream_keys, created_at)
             VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING ${CACHE_COLUMNS}`,
            [
              cache.name,
              cache.isPublic,
              cache.priority,
              cache.storeDir,
              JSON.stringify(cache.upstreamKeys),
              Date.now(),
            ],
          );
          const created = toCache(first(rows, 'INSERT … RETURNING'));
          const key = cache.initialKey;
          if (key !== undefined) {
            await client.query(
              `INSERT INTO signing_keys (cache_id, name, secret_key, public_key, created_at)
               VALUES ($1, $2, $3, $4, $5)`,
              [created.id, key.name, key.secretKey, key.publicKey, Date.now()],
            );
          }
          return created;
        });
      } catch (error) {
        if (violated(error, 'caches_name_key')) {
          throw new ConflictError('CACHE_EXISTS', `a cache named ${cache.name} already exists`);
        }
        throw error;
      }
    });
  }

  getCache(name: string): Promise<CacheRecord | undefined> {
    return this.#run('getCache', async () => {
      const { rows } = await this.#pool.query<CacheRow>({ ...GET_CACHE, values: [name] });
      const row = rows[0];
      return row === undefined ? undefined : toCache(row);
    });
  }

  listCaches(): Promise<CacheRecord[]> {
    return this.#run('listCaches', async () => {
      const { rows } = await this.#pool.query<CacheRow>(`SELECT ${CACHE_COLUMNS} FROM caches ORDER BY name`);
      return rows.map(toCache);
    });
  }

  updateCache(cacheId: number, changes: CacheChanges): Promise<CacheRecord> {
    return this.#run('updateCache', async () => {
      const { rows } = await this.#pool.query<CacheRow>(
        `UPDATE caches SET is_public = coalesce($2, is_public), priority = coalesce($3, priority),
                upstream_keys = coalesce($4::jsonb, upstream_keys),
                retention_ms = CASE WHEN $5::boolean THEN $6::bigint ELSE retention_ms END,
                max_size = CASE WHEN $7::boolean THEN $8::bigint ELSE max_size END
         WHERE id = $1 RETURNING ${CACHE_COLUMNS}`,
        [
          cacheId,
          changes.isPublic ?? null,
          changes.priority ?? null,
          changes.upstreamKeys === undefined ? null : JSON.stringify(changes.upstreamKeys),
          changes.retentionMs !== undefined,
          changes.retentionMs ?? null,
          changes.maxSize !== undefined,
          changes.maxSize ?? null,
        ],
      );
      const row = rows[0];
      if (row === undefined) throw noSuchCache(cacheId);
      return toCache(row);
    });
  }

  deleteCache(cacheId: number): Promise<boolean> {
    // One statement: the cascades to keys, uploads, paths and path_refs are part of it, so atomic.
    return this.#run('deleteCache', async () => {
      const result = await this.#pool.query('DELETE FROM caches WHERE id = $1', [cacheId]);
      return (result.rowCount ?? 0) > 0;
    });
  }

  addSigningKey(cacheId: number, key: NewSigningKey): Promise<SigningKeyRecord> {
    return this.#run('addSigningKey', async () => {
      try {
        const { rows } = await this.#pool.query<SigningKeyRow>(
          `INSERT INTO signing_keys (cache_id, name, secret_key, public_key, created_at)
           VALUES ($1, $2, $3, $4, $5) RETURNING ${SIGNING_KEY_COLUMNS}`,
          [cacheId, key.name, key.secretKey, key.publicKey, Date.now()],
        );
        return toSigningKey(first(rows, 'INSERT … RETURNING'));
      } catch (error) {
        if (violated(error, 'signing_keys_cache_fkey')) throw noSuchCache(cacheId);
        if (violated(error, 'signing_keys_name_key')) {
          throw new ConflictError('KEY_EXISTS', `the cache already has a signing key named ${key.name}`);
        }
        throw error;
      }
    });
  }

  listSigningKeys(cacheId: number): Promise<SigningKeyRecord[]> {
    return this.#run('listSigningKeys', async () => {
      const { rows } = await this.#pool.query<SigningKeyRow>(
        `SELECT ${SIGNING_KEY_COLUMNS} FROM signing_keys WHERE cache_id = $1 ORDER BY created_at, id`,
        [cacheId],
      );
      return rows.map(toSigningKey);
    });
  }

  retireSigningKey(cacheId: number, name: string, at: Date): Promise<boolean> {
    return this.#run('retireSigningKey', async () => {
      const result = await this.#pool.query(
        'UPDATE signing_keys SET retired_at = $3 WHERE cache_id = $1 AND name = $2 AND retired_at IS NULL',
        [cacheId, name, at.getTime()],
      );
      return (result.rowCount ?? 0) > 0;
    });
  }

  createToken(token: NewToken): Promise<TokenRecord> {
    return this.#run('createToken', () =>
      this.#transaction(async (client) => {
        const { rows } = await client.query<{ id: number }>(
          `INSERT INTO tokens (description, token_hash, created_at, expires_at, ssh_key_fingerprint, ssh_public_key)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
          [
            token.description,
            token.tokenHash,
            Date.now(),
            token.expiresAt?.getTime() ?? null,
            token.sshKey?.fingerprint ?? null,
            token.sshKey?.publicKey ?? null,
          ],
        );
        const { id } = first(rows, 'INSERT … RETURNING');
        if (token.scopes.length > 0) {
          await client.query(
            `INSERT INTO token_scopes (token_id, position, cache_pattern, permissions)
             SELECT $1::bigint, s.ordinal - 1, s.cache_pattern, s.permissions::jsonb
             FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS s (cache_pattern, permissions, ordinal)`,
            [
              id,
              token.scopes.map((scope) => scope.cachePattern),
              token.scopes.map((scope) => JSON.stringify(scope.permissions)),
            ],
          );
        }
        const created = await findToken(client, token.tokenHash);
        if (created === undefined) throw new DatabaseError('the token just created cannot be read back');
        return created;
      }),
    );
  }

  findTokenByHash(tokenHash: string): Promise<TokenRecord | undefined> {
    return this.#run('findTokenByHash', () => findToken(this.#pool, tokenHash));
  }

  findTokenBySshKey(fingerprint: string): Promise<TokenRecord | undefined> {
    return this.#run('findTokenBySshKey', async () => {
      const { rows } = await this.#pool.query<TokenScopeRow>({
        ...FIND_TOKEN_BY_SSH_KEY,
        values: [fingerprint],
      });
      return groupTokens(rows)[0];
    });
  }

  listTokens(): Promise<TokenRecord[]> {
    // One statement, so one snapshot: no token is listed with the scopes of a different moment.
    return this.#run('listTokens', async () => {
      const { rows } = await this.#pool.query<TokenScopeRow>(
        `${TOKEN_WITH_SCOPES_SELECT} ORDER BY t.id, s.position`,
      );
      return groupTokens(rows);
    });
  }

  revokeToken(id: number, at: Date): Promise<boolean> {
    return this.#run('revokeToken', async () => {
      const result = await this.#pool.query(
        'UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL',
        [id, at.getTime()],
      );
      return (result.rowCount ?? 0) > 0;
    });
  }

  recordNarUpload(cacheId: number, nar: NarRecord, at: Date): Promise<NarRecord> {
    return this.#run('recordNarUpload', () =>
      this.#transaction(async (client): Promise<NarRecord> => {
        // A concurrent upload of the same file waits here for the other transaction, then inserts nothing.
        const inserted = await client.query(
          `INSERT INTO nars (${NAR_COLUMNS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (file_hash) DO NOTHING`,
          [nar.fileHash, nar.fileSize, nar.compression, nar.narHash, nar.narSize, nar.blobKey, at.getTime()],
        );
        let recorded = nar;
        if (inserted.rowCount === 0) {
          // FOR KEY SHARE: GC cannot delete the record between this read and the upload row below. If GC
          // deleted it between the insert and this read, the read waits for GC and finds nothing: insert
          // again (this upload's blob, under its own key, is then the one recorded).
          let { rows } = await client.query<NarRow>(
            `SELECT ${NAR_COLUMNS} FROM nars WHERE file_hash = $1 FOR KEY SHARE`,
            [nar.fileHash],
          );
          if (rows.length === 0) {
            ({ rows } = await client.query<NarRow>(
              `INSERT INTO nars (${NAR_COLUMNS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (file_hash) DO NOTHING RETURNING ${NAR_COLUMNS}`,
              [
                nar.fileHash,
                nar.fileSize,
                nar.compression,
                nar.narHash,
                nar.narSize,
                nar.blobKey,
                at.getTime(),
              ],
            ));
          }
          const existing = toNar(first(rows, 'the existing NAR'));
          if (
            existing.fileSize !== nar.fileSize ||
            existing.compression !== nar.compression ||
            existing.narHash !== nar.narHash ||
            existing.narSize !== nar.narSize
          ) {
            // Same file hash, different facts: a bug above (or a SHA-256 collision); keep the first.
            throw new DatabaseError(`NAR ${nar.fileHash} is already recorded with different metadata`);
          }
          recorded = existing;
        }
        try {
          await client.query(
            `INSERT INTO nar_uploads (cache_id, file_hash, uploaded_at) VALUES ($1, $2, $3)
             ON CONFLICT (cache_id, file_hash) DO UPDATE SET uploaded_at = excluded.uploaded_at`,
            [cacheId, nar.fileHash, at.getTime()],
          );
        } catch (error) {
          if (violated(error, 'nar_uploads_cache_fkey')) throw noSuchCache(cacheId);
          throw error;
        }
        return recorded;
      }),
    );
  }

  getNar(cacheId: number, fileHash: string): Promise<CacheNar | undefined> {
    return this.#run('getNar', () => findCacheNar(this.#pool, cacheId, fileHash));
  }

  deleteExpiredUploads(before: Date): Promise<number> {
    return this.#run('deleteExpiredUploads', async () => {
      const result = await this.#pool.query('DELETE FROM nar_uploads WHERE uploaded_at < $1', [
        before.getTime(),
      ]);
      return result.rowCount ?? 0;
    });
  }

  getPath(cacheId: number, hashPart: string): Promise<PathWithNar | undefined> {
    return this.#run('getPath', () => findPath(this.#pool, cacheId, hashPart));
  }

  listPaths(cacheId: number, options: PathPageOptions): Promise<PathWithNar[]> {
    const low = options.hashPrefix ?? '';
    return this.#run('listPaths', async () => {
      const { rows } = await this.#pool.query<PathNarRow<unknown>>({
        ...LIST_PATHS,
        values: [cacheId, options.after ?? '', low, prefixUpperBound(low), options.limit],
      });
      return rows.map((row) => toPathWithNar(row, stringList));
    });
  }

  findPathsByName(cacheId: number, options: NamePageOptions): Promise<PathWithNar[]> {
    return this.#run('findPathsByName', async () => {
      const { rows } = await this.#pool.query<PathNarRow<unknown>>({
        ...FIND_PATHS_BY_NAME,
        values: [
          cacheId,
          options.prefix,
          prefixUpperBound(options.prefix),
          options.after?.name ?? '',
          options.after?.hashPart ?? '',
          options.limit,
        ],
      });
      return rows.map((row) => toPathWithNar(row, stringList));
    });
  }

  findPresentBaseNames(cacheId: number, baseNames: readonly string[]): Promise<Set<string>> {
    return this.#run('findPresentBaseNames', async () => {
      if (baseNames.length === 0) return new Set<string>();
      const { rows } = await this.#pool.query<{ store_path: string }>({
        ...FIND_PRESENT_PATHS,
        values: [cacheId, hashPartsOf(baseNames)],
      });
      return presentBaseNames(
        baseNames,
        rows.map((row) => row.store_path),
      );
    });
  }

  addPath(
    cacheId: number,
    path: PathRecord,
    uploadedSince: Date,
    requiredReferences: readonly string[] = [],
  ): Promise<AddPathOutcome> {
    return this.#run('addPath', () =>
      this.#transaction(async (client): Promise<AddPathOutcome> => {
        if (requiredReferences.length > 0) {
          // FOR SHARE holds the references until this transaction ends: GC's deletion (FOR UPDATE first)
          // waits for it and then sees the new referrer, or has already deleted and this finds it gone.
          // Locked in hash-part order, as GC locks, so the two cannot deadlock.
          const wanted = [...new Set(requiredReferences)].sort();
          const { rows } = await client.query<{ hash_part: string }>(
            `SELECT hash_part FROM paths WHERE cache_id = $1 AND hash_part = ANY($2::text[])
             ORDER BY hash_part FOR SHARE`,
            [cacheId, wanted],
          );
          const present = new Set(rows.map((row) => row.hash_part));
          const absent = wanted.filter((hashPart) => !present.has(hashPart));
          if (absent.length > 0) throw referencesGone(absent);
        }
        for (let attempt = 0; attempt < ADD_PATH_ATTEMPTS; attempt += 1) {
          // Inserts only if the NAR is attached to the cache (published, or uploaded since the bound),
          // checked in the same statement so an upload removed by GC meanwhile cannot slip through. On a
          // rival insert of the same hash part this waits for the rival's transaction and, if it commits,
          // inserts nothing.
          const inserted = await client.query(
            `INSERT INTO paths (cache_id, hash_part, store_path, file_hash, nar_hash, nar_size, refs, deriver,
                                ca, signatures, created_at, last_access_at)
             SELECT $1::bigint, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::jsonb, $8::text,
                    $9::text, $10::jsonb, $11::bigint, $11::bigint
             WHERE EXISTS (SELECT 1 FROM nar_uploads WHERE cache_id = $1 AND file_hash = $4
                             AND uploaded_at >= $12::bigint)
                OR EXISTS (SELECT 1 FROM paths WHERE cache_id = $1 AND file_hash = $4)
             ON CONFLICT (cache_id, hash_part) DO NOTHING`,
            [
              cacheId,
              path.hashPart,
              path.storePath,
              path.fileHash,
              path.narHash,
              path.narSize,
              JSON.stringify(path.references),
              path.deriver ?? null,
              path.ca ?? null,
              JSON.stringify(path.signatures),
              path.createdAt.getTime(),
              uploadedSince.getTime(),
            ],
          );
          if (inserted.rowCount === 1) {
            await client.query(
              `INSERT INTO path_refs (cache_id, ref_hash, hash_part)
               SELECT $1::bigint, left(ref, 32), $2::text FROM unnest($3::text[]) AS ref
               WHERE left(ref, 32) <> $2::text
               ON CONFLICT DO NOTHING`,
              [cacheId, path.hashPart, path.references],
            );
            await client.query('DELETE FROM nar_uploads WHERE cache_id = $1 AND file_hash = $2', [
              cacheId,
              path.fileHash,
            ]);
            return { status: 'added' };
          }
          // Nothing inserted: either the hash part is taken (a new statement sees a rival that committed
          // while we waited) or the NAR is not attached. The hash part wins, as in the SQLite store.
          const existing = await findPath(client, cacheId, path.hashPart);
          if (existing !== undefined) return { status: 'exists', existing: existing.path };
          const nar = await findCacheNar(client, cacheId, path.fileHash);
          const attached =
            nar !== undefined &&
            (nar.published || (nar.uploadedAt?.getTime() ?? -Infinity) >= uploadedSince.getTime());
          if (!attached) {
            throw new NotFoundError(
              'NAR_NOT_UPLOADED',
              `NAR ${path.fileHash} has not been uploaded to this cache`,
            );
          }
          // The rival was deleted, or the NAR attached, between our statements: try again.
        }
        throw new DatabaseError(`path ${path.hashPart} kept changing while being added`);
      }),
    );
  }

  addSignatures(cacheId: number, hashPart: string, signatures: readonly string[]): Promise<void> {
    return this.#run('addSignatures', () =>
      this.#transaction(async (client) => {
        // FOR UPDATE: two concurrent calls merge one after the other instead of losing one's signatures.
        const { rows } = await client.query<{ signatures: unknown }>(
          'SELECT signatures FROM paths WHERE cache_id = $1 AND hash_part = $2 FOR UPDATE',
          [cacheId, hashPart],
        );
        const row = rows[0];
        if (row === undefined) throw new NotFoundError('NOT_FOUND', `no path ${hashPart} in this cache`);
        const current = stringList(row.signatures, 'signatures');
        const merged = [...new Set([...current, ...signatures])];
        if (merged.length !== current.length) {
          await client.query(
            'UPDATE paths SET signatures = $3::jsonb WHERE cache_id = $1 AND hash_part = $2',
            [cacheId, hashPart, JSON.stringify(merged)],
          );
        }
      }),
    );
  }

  findReferrers(cacheId: number, hashPart: string, limit: number): Promise<string[]> {
    return this.#run('findReferrers', async () => {
      const { rows } = await this.#pool.query<{ hash_part: string }>(
        `SELECT hash_part FROM path_refs WHERE cache_id = $1 AND ref_hash = $2
         ORDER BY hash_part LIMIT $3`,
        [cacheId, hashPart, limit],
      );
      return rows.map((row) => row.hash_part);
    });
  }

  deletePath(cacheId: number, hashPart: string): Promise<boolean> {
    // One statement; its path_refs rows go with it (ON DELETE CASCADE).
    return this.#run('deletePath', async () => {
      const result = await this.#pool.query('DELETE FROM paths WHERE cache_id = $1 AND hash_part = $2', [
        cacheId,
        hashPart,
      ]);
      return (result.rowCount ?? 0) > 0;
    });
  }

  deletePathsIfUnused(
    cacheId: number,
    candidates: readonly DeleteCandidate[],
    now: Date,
  ): Promise<PathRecord[]> {
    return this.#run('deletePathsIfUnused', async () => {
      if (candidates.length === 0) return [];
      const hashParts = candidates.map((candidate) => candidate.hashPart);
      for (let attempt = 1; ; attempt += 1) {
        try {
          return await this.#transaction(async (client): Promise<PathRecord[]> => {
            // Row locks first, in hash-part order (as addPath takes its FOR SHARE locks): an upload holding
            // a candidate because it references it commits before this goes on, and the reads below, each
            // a new snapshot, then see its references; a later one waits for this transaction.
            const { rows } = await client.query<PathNarRow<unknown>>(
              `${PATH_WITH_NAR_SELECT}
               WHERE p.cache_id = $1 AND p.hash_part = ANY($2::text[])
               ORDER BY p.hash_part FOR UPDATE OF p`,
              [cacheId, hashParts],
            );
            const { rows: refs } = await client.query<{ ref_hash: string; hash_part: string }>(
              'SELECT ref_hash, hash_part FROM path_refs WHERE cache_id = $1 AND ref_hash = ANY($2::text[])',
              [cacheId, hashParts],
            );
            const { rows: pinned } = await client.query<{ hash_part: string }>(
              `SELECT hash_part FROM pins WHERE cache_id = $1 AND hash_part = ANY($2::text[])
                 AND (expires_at IS NULL OR expires_at > $3)`,
              [cacheId, hashParts, now.getTime()],
            );
            const byHash = new Map(rows.map((row) => [row.hash_part, row]));
            const referrers = new Map<string, string[]>();
            for (const ref of refs) {
              const list = referrers.get(ref.ref_hash) ?? [];
              list.push(ref.hash_part);
              referrers.set(ref.ref_hash, list);
            }
            const pins = new Set(pinned.map((row) => row.hash_part));
            const gone = new Set<string>();
            const removed: PathRecord[] = [];
            for (const candidate of candidates) {
              const row = byHash.get(candidate.hashPart);
              if (row === undefined || pins.has(candidate.hashPart) || gone.has(candidate.hashPart)) continue;
              if (candidate.accessedAtMost !== undefined && row.last_access > candidate.accessedAtMost)
                continue;
              if (!(referrers.get(candidate.hashPart) ?? []).every((referrer) => gone.has(referrer)))
                continue;
              gone.add(candidate.hashPart);
              removed.push(toPathWithNar(row, stringList).path);
            }
            if (removed.length > 0) {
              await client.query('DELETE FROM paths WHERE cache_id = $1 AND hash_part = ANY($2::text[])', [
                cacheId,
                [...gone],
              ]);
            }
            return removed;
          });
        } catch (error) {
          if (isDeadlock(error) && attempt < DEADLOCK_ATTEMPTS) continue;
          throw error;
        }
      }
    });
  }

  recordAccesses(accesses: readonly AccessRecord[]): Promise<void> {
    return this.#run('recordAccesses', async () => {
      const byPath = accesses.filter((access) => access.hashPart !== undefined);
      const byFile = accesses.filter((access) => access.fileHash !== undefined);
      // One statement per kind, rows in key order (so concurrent flushes of replicas lock in one order);
      // a row already accessed later is not rewritten.
      byPath.sort((a, b) => a.cacheId - b.cacheId || compareText(a.hashPart ?? '', b.hashPart ?? ''));
      byFile.sort((a, b) => a.cacheId - b.cacheId || compareText(a.fileHash ?? '', b.fileHash ?? ''));
      for (let attempt = 1; ; attempt += 1) {
        try {
          if (byPath.length > 0) {
            await this.#pool.query(
              `UPDATE paths SET last_access_at = v.at
               FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS v(cache_id, hash_part, at)
               WHERE paths.cache_id = v.cache_id AND paths.hash_part = v.hash_part
                 AND coalesce(paths.last_access_at, paths.created_at) < v.at`,
              [byPath.map((a) => a.cacheId), byPath.map((a) => a.hashPart), byPath.map((a) => a.at)],
            );
          }
          if (byFile.length > 0) {
            await this.#pool.query(
              `UPDATE paths SET last_access_at = v.at
               FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS v(cache_id, file_hash, at)
               WHERE paths.file_hash = v.file_hash AND paths.cache_id = v.cache_id
                 AND coalesce(paths.last_access_at, paths.created_at) < v.at`,
              [byFile.map((a) => a.cacheId), byFile.map((a) => a.fileHash), byFile.map((a) => a.at)],
            );
          }
          return;
        } catch (error) {
          if (isDeadlock(error) && attempt < DEADLOCK_ATTEMPTS) continue;
          throw error;
        }
      }
    });
  }

  getCacheUsage(cacheId: number): Promise<CacheUsage> {
    return this.#run('getCacheUsage', async () => {
      const { rows } = await this.#pool.query<UsageRow>(
        `SELECT ${USAGE_COLUMNS} FROM cache_usage WHERE cache_id = $1`,
        [cacheId],
      );
      const row = rows[0];
      if (row === undefined) throw noSuchCache(cacheId);
      return toCacheUsage(row);
    });
  }

  scanGcPaths(cacheId: number, after: string, limit: number): Promise<GcPathRow[]> {
    return this.#run('scanGcPaths', async () => {
      const { rows } = await this.#pool.query<{
        hash_part: string;
        file_hash: string;
        file_size: number;
        last_access: number;
        shares_file: boolean;
      }>(
        `SELECT p.hash_part, p.file_hash, n.file_size,
                coalesce(p.last_access_at, p.created_at) AS last_access,
                EXISTS (SELECT 1 FROM paths AS o WHERE o.file_hash = p.file_hash AND o.cache_id = p.cache_id
                          AND o.hash_part <> p.hash_part) AS shares_file
         FROM paths AS p JOIN nars AS n ON n.file_hash = p.file_hash
         WHERE p.cache_id = $1 AND p.hash_part > $2 ORDER BY p.hash_part LIMIT $3`,
        [cacheId, after, limit],
      );
      return rows.map((row) => ({
        hashPart: row.hash_part,
        fileHash: row.file_hash,
        fileSize: row.file_size,
        lastAccess: row.last_access,
        sharesFile: row.shares_file,
      }));
    });
  }

  scanGcRefs(cacheId: number, after: GcRefRow | undefined, limit: number): Promise<GcRefRow[]> {
    return this.#run('scanGcRefs', async () => {
      const { rows } = await this.#pool.query<{ ref_hash: string; hash_part: string }>(
        `SELECT ref_hash, hash_part FROM path_refs
         WHERE cache_id = $1 AND (ref_hash, hash_part) > ($2::text, $3::text)
         ORDER BY ref_hash, hash_part LIMIT $4`,
        [cacheId, after?.hashPart ?? '', after?.referrer ?? '', limit],
      );
      return rows.map((row) => ({ hashPart: row.ref_hash, referrer: row.hash_part }));
    });
  }

  putPin(cacheId: number, pin: PinRecord): Promise<PinRecord> {
    return this.#run('putPin', () =>
      this.#transaction(async (client): Promise<PinRecord> => {
        // FOR SHARE: a concurrent GC cannot remove the path before the pin that keeps it is in.
        const found = await client.query(
          'SELECT 1 FROM paths WHERE cache_id = $1 AND hash_part = $2 FOR SHARE',
          [cacheId, pin.hashPart],
        );
        if (found.rowCount === 0)
          throw new NotFoundError('NOT_FOUND', `${pin.storePath} is not in this cache`);
        await client.query(
          `INSERT INTO pins (cache_id, name, hash_part, store_path, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (cache_id, name) DO UPDATE SET hash_part = excluded.hash_part,
             store_path = excluded.store_path, created_at = excluded.created_at,
             expires_at = excluded.expires_at`,
          [
            cacheId,
            pin.name,
            pin.hashPart,
            pin.storePath,
            pin.createdAt.getTime(),
            pin.expiresAt?.getTime() ?? null,
          ],
        );
        return pin;
      }),
    );
  }

  listPins(cacheId: number): Promise<PinRecord[]> {
    return this.#run('listPins', async () => {
      const { rows } = await this.#pool.query<PinRow>(
        `SELECT ${PIN_COLUMNS} FROM pins WHERE cache_id = $1 ORDER BY name`,
        [cacheId],
      );
      return rows.map(toPin);
    });
  }

  deletePin(cacheId: number, name: string): Promise<boolean> {
    return this.#run('deletePin', async () => {
      const result = await this.#pool.query('DELETE FROM pins WHERE cache_id = $1 AND name = $2', [
        cacheId,
        name,
      ]);
      return (result.rowCount ?? 0) > 0;
    });
  }

  markUnusedNars(after: string, limit: number, now: Date): Promise<string | undefined> {
    return this.#run('markUnusedNars', async () => {
      const { rows } = await this.#pool.query<{ last: string | null }>(
        `WITH page AS (SELECT file_hash FROM nars WHERE file_hash > $1 ORDER BY file_hash LIMIT $2),
              changed AS (
                UPDATE nars SET unused_since = CASE WHEN used.used THEN NULL ELSE coalesce(unused_since, $3) END
                FROM (SELECT page.file_hash,
                             EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = page.file_hash)
                               OR EXISTS (SELECT 1 FROM nar_uploads AS u WHERE u.file_hash = page.file_hash)
                               AS used
                      FROM page) AS used
                WHERE nars.file_hash = used.file_hash AND (nars.unused_since IS NULL) <> used.used
                RETURNING 1)
         SELECT max(file_hash) AS last FROM page`,
        [after, limit, now.getTime()],
      );
      return rows[0]?.last ?? undefined;
    });
  }

  takeUnusedNars(before: Date, limit: number): Promise<NarRecord[]> {
    return this.#run('takeUnusedNars', () =>
      this.#transaction(async (client): Promise<NarRecord[]> => {
        // Locked rows are skipped (an upload is attaching them); the NOT EXISTS checks run after the locks.
        // In the order of the partial index on unused_since, so a batch reads only its own rows: ordered by
        // file hash, every batch read and sorted all unused NAR files (3.2 s a batch with 320 000 of them).
        const { rows: candidates } = await client.query<{ file_hash: string }>(
          `SELECT file_hash FROM nars WHERE unused_since < $1 ORDER BY unused_since LIMIT $2
           FOR UPDATE SKIP LOCKED`,
          [before.getTime(), limit],
        );
        if (candidates.length === 0) return [];
        const { rows } = await client.query<NarRow>(
          `DELETE FROM nars WHERE file_hash = ANY($1::text[])
             AND NOT EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = nars.file_hash)
             AND NOT EXISTS (SELECT 1 FROM nar_uploads AS u WHERE u.file_hash = nars.file_hash)
           RETURNING ${NAR_COLUMNS}`,
          [candidates.map((row) => row.file_hash)],
        );
        return rows.map(toNar);
      }),
    );
  }

  findUnusedNars(fileHashes: readonly string[]): Promise<Set<string>> {
    return this.#run('findUnusedNars', async () => {
      if (fileHashes.length === 0) return new Set<string>();
      const { rows } = await this.#pool.query<{ file_hash: string }>(
        `SELECT h AS file_hash FROM unnest($1::text[]) AS h
         WHERE NOT EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = h)
           AND NOT EXISTS (SELECT 1 FROM nar_uploads AS u WHERE u.file_hash = h)`,
        [fileHashes],
      );
      return new Set(rows.map((row) => row.file_hash));
    });
  }

  findKnownBlobKeys(blobKeys: readonly string[]): Promise<Set<string>> {
    return this.#run('findKnownBlobKeys', async () => {
      if (blobKeys.length === 0) return new Set<string>();
      const { rows } = await this.#pool.query<{ blob_key: string }>(
        `SELECT blob_key FROM nars WHERE blob_key = ANY($1::text[])
         UNION SELECT blob_key FROM build_logs WHERE blob_key = ANY($1::text[])`,
        [blobKeys],
      );
      return new Set(rows.map((row) => row.blob_key));
    });
  }

  listNars(after: string, limit: number): Promise<NarRecord[]> {
    return this.#run('listNars', async () => {
      const { rows } = await this.#pool.query<NarRow>(
        `SELECT ${NAR_COLUMNS} FROM nars WHERE file_hash > $1 ORDER BY file_hash LIMIT $2`,
        [after, limit],
      );
      return rows.map(toNar);
    });
  }

  findPathsByFile(cacheId: number, fileHash: string): Promise<string[]> {
    return this.#run('findPathsByFile', async () => {
      const { rows } = await this.#pool.query<{ hash_part: string }>(
        'SELECT hash_part FROM paths WHERE file_hash = $1 AND cache_id = $2 ORDER BY hash_part',
        [fileHash, cacheId],
      );
      return rows.map((row) => row.hash_part);
    });
  }

  deleteNar(fileHash: string): Promise<boolean> {
    return this.#run('deleteNar', () =>
      this.#transaction(async (client): Promise<boolean> => {
        await client.query('DELETE FROM paths WHERE file_hash = $1', [fileHash]);
        await client.query('DELETE FROM nar_uploads WHERE file_hash = $1', [fileHash]);
        const result = await client.query('DELETE FROM nars WHERE file_hash = $1', [fileHash]);
        return (result.rowCount ?? 0) > 0;
      }),
    );
  }

  acquireLease(name: string, holder: string, now: Date, until: Date, replacing?: string): Promise<boolean> {
    return this.#run('acquireLease', async () => {
      const result = await this.#pool.query(
        `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $4)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
           WHERE leases.holder = excluded.holder OR leases.expires_at <= $3 OR leases.holder = $5`,
        [name, holder, now.getTime(), until.getTime(), replacing ?? null],
      );
      return (result.rowCount ?? 0) > 0;
    });
  }

  leaseHolder(name: string): Promise<string | undefined> {
    return this.#run('leaseHolder', async () => {
      const { rows } = await this.#pool.query<{ holder: string }>(
        'SELECT holder FROM leases WHERE name = $1',
        [name],
      );
      return rows[0]?.holder;
    });
  }

  releaseLease(name: string, holder: string): Promise<void> {
    return this.#run('releaseLease', async () => {
      await this.#pool.query('DELETE FROM leases WHERE name = $1 AND holder = $2', [name, holder]);
    });
  }

  putBuildLog(cacheId: number, log: BuildLogRecord): Promise<string | undefined> {
    // The old row is locked until the new one is in. Two first uploads of the same log at once both find
    // no old row; the blob of the one overwritten is then left for GC.
    return this.#run('putBuildLog', async () => {
      try {
        return await this.#transaction(async (client) => {
          const { rows } = await client.query<{ blob_key: string }>(
            'SELECT blob_key FROM build_logs WHERE cache_id = $1 AND drv = $2 FOR UPDATE',
            [cacheId, log.drv],
          );
          await client.query(
            `INSERT INTO build_logs (cache_id, ${BUILD_LOG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (cache_id, drv) DO UPDATE SET blob_key = excluded.blob_key,
               compression = excluded.compression, size = excluded.size, stored_size = excluded.stored_size,
               created_at = excluded.created_at`,
            [
              cacheId,
              log.drv,
              log.blobKey,
              log.compression,
              log.size,
              log.storedSize,
              log.createdAt.getTime(),
            ],
          );
          return rows[0]?.blob_key;
        });
      } catch (error) {
        if (violated(error, 'build_logs_cache_fkey')) throw noSuchCache(cacheId);
        throw error;
      }
    });
  }

  getBuildLog(cacheId: number, drv: string): Promise<BuildLogRecord | undefined> {
    return this.#run('getBuildLog', async () => {
      const { rows } = await this.#pool.query<BuildLogRow>(
        `SELECT ${BUILD_LOG_COLUMNS} FROM build_logs WHERE cache_id = $1 AND drv = $2`,
        [cacheId, drv],
      );
      const row = rows[0];
      return row === undefined ? undefined : toBuildLog(row);
    });
  }

  listBuildLogBlobKeys(cacheId: number): Promise<string[]> {
    return this.#run('listBuildLogBlobKeys', async () => {
      const { rows } = await this.#pool.query<{ blob_key: string }>(
        'SELECT blob_key FROM build_logs WHERE cache_id = $1',
        [cacheId],
      );
      return rows.map((row) => row.blob_key);
    });
  }

  deleteUnusedBuildLogs(cacheId: number, drvs: readonly string[]): Promise<string[]> {
    return this.#run('deleteUnusedBuildLogs', async () => {
      if (drvs.length === 0) return [];
      const { rows } = await this.#pool.query<{ blob_key: string }>(
        `DELETE FROM build_logs AS b WHERE b.cache_id = $1 AND b.drv = ANY($2::text[])
           AND NOT EXISTS (SELECT 1 FROM paths AS p WHERE p.cache_id = $1 AND p.deriver = b.drv)
         RETURNING b.blob_key`,
        [cacheId, drvs],
      );
      return rows.map((row) => row.blob_key);
    });
  }

  addRealisation(cacheId: number, realisation: RealisationRecord): Promise<AddRealisationOutcome> {
    return this.#run('addRealisation', async () => {
      // Insert-or-read as in addPath: the rival row read back may vanish (deleted) in between; retry then.
      for (let attempt = 0; attempt < ADD_PATH_ATTEMPTS; attempt++) {
        try {
          const inserted = await this.#pool.query(
            `INSERT INTO realisations (cache_id, ${REALISATION_COLUMNS})
             VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6) ON CONFLICT (cache_id, id) DO NOTHING`,
            [
              cacheId,
              realisation.id,
              realisation.outPath,
              JSON.stringify(realisation.dependentRealisations),
              JSON.stringify(realisation.signatures),
              realisation.createdAt.getTime(),
            ],
          );
          if ((inserted.rowCount ?? 0) > 0) return { status: 'added' };
        } catch (error) {
          if (violated(error, 'realisations_cache_fkey')) throw noSuchCache(cacheId);
          throw error;
        }
        const existing = await findRealisation(this.#pool, cacheId, realisation.id);
        if (existing !== undefined) return { status: 'exists', existing };
      }
      throw new DatabaseError(`realisation ${realisation.id} kept appearing and vanishing`);
    });
  }

  getRealisation(cacheId: number, id: string): Promise<RealisationRecord | undefined> {
    return this.#run('getRealisation', () => findRealisation(this.#pool, cacheId, id));
  }

  addRealisationSignatures(cacheId: number, id: string, signatures: readonly string[]): Promise<void> {
    return this.#run('addRealisationSignatures', () =>
      this.#transaction(async (client) => {
        // FOR UPDATE: two concurrent calls merge one after the other instead of losing one's signatures.
        const { rows } = await client.query<{ signatures: unknown }>(
          'SELECT signatures FROM realisations WHERE cache_id = $1 AND id = $2 FOR UPDATE',
          [cacheId, id],
        );
        const row = rows[0];
        if (row === undefined) throw new NotFoundError('NOT_FOUND', `no realisation ${id} in this cache`);
        const current = stringList(row.signatures, 'signatures');
        const merged = [...new Set([...current, ...signatures])];
        if (merged.length !== current.length) {
          await client.query(
            'UPDATE realisations SET signatures = $3::jsonb WHERE cache_id = $1 AND id = $2',
            [cacheId, id, JSON.stringify(merged)],
          );
        }
      }),
    );
  }

  deleteRealisationsOf(cacheId: number, outPaths: readonly string[]): Promise<number> {
    return this.#run('deleteRealisationsOf', async () => {
      if (outPaths.length === 0) return 0;
      const result = await this.#pool.query(
        'DELETE FROM realisations WHERE cache_id = $1 AND out_path = ANY($2::text[])',
        [cacheId, outPaths],
      );
      return result.rowCount ?? 0;
    });
  }

  /** Runs the work; failures that are not ours become DatabaseErrors naming the operation. */
  async #run<T>(operation: string, work: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new DatabaseError('the metadata store is closed');
    try {
      return await work();
    } catch (error) {
      if (isNicheError(error)) throw error;
      throw new DatabaseError(`${operation} failed: ${describe(error)}`, { cause: error });
    }
  }

  /**
   * BEGIN … COMMIT on one pooled connection; ROLLBACK on any failure, and a connection that cannot roll
   * back is destroyed rather than returned to the pool mid-transaction.
   */
  async #transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackError) {
        broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }
}

/**
 * Applies pending migrations, each in its own transaction holding an advisory lock on the target schema,
 * so concurrent openers take turns and each sees the version the previous one left.
 */
async function migrate(client: pg.PoolClient, schema: string | undefined): Promise<void> {
  for (;;) {
    await client.query('BEGIN');
    try {
      await client.query(
        "SELECT pg_advisory_xact_lock($1, hashtext(coalesce($2::text, current_schema(), '')))",
        [MIGRATION_LOCK_CLASS, schema ?? null],
      );
      if (schema !== undefined) {
        await client.query(`CREATE SCHEMA IF NOT EXISTS ${pg.escapeIdentifier(schema)}`);
        const { rows } = await client.query<{ schema: string | null }>('SELECT current_schema() AS schema');
        const current = rows[0]?.schema ?? null;
        if (current !== schema) {
          // The connection string's own `options` parameter overrides the search_path we set.
          throw new ConfigError(
            'CONFIG_INVALID',
            `connections use schema ${String(current)}, not ${schema}: drop the options parameter from the connection string`,
          );
        }
      }
      const version = await schemaVersion(client);
      if (version > MIGRATIONS.length) {
        throw new ConfigError(
          'CONFIG_INVALID',
          `the database has schema version ${version}, newer than this niche knows (${MIGRATIONS.length})`,
        );
      }
      const sql = MIGRATIONS[version];
      if (sql === undefined) {
        await client.query('COMMIT');
        return;
      }
      await client.query(sql);
      await client.query('INSERT INTO niche_schema_migrations (version, applied_at) VALUES ($1, $2)', [
        version + 1,
        Date.now(),
      ]);
      await client.query('COMMIT');
    } catch (error) {
      // The caller destroys the connection, so a failed ROLLBACK needs no handling beyond keeping `error`.
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  }
}

/** The schema version (0 for a fresh database), creating the bookkeeping table if it is missing. */
async function schemaVersion(client: pg.PoolClient): Promise<number> {
  const { rows } = await client.query<{ present: boolean }>(
    "SELECT to_regclass('niche_schema_migrations') IS NOT NULL AS present",
  );
  if (rows[0]?.present !== true) {
    await client.query(
      'CREATE TABLE niche_schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)',
    );
    return 0;
  }
  const result = await client.query<{ version: number | null }>(
    'SELECT max(version) AS version FROM niche_schema_migrations',
  );
  return result.rows[0]?.version ?? 0;
}

async function findToken(db: Queryable, tokenHash: string): Promise<TokenRecord | undefined> {
  const { rows } = await db.query<TokenScopeRow>({ ...FIND_TOKEN_BY_HASH, values: [tokenHash] });
  return groupTokens(rows)[0];
}

async function findCacheNar(db: Queryable, cacheId: number, fileHash: string): Promise<CacheNar | undefined> {
  const { rows } = await db.query<CacheNarRow>({ ...NAR_IN_CACHE, values: [cacheId, fileHash] });
  const row = rows[0];
  if (row === undefined || (!row.published && row.uploaded_at === null)) return undefined;
  return { nar: toNar(row), published: row.published, uploadedAt: optionalDate(row.uploaded_at) };
}

async function findPath(db: Queryable, cacheId: number, hashPart: string): Promise<PathWithNar | undefined> {
  const { rows } = await db.query<PathNarRow<unknown>>({ ...GET_PATH, values: [cacheId, hashPart] });
  const row = rows[0];
  return row === undefined ? undefined : toPathWithNar(row, stringList);
}

/** Folds token-scope join rows (ordered by token, then position) into tokens with their scopes. */
function groupTokens(rows: readonly TokenScopeRow[]): TokenRecord[] {
  const tokens = new Map<number, { row: TokenScopeRow; scopes: TokenScope[] }>();
  for (const row of rows) {
    let token = tokens.get(row.id);
    if (token === undefined) {
      token = { row, scopes: [] };
      tokens.set(row.id, token);
    }
    if (row.cache_pattern !== null) token.scopes.push(toScope(row.id, row.cache_pattern, row.permissions));
  }
  return [...tokens.values()].map(({ row, scopes }) => ({
    id: row.id,
    description: row.description,
    tokenHash: row.token_hash,
    scopes,
    createdAt: new Date(row.created_at),
    expiresAt: optionalDate(row.expires_at),
    revokedAt: optionalDate(row.revoked_at),
    sshKey:
      row.ssh_key_fingerprint === null || row.ssh_public_key === null
        ? undefined
        : { fingerprint: row.ssh_key_fingerprint, publicKey: row.ssh_public_key },
  }));
}

function toScope(tokenId: number, cachePattern: string, stored: unknown): TokenScope {
  const permissions = stringList(stored, 'permissions');
  if (!permissions.every(isPermission)) {
    throw new DatabaseError(`token ${tokenId} has an unknown permission in ${JSON.stringify(permissions)}`);
  }
  return { cachePattern, permissions };
}

function isPermission(value: string): value is Permission {
  return (PERMISSIONS as readonly string[]).includes(value);
}

function toCache(row: CacheRow): CacheRecord {
  return {
    id: row.id,
    name: row.name,
    isPublic: row.is_public,
    priority: row.priority,
    storeDir: row.store_dir,
    upstreamKeys: stringList(row.upstream_keys, 'upstream keys'),
    createdAt: new Date(row.created_at),
    retentionMs: row.retention_ms ?? undefined,
    maxSize: row.max_size ?? undefined,
  };
}

/** PostgreSQL's deadlock_detected: one of the transactions was rolled back and may simply be retried. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isDeadlock(error: unknown): boolean {
  return error instanceof pg.DatabaseError && error.code === '40P01';
}

/** A JSONB column as parsed by the driver, checked to be the list of strings it must hold. */
async function findRealisation(
  db: Queryable,
  cacheId: number,
  id: string,
): Promise<RealisationRecord | undefined> {
  const { rows } = await db.query<RealisationRow<unknown>>(
    `SELECT ${REALISATION_COLUMNS} FROM realisations WHERE cache_id = $1 AND id = $2`,
    [cacheId, id],
  );
  const row = rows[0];
  return row === undefined ? undefined : toRealisation(row, stringList, jsonRecord);
}

function jsonRecord(value: unknown, what: string): Record<string, string> {
  const record = stringRecord(value);
  if (record === undefined) {
    throw new DatabaseError(
      `stored ${what} are not an object of strings: ${JSON.stringify(value).slice(0, 100)}`,
    );
  }
  return record;
}

function stringList(value: unknown, what: string): string[] {
  if (!Array.isArray(value) || !value.every((item): item is string => typeof item === 'string')) {
    throw new DatabaseError(
      `stored ${what} are not a list of strings: ${JSON.stringify(value).slice(0, 100)}`,
    );
  }
  return value;
}

function first<T>(rows: readonly T[], what: string): T {
  const row = rows[0];
  if (row === undefined) throw new DatabaseError(`${what} returned no row`);
  return row;
}

/** Whether the error is PostgreSQL reporting a violation of the named constraint. */
function violated(error: unknown, constraint: string): boolean {
  return error instanceof pg.DatabaseError && error.constraint === constraint;
}

function noSuchCache(cacheId: number): NotFoundError {
  return new NotFoundError('CACHE_NOT_FOUND', `no cache with id ${cacheId}`);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

interface RedactedTarget {
  /** The server, user and database, for messages; never the password. */
  readonly display: string;
  /** Whether the string parsed as a URL (else its secrets, if any, are unknown). */
  readonly parsed: boolean;
  readonly secrets: readonly string[];
}

function redactConnectionString(connectionString: string): RedactedTarget {
  let url: URL;
  try {
    url = new URL(connectionString);
  } catch {
    return { display: 'the configured address (not a URL)', parsed: false, secrets: [] };
  }
  const secrets = new Set<string>();
  const add = (value: string | null): void => {
    if (value === null || value === '') return;
    secrets.add(value);
    try {
      secrets.add(decodeURIComponent(value));
    } catch {
      // not percent-encoded
    }
  };
  add(url.password);
  for (const [name, value] of url.searchParams) if (/pass/i.test(name)) add(value);
  const user = url.username === '' ? '' : `${url.username}@`;
  return {
    display: `${url.protocol}//${user}${url.host}${url.pathname}`,
    parsed: true,
    secrets: [...secrets],
  };
}

function scrub(text: string, secrets: readonly string[]): string {
  return secrets.reduce((result, secret) => result.split(secret).join('***'), text);
}

function containsSecret(error: unknown, secrets: readonly string[]): boolean {
  const text = inspect(error, { depth: 4 });
  return secrets.some((secret) => text.includes(secret));
}
