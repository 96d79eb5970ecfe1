// The MetadataStore on one SQLite file (better-sqlite3), for single-host deployments. Every statement is
// prepared once at open; methods are async to match the interface (PostgreSQL needs it) but do their work
// synchronously, so a method's effects are complete when it resolves; a method that writes resolves once its
// commit is also durable: WAL with synchronous = NORMAL, then one fdatasync of the WAL off the event loop,
// shared by the commits of concurrent requests (group commit, ./wal-sync.ts).
// Write transactions are IMMEDIATE: a deferred one that reads and then writes can fail with SQLITE_BUSY under
// WAL without the busy timeout ever being consulted.
import Database from 'better-sqlite3';

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
import { ReadBatch } from '../../util/sqlite-read-batch.js';
import { WalSync, type SyncFile } from './wal-sync.js';
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

const BUSY_TIMEOUT_MS = 5000;

interface CacheRow {
  id: number;
  name: string;
  is_public: number;
  priority: number;
  store_dir: string;
  upstream_keys: string;
  created_at: number;
  retention_ms: number | null;
  max_size: number | null;
}

interface TokenRow {
  id: number;
  description: string;
  token_hash: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  ssh_key_fingerprint: string | null;
  ssh_public_key: string | null;
}

interface ScopeRow {
  token_id: number;
  cache_pattern: string;
  permissions: string;
}

/** A NAR with how it is attached to one cache (`published` is 0 or 1). */
interface CacheNarRow extends NarRow {
  published: number;
  uploaded_at: number | null;
}

interface CacheKey {
  cacheId: number;
  fileHash: string;
}

interface PathKey {
  cacheId: number;
  hashPart: string;
}

interface LogKey {
  cacheId: number;
  drv: string;
}

interface RealisationKey {
  cacheId: number;
  id: string;
}

const NAR_COLUMNS = 'file_hash, file_size, compression, nar_hash, nar_size, blob_key';

/** The narinfo lookup, the hottest query in the server: one primary-key probe on paths, one on nars. */
const PATH_WITH_NAR_SELECT = `
  SELECT p.hash_part, p.store_path, p.file_hash, p.nar_hash, p.nar_size, p.refs, p.deriver, p.ca,
         p.signatures, p.created_at, coalesce(p.last_access_at, p.created_at) AS last_access,
         n.file_size AS n_file_size, n.compression AS n_compression,
         n.nar_hash AS n_nar_hash, n.nar_size AS n_nar_size, n.blob_key AS n_blob_key
  FROM paths AS p JOIN nars AS n ON n.file_hash = p.file_hash`;

export const PATH_WITH_NAR_SQL = `${PATH_WITH_NAR_SELECT}
  WHERE p.cache_id = @cacheId AND p.hash_part = @hashPart`;

/** A page of paths by hash part: after the previous page's last, in the prefix's range [low, high). */
export const PATH_PAGE_SQL = `${PATH_WITH_NAR_SELECT}
  WHERE p.cache_id = @cacheId AND p.hash_part > @after AND p.hash_part >= @low AND p.hash_part < @high
  ORDER BY p.hash_part LIMIT @limit`;

/**
 * A page of paths by name (the indexed virtual column of migrations.ts) in the prefix's range [low, high); the row
 * value comparison walks the (cache_id, name, hash_part) index on from the previous page's last path.
 */
export const NAME_PAGE_SQL = `${PATH_WITH_NAR_SELECT}
  WHERE p.cache_id = @cacheId AND p.name >= @low AND p.name < @high
    AND (p.name, p.hash_part) > (@afterName, @afterHash)
  ORDER BY p.name, p.hash_part LIMIT @limit`;

/**
 * The batch presence check, with the hash parts bound as one JSON array (no limit on host parameters, one
 * prepared statement for any count). CROSS JOIN makes SQLite walk the list and probe the primary key once
 * per element instead of scanning the cache's paths. Returns the stored paths, whose base names the
 * caller compares with the names it was asked about.
 */
export const PRESENT_PATHS_SQL = `
  SELECT p.store_path FROM json_each(@hashParts) AS j CROSS JOIN paths AS p
  WHERE p.cache_id = @cacheId AND p.hash_part = j.value`;

function prepareStatements(db: Database.Database) {
  return {
    insertCache: db.prepare<
      {
        name: string;
        isPublic: number;
        priority: number;
        storeDir: string;
        upstreamKeys: string;
        createdAt: number;
      },
      CacheRow
    >(
      `INSERT INTO caches (name, is_public, priority, store_dir, upstream_keys, created_at)
       VALUES (@name, @isPublic, @priority, @storeDir, @upstreamKeys, @createdAt) RETURNING *`,
    ),
    updateCache: db.prepare<
      {
        id: number;
        isPublic: number | null;
        priority: number | null;
        upstreamKeys: string | null;
        setRetention: number;
        retention: number | null;
        setMaxSize: number;
        maxSize: number | null;
      },
      CacheRow
    >(
      `UPDATE caches SET is_public = coalesce(@isPublic, is_public), priority = coalesce(@priority, priority),
              upstream_keys = coalesce(@upstreamKeys, upstream_keys),
              retention_ms = CASE WHEN @setRetention = 1 THEN @retention ELSE retention_ms END,
              max_size = CASE WHEN @setMaxSize = 1 THEN @maxSize ELSE max_size END
       WHERE id = @id RETURNING *`,
    ),
    deleteCache: db.prepare<[number]>('DELETE FROM caches WHERE id = ?'),
    retireSigningKey: db.prepare<{ cacheId: number; name: string; at: number }>(
      'UPDATE signing_keys SET retired_at = @at WHERE cache_id = @cacheId AND name = @name AND retired_at IS NULL',
    ),
    insertRef: db.prepare<{ cacheId: number; refHash: string; hashPart: string }>(
      'INSERT OR IGNORE INTO path_refs (cache_id, ref_hash, hash_part) VALUES (@cacheId, @refHash, @hashPart)',
    ),
    referrers: db
      .prepare<{ cacheId: number; hashPart: string; limit: number }, string>(
        `SELECT hash_part FROM path_refs WHERE cache_id = @cacheId AND ref_hash = @hashPart
         ORDER BY hash_part LIMIT @limit`,
      )
      .pluck(),
    deletePath: db.prepare<PathKey>('DELETE FROM paths WHERE cache_id = @cacheId AND hash_part = @hashPart'),
    cacheByName: db.prepare<[string], CacheRow>('SELECT * FROM caches WHERE name = ?'),
    allCaches: db.prepare<[], CacheRow>('SELECT * FROM caches ORDER BY name'),

    insertSigningKey: db.prepare<
      { cacheId: number; name: string; secretKey: string; publicKey: string; createdAt: number },
      SigningKeyRow
    >(
      `INSERT INTO signing_keys (cache_id, name, secret_key, public_key, created_at)
       VALUES (@cacheId, @name, @secretKey, @publicKey, @createdAt) RETURNING *`,
    ),
    signingKeysOfCache: db.prepare<[number], SigningKeyRow>(
      'SELECT * FROM signing_keys WHERE cache_id = ? ORDER BY created_at, id',
    ),

    insertToken: db.prepare<
      {
        description: string;
        tokenHash: string;
        createdAt: number;
        expiresAt: number | null;
        sshKeyFingerprint: string | null;
        sshPublicKey: string | null;
      },
      TokenRow
    >(
      `INSERT INTO tokens (description, token_hash, created_at, expires_at, ssh_key_fingerprint, ssh_public_key)
       VALUES (@description, @tokenHash, @createdAt, @expiresAt, @sshKeyFingerprint, @sshPublicKey) RETURNING *`,
    ),
    insertScope: db.prepare<
      { tokenId: number; position: number; cachePattern: string; permissions: string },
      ScopeRow
    >(
      `INSERT INTO token_scopes (token_id, position, cache_pattern, permissions)
       VALUES (@tokenId, @position, @cachePattern, @permissions)`,
    ),
    tokenByHash: db.prepare<[string], TokenRow>('SELECT * FROM tokens WHERE token_hash = ?'),
    tokenBySshKey: db.prepare<[string], TokenRow>(
      'SELECT * FROM tokens WHERE ssh_key_fingerprint = ? AND revoked_at IS NULL ORDER BY id DESC LIMIT 1',
    ),
    scopesOfToken: db.prepare<[number], ScopeRow>(
      'SELECT token_id, cache_pattern, permissions FROM token_scopes WHERE token_id = ? ORDER BY position',
    ),
    allTokens: db.prepare<[], TokenRow>('SELECT * FROM tokens ORDER BY id'),
    allScopes: db.prepare<[], ScopeRow>(
      'SELECT token_id, cache_pattern, permissions FROM token_scopes ORDER BY token_id, position',
    ),
    revokeToken: db.prepare<{ id: number; at: number }>(
      'UPDATE tokens SET revoked_at = @at WHERE id = @id AND revoked_at IS NULL',
    ),

    insertNar: db.prepare<NarRow & { createdAt: number }>(
      `INSERT INTO nars (${NAR_COLUMNS}, created_at)
       VALUES (@file_hash, @file_size, @compression, @nar_hash, @nar_size, @blob_key, @createdAt)
       ON CONFLICT (file_hash) DO NOTHING`,
    ),
    narByHash: db.prepare<[string], NarRow>(`SELECT ${NAR_COLUMNS} FROM nars WHERE file_hash = ?`),
    upsertUpload: db.prepare<CacheKey & { at: number }>(
      `INSERT INTO nar_uploads (cache_id, file_hash, uploaded_at) VALUES (@cacheId, @fileHash, @at)
       ON CONFLICT (cache_id, file_hash) DO UPDATE SET uploaded_at = excluded.uploaded_at`,
    ),
    deleteUpload: db.prepare<CacheKey>(
      'DELETE FROM nar_uploads WHERE cache_id = @cacheId AND file_hash = @fileHash',
    ),
    narInCache: db.prepare<CacheKey, CacheNarRow>(
      `SELECT ${NAR_COLUMNS},
              EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = @fileHash AND p.cache_id = @cacheId)
                AS published,
              (SELECT u.uploaded_at FROM nar_uploads AS u WHERE u.cache_id = @cacheId AND u.file_hash = @fileHash)
                AS uploaded_at
       FROM nars AS n WHERE n.file_hash = @fileHash`,
    ),
    deleteUploadsBefore: db.prepare<{ before: number }>(
      'DELETE FROM nar_uploads WHERE uploaded_at < @before',
    ),

    pathWithNar: db.prepare<PathKey, PathNarRow<string>>(PATH_WITH_NAR_SQL),
    pathPage: db.prepare<
      { cacheId: number; after: string; low: string; high: string; limit: number },
      PathNarRow<string>
    >(PATH_PAGE_SQL),
    namePage: db.prepare<
      { cacheId: number; low: string; high: string; afterName: string; afterHash: string; limit: number },
      PathNarRow<string>
    >(NAME_PAGE_SQL),
    presentPaths: db.prepare<{ cacheId: number; hashParts: string }, string>(PRESENT_PATHS_SQL).pluck(),
    insertPath: db.prepare<{
      cacheId: number;
      hashPart: string;
      storePath: string;
      fileHash: string;
      narHash: string;
      narSize: number;
      refs: string;
      deriver: string | null;
      ca: string | null;
      signatures: string;
      createdAt: number;
    }>(
      `INSERT INTO paths (cache_id, hash_part, store_path, file_hash, nar_hash, nar_size, refs, deriver, ca,
                          signatures, created_at, last_access_at)
       VALUES (@cacheId, @hashPart, @storePath, @fileHash, @narHash, @narSize, @refs, @deriver, @ca,
               @signatures, @createdAt, @createdAt)`,
    ),
    signaturesOfPath: db
      .prepare<PathKey, string>(
        'SELECT signatures FROM paths WHERE cache_id = @cacheId AND hash_part = @hashPart',
      )
      .pluck(),
    updateSignatures: db.prepare<PathKey & { signatures: string }>(
      'UPDATE paths SET signatures = @signatures WHERE cache_id = @cacheId AND hash_part = @hashPart',
    ),

    buildLog: db.prepare<LogKey, BuildLogRow>(
      `SELECT ${BUILD_LOG_COLUMNS} FROM build_logs WHERE cache_id = @cacheId AND drv = @drv`,
    ),
    upsertBuildLog: db.prepare<LogKey & Omit<BuildLogRow, 'drv'>>(
      `INSERT INTO build_logs (cache_id, ${BUILD_LOG_COLUMNS})
       VALUES (@cacheId, @drv, @blob_key, @compression, @size, @stored_size, @created_at)
       ON CONFLICT (cache_id, drv) DO UPDATE SET blob_key = excluded.blob_key,
         compression = excluded.compression, size = excluded.size, stored_size = excluded.stored_size,
         created_at = excluded.created_at`,
    ),
    buildLogBlobKeys: db
      .prepare<[number], string>('SELECT blob_key FROM build_logs WHERE cache_id = ?')
      .pluck(),
    deleteUnusedBuildLog: db
      .prepare<LogKey, string>(
        `DELETE FROM build_logs WHERE cache_id = @cacheId AND drv = @drv
           AND NOT EXISTS (SELECT 1 FROM paths WHERE cache_id = @cacheId AND deriver = @drv)
         RETURNING blob_key`,
      )
      .pluck(),

    realisation: db.prepare<RealisationKey, RealisationRow<string>>(
      `SELECT ${REALISATION_COLUMNS} FROM realisations WHERE cache_id = @cacheId AND id = @id`,
    ),
    insertRealisation: db.prepare<RealisationKey & Omit<RealisationRow<string>, 'id'>>(
      `INSERT INTO realisations (cache_id, ${REALISATION_COLUMNS})
       VALUES (@cacheId, @id, @out_path, @dependents, @signatures, @created_at)`,
    ),
    updateRealisationSignatures: db.prepare<RealisationKey & { signatures: string }>(
      'UPDATE realisations SET signatures = @signatures WHERE cache_id = @cacheId AND id = @id',
    ),
    deleteRealisationsOf: db.prepare<{ cacheId: number; outPath: string }>(
      'DELETE FROM realisations WHERE cache_id = @cacheId AND out_path = @outPath',
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

interface GcPathSqlRow {
  hash_part: string;
  file_hash: string;
  file_size: number;
  last_access: number;
  shares_file: number;
}

/** The statements of access tracking, pins, usage and GC (src/cache/gc.ts). */
function prepareLifecycleStatements(db: Database.Database) {
  return {
    presentHashParts: db
      .prepare<{ cacheId: number; hashParts: string }, string>(
        `SELECT p.hash_part FROM json_each(@hashParts) AS j CROSS JOIN paths AS p
         WHERE p.cache_id = @cacheId AND p.hash_part = j.value`,
      )
      .pluck(),
    touchPath: db.prepare<{ cacheId: number; hashPart: string; at: number }>(
      `UPDATE paths SET last_access_at = @at
       WHERE cache_id = @cacheId AND hash_part = @hashPart AND coalesce(last_access_at, created_at) < @at`,
    ),
    touchFile: db.prepare<{ cacheId: number; fileHash: string; at: number }>(
      `UPDATE paths SET last_access_at = @at
       WHERE file_hash = @fileHash AND cache_id = @cacheId AND coalesce(last_access_at, created_at) < @at`,
    ),
    usage: db.prepare<[number], UsageRow>(`SELECT ${USAGE_COLUMNS} FROM cache_usage WHERE cache_id = ?`),
    gcPaths: db.prepare<{ cacheId: number; after: string; limit: number }, GcPathSqlRow>(
      `SELECT p.hash_part, p.file_hash, n.file_size, coalesce(p.last_access_at, p.created_at) AS last_access,
              EXISTS (SELECT 1 FROM paths AS o WHERE o.file_hash = p.file_hash AND o.cache_id = p.cache_id
                        AND o.hash_part <> p.hash_part) AS shares_file
       FROM paths AS p JOIN nars AS n ON n.file_hash = p.file_hash
       WHERE p.cache_id = @cacheId AND p.hash_part > @after ORDER BY p.hash_part LIMIT @limit`,
    ),
    gcRefs: db.prepare<
      { cacheId: number; refHash: string; hashPart: string; limit: number },
      { ref_hash: string; hash_part: string }
    >(
      `SELECT ref_hash, hash_part FROM path_refs
       WHERE cache_id = @cacheId AND (ref_hash, hash_part) > (@refHash, @hashPart)
       ORDER BY ref_hash, hash_part LIMIT @limit`,
    ),
    collectablePath: db.prepare<PathKey & { accessedAtMost: number | null; now: number }, PathNarRow<string>>(
      `${PATH_WITH_NAR_SELECT}
       WHERE p.cache_id = @cacheId AND p.hash_part = @hashPart
         AND (@accessedAtMost IS NULL OR coalesce(p.last_access_at, p.created_at) <= @accessedAtMost)
         AND NOT EXISTS (SELECT 1 FROM pins AS k WHERE k.cache_id = @cacheId AND k.hash_part = @hashPart
                           AND (k.expires_at IS NULL OR k.expires_at > @now))`,
    ),
    allReferrers: db
      .prepare<PathKey, string>(
        'SELECT hash_part FROM path_refs WHERE cache_id = @cacheId AND ref_hash = @hashPart',
      )
      .pluck(),
    upsertPin: db.prepare<{
      cacheId: number;
      name: string;
      hashPart: string;
      storePath: string;
      createdAt: number;
      expiresAt: number | null;
    }>(
      `INSERT INTO pins (cache_id, name, hash_part, store_path, created_at, expires_at)
       VALUES (@cacheId, @name, @hashPart, @storePath, @createdAt, @expiresAt)
       ON CONFLICT (cache_id, name) DO UPDATE SET hash_part = excluded.hash_part,
         store_path = excluded.store_path, created_at = excluded.created_at, expires_at = excluded.expires_at`,
    ),
    pathExists: db
      .prepare<PathKey, number>('SELECT 1 FROM paths WHERE cache_id = @cacheId AND hash_part = @hashPart')
      .pluck(),
    pins: db.prepare<[number], PinRow>(`SELECT ${PIN_COLUMNS} FROM pins WHERE cache_id = ? ORDER BY name`),
    deletePin: db.prepare<{ cacheId: number; name: string }>(
      'DELETE FROM pins WHERE cache_id = @cacheId AND name = @name',
    ),
    narPage: db.prepare<{ after: string; limit: number }, NarRow>(
      `SELECT ${NAR_COLUMNS} FROM nars WHERE file_hash > @after ORDER BY file_hash LIMIT @limit`,
    ),
    markNars: db.prepare<{ after: string; last: string; now: number }>(
      `UPDATE nars SET unused_since = CASE
           WHEN EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = nars.file_hash)
             OR EXISTS (SELECT 1 FROM nar_uploads AS u WHERE u.file_hash = nars.file_hash) THEN NULL
           ELSE coalesce(unused_since, @now) END
       WHERE file_hash > @after AND file_hash <= @last`,
    ),
    lastOfNarPage: db
      .prepare<{ after: string; limit: number }, string | null>(
        `SELECT max(file_hash) FROM (SELECT file_hash FROM nars WHERE file_hash > @after
                                     ORDER BY file_hash LIMIT @limit)`,
      )
      .pluck(),
    unusedNars: db.prepare<{ before: number; limit: number }, NarRow>(
      `SELECT ${NAR_COLUMNS} FROM nars WHERE unused_since < @before
         AND NOT EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = nars.file_hash)
         AND NOT EXISTS (SELECT 1 FROM nar_uploads AS u WHERE u.file_hash = nars.file_hash)
       LIMIT @limit`,
    ),
    deleteNarRow: db.prepare<[string]>('DELETE FROM nars WHERE file_hash = ?'),
    unusedOf: db
      .prepare<[string], string>(
        `SELECT j.value FROM json_each(?) AS j
         WHERE NOT EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = j.value)
           AND NOT EXISTS (SELECT 1 FROM nar_uploads AS u WHERE u.file_hash = j.value)`,
      )
      .pluck(),
    knownNarBlobs: db
      .prepare<[string], string>(
        'SELECT n.blob_key FROM json_each(?) AS j CROSS JOIN nars AS n WHERE n.blob_key = j.value',
      )
      .pluck(),
    knownLogBlobs: db
      .prepare<[string], string>(
        'SELECT l.blob_key FROM json_each(?) AS j CROSS JOIN build_logs AS l WHERE l.blob_key = j.value',
      )
      .pluck(),
    pathsByFile: db
      .prepare<{ cacheId: number; fileHash: string }, string>(
        'SELECT hash_part FROM paths WHERE file_hash = @fileHash AND cache_id = @cacheId ORDER BY hash_part',
      )
      .pluck(),
    deletePathsOfFile: db.prepare<[string]>('DELETE FROM paths WHERE file_hash = ?'),
    deleteUploadsOfFile: db.prepare<[string]>('DELETE FROM nar_uploads WHERE file_hash = ?'),
    takeLease: db.prepare<{
      name: string;
      holder: string;
      now: number;
      until: number;
      replacing: string | null;
    }>(
      `INSERT INTO leases (name, holder, expires_at) VALUES (@name, @holder, @until)
       ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at <= @now OR leases.holder = @replacing`,
    ),
    leaseHolder: db.prepare<[string], string>('SELECT holder FROM leases WHERE name = ?').pluck(),
    releaseLease: db.prepare<{ name: string; holder: string }>(
      'DELETE FROM leases WHERE name = @name AND holder = @holder',
    ),
  };
}

type LifecycleStatements = ReturnType<typeof prepareLifecycleStatements>;

export interface SqliteOpenOptions {
  /** How the WAL is flushed (tests count and delay it); default fdatasync. */
  readonly syncFile?: SyncFile;
}

export class SqliteMetadataStore implements MetadataStore {
  readonly #db: Database.Database;
  readonly #sql: Statements;
  readonly #life: LifecycleStatements;
  /** Makes commits durable; undefined for an in-memory database. */
  readonly #wal: WalSync | undefined;
  /** The per-request lookups (narinfos, NARs), batched per turn of the event loop. */
  readonly #reads: ReadBatch;

  private constructor(db: Database.Database, statements: Statements, wal: WalSync | undefined) {
    this.#db = db;
    this.#sql = statements;
    this.#life = prepareLifecycleStatements(db);
    this.#wal = wal;
    this.#reads = new ReadBatch(db, (error) => failure('read transaction', error));
  }

  /**
   * Opens (creating if needed) the database file and brings its schema up to date. Throws
   * ConfigError('DATA_DIR_UNUSABLE') if the file cannot be used or was written by a newer niche. Async only
   * for symmetry with backends that connect over the network; the work is synchronous.
   */
  static open(file: string, options: SqliteOpenOptions = {}): Promise<SqliteMetadataStore> {
    try {
      return Promise.resolve(SqliteMetadataStore.#openSync(file, options));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  static #openSync(file: string, options: SqliteOpenOptions): SqliteMetadataStore {
    let db: Database.Database | undefined;
    try {
      db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
      const journalMode = db.pragma('journal_mode = WAL', { simple: true });
      if (journalMode !== 'wal' && !db.memory)
        throw new Error(`journal_mode is ${String(journalMode)}, not wal`);
      // Durability comes from WalSync (every write method awaits it), not from an fsync in each commit.
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      if (db.pragma('foreign_keys', { simple: true }) !== 1)
        throw new Error('foreign keys cannot be enabled');
      migrate(db);
      const wal = db.memory ? undefined : new WalSync(`${db.name}-wal`, options.syncFile);
      return new SqliteMetadataStore(db, prepareStatements(db), wal);
    } catch (error) {
      db?.close();
      if (isNicheError(error)) throw error;
      throw new ConfigError('DATA_DIR_UNUSABLE', `cannot open the database ${file}: ${describe(error)}`, {
        cause: error,
      });
    }
  }

  async close(): Promise<void> {
    // The WAL's file is closed first: it must not outlive the connection that keeps it in place.
    await this.#wal?.close();
    if (this.#db.open) this.#db.close();
  }

  ping(): Promise<void> {
    return this.#run('ping', () => {
      this.#db.prepare('SELECT 1').get();
    });
  }

  createCache(cache: NewCache): Promise<CacheRecord> {
    return this.#write('createCache', () => {
      try {
        return this.#db
          .transaction((): CacheRecord => {
            const row = this.#sql.insertCache.get({
              name: cache.name,
              isPublic: cache.isPublic ? 1 : 0,
              priority: cache.priority,
              storeDir: cache.storeDir,
              upstreamKeys: JSON.stringify(cache.upstreamKeys),
              createdAt: Date.now(),
            });
            const created = toCache(required(row, 'INSERT … RETURNING'));
            const key = cache.initialKey;
            if (key !== undefined) {
              this.#sql.insertSigningKey.get({ cacheId: created.id, ...key, createdAt: Date.now() });
            }
            return created;
          })
          .immediate();
      } catch (error) {
        if (constraint(error) === 'SQLITE_CONSTRAINT_UNIQUE') {
          throw new ConflictError('CACHE_EXISTS', `a cache named ${cache.name} already exists`);
        }
        throw error;
      }
    });
  }

  getCache(name: string): Promise<CacheRecord | undefined> {
    return this.#run('getCache', () => {
      const row = this.#sql.cacheByName.get(name);
      return row === undefined ? undefined : toCache(row);
    });
  }

  listCaches(): Promise<CacheRecord[]> {
    return this.#run('listCaches', () => this.#sql.allCaches.all().map(toCache));
  }

  updateCache(cacheId: number, changes: CacheChanges): Promise<CacheRecord> {
    return this.#write('updateCache', () => {
      const row = this.#sql.updateCache.get({
        id: cacheId,
        isPublic: changes.isPublic === undefined ? null : changes.isPublic ? 1 : 0,
        priority: changes.priority ?? null,
        upstreamKeys: changes.upstreamKeys === undefined ? null : JSON.stringify(changes.upstreamKeys),
        setRetention: changes.retentionMs === undefined ? 0 : 1,
        retention: changes.retentionMs ?? null,
        setMaxSize: changes.maxSize === undefined ? 0 : 1,
        maxSize: changes.maxSize ?? null,
      });
      if (row === undefined) throw noSuchCache(cacheId);
      return toCache(row);
    });
  }

  deleteCache(cacheId: number): Promise<boolean> {
    return this.#write('deleteCache', () => this.#sql.deleteCache.run(cacheId).changes > 0);
  }

  retireSigningKey(cacheId: number, name: string, at: Date): Promise<boolean> {
    return this.#write(
      'retireSigningKey',
      () => this.#sql.retireSigningKey.run({ cacheId, name, at: at.getTime() }).changes > 0,
    );
  }

  findReferrers(cacheId: number, hashPart: string, limit: number): Promise<string[]> {
    return this.#run('findReferrers', () => this.#sql.referrers.all({ cacheId, hashPart, limit }));
  }

  deletePath(cacheId: number, hashPart: string): Promise<boolean> {
    return this.#write('deletePath', () => this.#sql.deletePath.run({ cacheId, hashPart }).changes > 0);
  }

  deletePathsIfUnused(
    cacheId: number,
    candidates: readonly DeleteCandidate[],
    now: Date,
  ): Promise<PathRecord[]> {
    return this.#write('deletePathsIfUnused', () =>
      this.#db
        .transaction((): PathRecord[] => {
          const removed: PathRecord[] = [];
          const gone = new Set<string>();
          for (const candidate of candidates) {
            const row = this.#life.collectablePath.get({
              cacheId,
              hashPart: candidate.hashPart,
              accessedAtMost: candidate.accessedAtMost ?? null,
              now: now.getTime(),
            });
            if (row === undefined) continue;
            const referrers = this.#life.allReferrers.all({ cacheId, hashPart: candidate.hashPart });
            if (!referrers.every((referrer) => gone.has(referrer))) continue;
            this.#sql.deletePath.run({ cacheId, hashPart: candidate.hashPart });
            gone.add(candidate.hashPart);
            removed.push(toPathWithNar(row, parseStrings).path);
          }
          return removed;
        })
        .immediate(),
    );
  }

  recordAccesses(accesses: readonly AccessRecord[]): Promise<void> {
    // Without waiting for the write lock: better-sqlite3 waits for it on the calling thread, which is the
    // event loop answering requests, while another connection (GC on its thread, `niche gc`) holds it.
    // Busy: the write fails at once and the caller keeps the accesses for its next flush.
    return this.#run('recordAccesses', () => {
      this.#db.pragma('busy_timeout = 0');
      try {
        this.#recordAccesses(accesses);
      } finally {
        this.#db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      }
    });
  }

  #recordAccesses(accesses: readonly AccessRecord[]): void {
    this.#db
      .transaction(() => {
        for (const access of accesses) {
          if (access.hashPart !== undefined) {
            this.#life.touchPath.run({ cacheId: access.cacheId, hashPart: access.hashPart, at: access.at });
          }
          if (access.fileHash !== undefined) {
            this.#life.touchFile.run({ cacheId: access.cacheId, fileHash: access.fileHash, at: access.at });
          }
        }
      })
      .immediate();
  }

  getCacheUsage(cacheId: number): Promise<CacheUsage> {
    return this.#run('getCacheUsage', () => {
      const row = this.#life.usage.get(cacheId);
      if (row === undefined) throw noSuchCache(cacheId);
      return toCacheUsage(row);
    });
  }

  scanGcPaths(cacheId: number, after: string, limit: number): Promise<GcPathRow[]> {
    return this.#run('scanGcPaths', () =>
      this.#life.gcPaths.all({ cacheId, after, limit }).map((row) => ({
        hashPart: row.hash_part,
        fileHash: row.file_hash,
        fileSize: row.file_size,
        lastAccess: row.last_access,
        sharesFile: row.shares_file === 1,
      })),
    );
  }

  scanGcRefs(cacheId: number, after: GcRefRow | undefined, limit: number): Promise<GcRefRow[]> {
    return this.#run('scanGcRefs', () =>
      this.#life.gcRefs
        .all({ cacheId, refHash: after?.hashPart ?? '', hashPart: after?.referrer ?? '', limit })
        .map((row) => ({ hashPart: row.ref_hash, referrer: row.hash_part })),
    );
  }

  putPin(cacheId: number, pin: PinRecord): Promise<PinRecord> {
    return this.#write('putPin', () =>
      this.#db
        .transaction((): PinRecord => {
          if (this.#life.pathExists.get({ cacheId, hashPart: pin.hashPart }) === undefined) {
            throw new NotFoundError('NOT_FOUND', `${pin.storePath} is not in this cache`);
          }
          this.#life.upsertPin.run({
            cacheId,
            name: pin.name,
            hashPart: pin.hashPart,
            storePath: pin.storePath,
            createdAt: pin.createdAt.getTime(),
            expiresAt: pin.expiresAt?.getTime() ?? null,
          });
          return pin;
        })
        .immediate(),
    );
  }

  listPins(cacheId: number): Promise<PinRecord[]> {
    return this.#run('listPins', () => this.#life.pins.all(cacheId).map(toPin));
  }

  deletePin(cacheId: number, name: string): Promise<boolean> {
    return this.#write('deletePin', () => this.#life.deletePin.run({ cacheId, name }).changes > 0);
  }

  markUnusedNars(after: string, limit: number, now: Date): Promise<string | undefined> {
    return this.#write('markUnusedNars', () =>
      this.#db
        .transaction((): string | undefined => {
          const last = this.#life.lastOfNarPage.get({ after, limit }) ?? null;
          if (last === null) return undefined;
          this.#life.markNars.run({ after, last, now: now.getTime() });
          return last;
        })
        .immediate(),
    );
  }

  takeUnusedNars(before: Date, limit: number): Promise<NarRecord[]> {
    return this.#write('takeUnusedNars', () =>
      this.#db
        .transaction((): NarRecord[] => {
          const rows = this.#life.unusedNars.all({ before: before.getTime(), limit });
          for (const row of rows) this.#life.deleteNarRow.run(row.file_hash);
          return rows.map(toNar);
        })
        .immediate(),
    );
  }

  findUnusedNars(fileHashes: readonly string[]): Promise<Set<string>> {
    return this.#run('findUnusedNars', () => new Set(this.#life.unusedOf.all(JSON.stringify(fileHashes))));
  }

  findKnownBlobKeys(blobKeys: readonly string[]): Promise<Set<string>> {
    return this.#run('findKnownBlobKeys', () => {
      const list = JSON.stringify(blobKeys);
      return new Set([...this.#life.knownNarBlobs.all(list), ...this.#life.knownLogBlobs.all(list)]);
    });
  }

  listNars(after: string, limit: number): Promise<NarRecord[]> {
    return this.#run('listNars', () => this.#life.narPage.all({ after, limit }).map(toNar));
  }

  findPathsByFile(cacheId: number, fileHash: string): Promise<string[]> {
    return this.#run('findPathsByFile', () => this.#life.pathsByFile.all({ cacheId, fileHash }));
  }

  deleteNar(fileHash: string): Promise<boolean> {
    return this.#write('deleteNar', () =>
      this.#db
        .transaction((): boolean => {
          this.#life.deletePathsOfFile.run(fileHash);
          this.#life.deleteUploadsOfFile.run(fileHash);
          return this.#life.deleteNarRow.run(fileHash).changes > 0;
        })
        .immediate(),
    );
  }

  acquireLease(name: string, holder: string, now: Date, until: Date, replacing?: string): Promise<boolean> {
    return this.#write(
      'acquireLease',
      () =>
        this.#life.takeLease.run({
          name,
          holder,
          now: now.getTime(),
          until: until.getTime(),
          replacing: replacing ?? null,
        }).changes > 0,
    );
  }

  leaseHolder(name: string): Promise<string | undefined> {
    return this.#run('leaseHolder', () => this.#life.leaseHolder.get(name));
  }

  releaseLease(name: string, holder: string): Promise<void> {
    return this.#write('releaseLease', () => {
      this.#life.releaseLease.run({ name, holder });
    });
  }

  addSigningKey(cacheId: number, key: NewSigningKey): Promise<SigningKeyRecord> {
    return this.#write('addSigningKey', () => {
      try {
        const row = this.#sql.insertSigningKey.get({ cacheId, ...key, createdAt: Date.now() });
        return toSigningKey(required(row, 'INSERT … RETURNING'));
      } catch (error) {
        const code = constraint(error);
        if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw noSuchCache(cacheId);
        if (code === 'SQLITE_CONSTRAINT_UNIQUE') {
          throw new ConflictError('KEY_EXISTS', `the cache already has a signing key named ${key.name}`);
        }
        throw error;
      }
    });
  }

  listSigningKeys(cacheId: number): Promise<SigningKeyRecord[]> {
    return this.#run('listSigningKeys', () => this.#sql.signingKeysOfCache.all(cacheId).map(toSigningKey));
  }

  createToken(token: NewToken): Promise<TokenRecord> {
    return this.#write('createToken', () =>
      this.#db
        .transaction(() => {
          const row = required(
            this.#sql.insertToken.get({
              description: token.description,
              tokenHash: token.tokenHash,
              createdAt: Date.now(),
              expiresAt: token.expiresAt?.getTime() ?? null,
              sshKeyFingerprint: token.sshKey?.fingerprint ?? null,
              sshPublicKey: token.sshKey?.publicKey ?? null,
            }),
            'INSERT … RETURNING',
          );
          token.scopes.forEach((scope, position) => {
            this.#sql.insertScope.run({
              tokenId: row.id,
              position,
              cachePattern: scope.cachePattern,
              permissions: JSON.stringify(scope.permissions),
            });
          });
          return toToken(row, this.#sql.scopesOfToken.all(row.id));
        })
        .immediate(),
    );
  }

  findTokenByHash(tokenHash: string): Promise<TokenRecord | undefined> {
    return this.#run('findTokenByHash', () => {
      const row = this.#sql.tokenByHash.get(tokenHash);
      return row === undefined ? undefined : toToken(row, this.#sql.scopesOfToken.all(row.id));
    });
  }

  findTokenBySshKey(fingerprint: string): Promise<TokenRecord | undefined> {
    return this.#run('findTokenBySshKey', () => {
      const row = this.#sql.tokenBySshKey.get(fingerprint);
      return row === undefined ? undefined : toToken(row, this.#sql.scopesOfToken.all(row.id));
    });
  }

  listTokens(): Promise<TokenRecord[]> {
    return this.#run('listTokens', () =>
      this.#db.transaction(() => {
        const scopes = new Map<number, ScopeRow[]>();
        for (const scope of this.#sql.allScopes.iterate()) {
          const list = scopes.get(scope.token_id);
          if (list === undefined) scopes.set(scope.token_id, [scope]);
          else list.push(scope);
        }
        return this.#sql.allTokens.all().map((row) => toToken(row, scopes.get(row.id) ?? []));
      })(),
    );
  }

  revokeToken(id: number, at: Date): Promise<boolean> {
    return this.#write('revokeToken', () => this.#sql.revokeToken.run({ id, at: at.getTime() }).changes > 0);
  }

  recordNarUpload(cacheId: number, nar: NarRecord, at: Date): Promise<NarRecord> {
    return this.#write('recordNarUpload', () => {
      try {
        return this.#db
          .transaction((): NarRecord => {
            const inserted =
              this.#sql.insertNar.run({ ...narToRow(nar), createdAt: at.getTime() }).changes > 0;
            if (inserted) {
              this.#sql.upsertUpload.run({ cacheId, fileHash: nar.fileHash, at: at.getTime() });
              return nar;
            }
            const existing = required(this.#sql.narByHash.get(nar.fileHash), 'existing NAR');
            if (
              existing.file_size !== nar.fileSize ||
              existing.compression !== nar.compression ||
              existing.nar_hash !== nar.narHash ||
              existing.nar_size !== nar.narSize
            ) {
              // Same file hash, different facts: a bug above (or a SHA-256 collision); keep the first.
              throw new DatabaseError(`NAR ${nar.fileHash} is already recorded with different metadata`);
            }
            this.#sql.upsertUpload.run({ cacheId, fileHash: nar.fileHash, at: at.getTime() });
            return toNar(existing);
          })
          .immediate();
      } catch (error) {
        if (constraint(error) === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw noSuchCache(cacheId);
        throw error;
      }
    });
  }

  getNar(cacheId: number, fileHash: string): Promise<CacheNar | undefined> {
    return this.#read('getNar', () => this.#cacheNar(cacheId, fileHash));
  }

  #cacheNar(cacheId: number, fileHash: string): CacheNar | undefined {
    const row = this.#sql.narInCache.get({ cacheId, fileHash });
    if (row === undefined || (row.published === 0 && row.uploaded_at === null)) return undefined;
    return { nar: toNar(row), published: row.published === 1, uploadedAt: optionalDate(row.uploaded_at) };
  }

  deleteExpiredUploads(before: Date): Promise<number> {
    return this.#write(
      'deleteExpiredUploads',
      () => this.#sql.deleteUploadsBefore.run({ before: before.getTime() }).changes,
    );
  }

  getPath(cacheId: number, hashPart: string): Promise<PathWithNar | undefined> {
    return this.#read('getPath', () => {
      const row = this.#sql.pathWithNar.get({ cacheId, hashPart });
      return row === undefined ? undefined : toPathWithNar(row, parseStrings);
    });
  }

  listPaths(cacheId: number, options: PathPageOptions): Promise<PathWithNar[]> {
    const low = options.hashPrefix ?? '';
    return this.#run('listPaths', () =>
      this.#sql.pathPage
        .all({ cacheId, after: options.after ?? '', low, high: prefixUpperBound(low), limit: options.limit })
        .map((row) => toPathWithNar(row, parseStrings)),
    );
  }

  findPathsByName(cacheId: number, options: NamePageOptions): Promise<PathWithNar[]> {
    return this.#run('findPathsByName', () =>
      this.#sql.namePage
        .all({
          cacheId,
          low: options.prefix,
          high: prefixUpperBound(options.prefix),
          afterName: options.after?.name ?? '',
          afterHash: options.after?.hashPart ?? '',
          limit: options.limit,
        })
        .map((row) => toPathWithNar(row, parseStrings)),
    );
  }

  findPresentBaseNames(cacheId: number, baseNames: readonly string[]): Promise<Set<string>> {
    return this.#run('findPresentBaseNames', () => {
      if (baseNames.length === 0) return new Set<string>();
      const storePaths = this.#sql.presentPaths.iterate({
        cacheId,
        hashParts: JSON.stringify(hashPartsOf(baseNames)),
      });
      return presentBaseNames(baseNames, storePaths);
    });
  }

  addPath(
    cacheId: number,
    path: PathRecord,
    uploadedSince: Date,
    requiredReferences: readonly string[] = [],
  ): Promise<AddPathOutcome> {
    return this.#write('addPath', () =>
      this.#db
        .transaction((): AddPathOutcome => {
          const existing = this.#sql.pathWithNar.get({ cacheId, hashPart: path.hashPart });
          if (existing !== undefined)
            return { status: 'exists', existing: toPathWithNar(existing, parseStrings).path };
          if (requiredReferences.length > 0) {
            const wanted = [...new Set(requiredReferences)];
            const present = new Set(
              this.#life.presentHashParts.all({ cacheId, hashParts: JSON.stringify(wanted) }),
            );
            const absent = wanted.filter((hashPart) => !present.has(hashPart));
            if (absent.length > 0) throw referencesGone(absent);
          }
          // Checked here, in the transaction, so an upload removed by GC meanwhile cannot slip through.
          const nar = this.#cacheNar(cacheId, path.fileHash);
          const attached =
            nar !== undefined &&
            (nar.published || (nar.uploadedAt?.getTime() ?? -Infinity) >= uploadedSince.getTime());
          if (!attached) {
            throw new NotFoundError(
              'NAR_NOT_UPLOADED',
              `NAR ${path.fileHash} has not been uploaded to this cache`,
            );
          }
          this.#sql.insertPath.run({
            cacheId,
            hashPart: path.hashPart,
            storePath: path.storePath,
            fileHash: path.fileHash,
            narHash: path.narHash,
            narSize: path.narSize,
            refs: JSON.stringify(path.references),
            deriver: path.deriver ?? null,
            ca: path.ca ?? null,
            signatures: JSON.stringify(path.signatures),
            createdAt: path.createdAt.getTime(),
          });
          for (const reference of path.references) {
            const refHash = reference.slice(0, 32);
            if (refHash !== path.hashPart)
              this.#sql.insertRef.run({ cacheId, refHash, hashPart: path.hashPart });
          }
          this.#sql.deleteUpload.run({ cacheId, fileHash: path.fileHash });
          return { status: 'added' };
        })
        .immediate(),
    );
  }

  addSignatures(cacheId: number, hashPart: string, signatures: readonly string[]): Promise<void> {
    return this.#write('addSignatures', () => {
      this.#db
        .transaction(() => {
          const stored = this.#sql.signaturesOfPath.get({ cacheId, hashPart });
          if (stored === undefined) throw new NotFoundError('NOT_FOUND', `no path ${hashPart} in this cache`);
          const current = parseStrings(stored, 'signatures');
          const merged = [...new Set([...current, ...signatures])];
          if (merged.length !== current.length) {
            this.#sql.updateSignatures.run({ cacheId, hashPart, signatures: JSON.stringify(merged) });
          }
        })
        .immediate();
    });
  }

  putBuildLog(cacheId: number, log: BuildLogRecord): Promise<string | undefined> {
    return this.#write('putBuildLog', () => {
      try {
        return this.#db
          .transaction((): string | undefined => {
            const replaced = this.#sql.buildLog.get({ cacheId, drv: log.drv });
            this.#sql.upsertBuildLog.run({
              cacheId,
              drv: log.drv,
              blob_key: log.blobKey,
              compression: log.compression,
              size: log.size,
              stored_size: log.storedSize,
              created_at: log.createdAt.getTime(),
            });
            return replaced?.blob_key;
          })
          .immediate();
      } catch (error) {
        if (constraint(error) === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw noSuchCache(cacheId);
        throw error;
      }
    });
  }

  getBuildLog(cacheId: number, drv: string): Promise<BuildLogRecord | undefined> {
    return this.#run('getBuildLog', () => {
      const row = this.#sql.buildLog.get({ cacheId, drv });
      return row === undefined ? undefined : toBuildLog(row);
    });
  }

  listBuildLogBlobKeys(cacheId: number): Promise<string[]> {
    return this.#run('listBuildLogBlobKeys', () => this.#sql.buildLogBlobKeys.all(cacheId));
  }

  deleteUnusedBuildLogs(cacheId: number, drvs: readonly string[]): Promise<string[]> {
    return this.#write('deleteUnusedBuildLogs', () =>
      this.#db.transaction(() =>
        drvs.flatMap((drv) => this.#sql.deleteUnusedBuildLog.all({ cacheId, drv })),
      )(),
    );
  }

  addRealisation(cacheId: number, realisation: RealisationRecord): Promise<AddRealisationOutcome> {
    return this.#write('addRealisation', () => {
      try {
        return this.#db
          .transaction((): AddRealisationOutcome => {
            const existing = this.#sql.realisation.get({ cacheId, id: realisation.id });
            if (existing !== undefined) {
              return { status: 'exists', existing: toRealisation(existing, parseStrings, parseRecord) };
            }
            this.#sql.insertRealisation.run({
              cacheId,
              id: realisation.id,
              out_path: realisation.outPath,
              dependents: JSON.stringify(realisation.dependentRealisations),
              signatures: JSON.stringify(realisation.signatures),
              created_at: realisation.createdAt.getTime(),
            });
            return { status: 'added' };
          })
          .immediate();
      } catch (error) {
        if (constraint(error) === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw noSuchCache(cacheId);
        throw error;
      }
    });
  }

  getRealisation(cacheId: number, id: string): Promise<RealisationRecord | undefined> {
    return this.#run('getRealisation', () => {
      const row = this.#sql.realisation.get({ cacheId, id });
      return row === undefined ? undefined : toRealisation(row, parseStrings, parseRecord);
    });
  }

  addRealisationSignatures(cacheId: number, id: string, signatures: readonly string[]): Promise<void> {
    return this.#write('addRealisationSignatures', () => {
      this.#db
        .transaction(() => {
          const row = this.#sql.realisation.get({ cacheId, id });
          if (row === undefined) throw new NotFoundError('NOT_FOUND', `no realisation ${id} in this cache`);
          const current = parseStrings(row.signatures, 'signatures');
          const merged = [...new Set([...current, ...signatures])];
          if (merged.length !== current.length) {
            this.#sql.updateRealisationSignatures.run({ cacheId, id, signatures: JSON.stringify(merged) });
          }
        })
        .immediate();
    });
  }

  deleteRealisationsOf(cacheId: number, outPaths: readonly string[]): Promise<number> {
    return this.#write('deleteRealisationsOf', () =>
      this.#db.transaction(() =>
        outPaths.reduce(
          (removed, outPath) => removed + this.#sql.deleteRealisationsOf.run({ cacheId, outPath }).changes,
          0,
        ),
      )(),
    );
  }

  /** Runs synchronous work as a settled promise; failures that are not ours become DatabaseErrors. */
  /**
   * Runs a method that writes: its work (one transaction, or one statement), then waits for the commit to
   * be durable. A failed sync is reported as the method's failure: the write may or may not survive.
   */
  async #write<T>(operation: string, work: () => T): Promise<T> {
    const result = await this.#run(operation, work);
    if (this.#wal !== undefined) {
      try {
        await this.#wal.sync();
      } catch (error) {
        throw new DatabaseError(`${operation}: the write could not be made durable: ${describe(error)}`, {
          cause: error,
        });
      }
    }
    return result;
  }

  #run<T>(operation: string, work: () => T): Promise<T> {
    return new Promise<T>((resolve) => {
      resolve(this.#attempt(operation, work));
    });
  }

  /** Like #run, for the lookups every request makes: in this turn's read transaction (sqlite-read-batch.ts). */
  #read<T>(operation: string, work: () => T): Promise<T> {
    return this.#reads.read(() => this.#attempt(operation, work));
  }

  /** Runs `work` on the open connection; what it throws comes out as failure() maps it. */
  #attempt<T>(operation: string, work: () => T): T {
    try {
      if (!this.#db.open) throw new DatabaseError('the metadata store is closed');
      return work();
    } catch (error) {
      throw failure(operation, error);
    }
  }
}

/** Applies pending migrations, each in its own IMMEDIATE transaction (safe if two processes open at once). */
function migrate(db: Database.Database): void {
  const version = (): number => {
    const value = db.pragma('user_version', { simple: true });
    if (typeof value !== 'number') throw new Error('cannot read user_version');
    return value;
  };
  if (version() === MIGRATIONS.length) return;
  const step = db.transaction((): boolean => {
    const current = version();
    if (current > MIGRATIONS.length) {
      throw new ConfigError(
        'DATA_DIR_UNUSABLE',
        `the database ${db.name} has schema version ${current}, newer than this niche knows (${MIGRATIONS.length})`,
      );
    }
    const sql = MIGRATIONS[current];
    if (sql === undefined) return false;
    db.exec(sql);
    db.pragma(`user_version = ${current + 1}`);
    return true;
  });
  while (step.immediate()) {
    // one migration per transaction
  }
}

function toCache(row: CacheRow): CacheRecord {
  return {
    id: row.id,
    name: row.name,
    isPublic: row.is_public === 1,
    priority: row.priority,
    storeDir: row.store_dir,
    upstreamKeys: parseStrings(row.upstream_keys, 'upstream keys'),
    createdAt: new Date(row.created_at),
    retentionMs: row.retention_ms ?? undefined,
    maxSize: row.max_size ?? undefined,
  };
}

function toToken(row: TokenRow, scopes: readonly ScopeRow[]): TokenRecord {
  return {
    id: row.id,
    description: row.description,
    tokenHash: row.token_hash,
    scopes: scopes.map(toScope),
    createdAt: new Date(row.created_at),
    expiresAt: optionalDate(row.expires_at),
    revokedAt: optionalDate(row.revoked_at),
    sshKey:
      row.ssh_key_fingerprint === null || row.ssh_public_key === null
        ? undefined
        : { fingerprint: row.ssh_key_fingerprint, publicKey: row.ssh_public_key },
  };
}

function toScope(row: ScopeRow): TokenScope {
  const permissions = parseStrings(row.permissions, 'permissions');
  if (!permissions.every(isPermission)) {
    throw new DatabaseError(`token ${row.token_id} has an unknown permission in ${row.permissions}`);
  }
  return { cachePattern: row.cache_pattern, permissions };
}

function isPermission(value: string): value is Permission {
  return (PERMISSIONS as readonly string[]).includes(value);
}

function narToRow(nar: NarRecord): NarRow {
  return {
    file_hash: nar.fileHash,
    file_size: nar.fileSize,
    compression: nar.compression,
    nar_hash: nar.narHash,
    nar_size: nar.narSize,
    blob_key: nar.blobKey,
  };
}

function parseStrings(text: string, what: string): string[] {
  const value: unknown = JSON.parse(text);
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw new DatabaseError(`stored ${what} are not a JSON list of strings: ${text.slice(0, 100)}`);
  }
  return value;
}

function parseRecord(text: string, what: string): Record<string, string> {
  const record = stringRecord(JSON.parse(text));
  if (record === undefined) {
    throw new DatabaseError(`stored ${what} are not a JSON object of strings: ${text.slice(0, 100)}`);
  }
  return record;
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new DatabaseError(`${what} returned no row`);
  return value;
}

function constraint(error: unknown): string | undefined {
  return error instanceof Database.SqliteError && error.code.startsWith('SQLITE_CONSTRAINT')
    ? error.code
    : undefined;
}

function noSuchCache(cacheId: number): NotFoundError {
  return new NotFoundError('CACHE_NOT_FOUND', `no cache with id ${cacheId}`);
}

/** What a failed statement rejects with: our own errors as they are, the driver's as DatabaseErrors. */
function failure(operation: string, error: unknown): Error {
  return isNicheError(error)
    ? error
    : new DatabaseError(`${operation} failed: ${describe(error)}`, { cause: error });
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
