// Path metadata of the host's Nix store, read straight from Nix's own SQLite database (the ValidPaths and
// Refs tables), opened read-only. Nix runs the database in WAL mode and every query here is its own read
// transaction, so paths Nix registers while niche runs are visible to the next query without a restart.
// Lookups go by hash part through the unique index on ValidPaths.path, the way Nix's own
// queryPathFromHashPart does: a range scan that touches one index entry, never the whole table.
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { ConfigError, DatabaseError, NicheError } from '../errors.js';
import { Hash } from '../nix/hash.js';
import type { ValidPathInfo } from '../nix/path-info.js';
import { StorePath, type StorePathHash } from '../nix/store-path.js';
import { ReadBatch } from '../util/sqlite-read-batch.js';

interface ValidPathRow {
  readonly id: number;
  readonly path: string;
  readonly hash: string;
  readonly deriver: string | null;
  readonly narSize: number | null;
  readonly sigs: string | null;
  readonly ca: string | null;
}

/**
 * A reader briefly blocked by a writer (a checkpoint, or a database not in WAL mode) waits this long
 * synchronously inside SQLite; beyond that the query is retried asynchronously so the event loop runs.
 */
const SYNC_BUSY_TIMEOUT_MS = 20;
const BUSY_RETRY_DELAYS_MS = [10, 25, 50, 100, 200, 400, 800, 1600];

function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED' || code === 'SQLITE_BUSY_SNAPSHOT';
}

export class NixDatabase {
  private constructor(
    private readonly db: Database.Database,
    readonly storeDir: string,
    private readonly byHashPart: Database.Statement<[string, string], ValidPathRow>,
    private readonly referencesOf: Database.Statement<[number], { path: string }>,
  ) {
    // The path and its references in one read transaction: a path Nix deletes between the two reads must
    // not come out with no references (its signature would then cover an incomplete closure).
    this.lookup = db.transaction((hash: StorePathHash) => this.queryNow(hash));
    // Lookups asked for in one turn of the event loop share a read transaction (each its own savepoint).
    this.reads = new ReadBatch(db, (error) => (error instanceof Error ? error : new Error(String(error))));
  }

  private readonly lookup: (hash: StorePathHash) => ValidPathInfo | undefined;
  private readonly reads: ReadBatch;

  /** Opens `file` read-only. Throws ConfigError if it is missing or is not a Nix database. */
  static open(file: string, storeDir: string): NixDatabase {
    let db: Database.Database;
    try {
      db = new Database(file, { readonly: true, fileMustExist: true, timeout: SYNC_BUSY_TIMEOUT_MS });
    } catch (error) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `cannot open the Nix database ${file}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    try {
      const byHashPart = db.prepare<[string, string], ValidPathRow>(
        'SELECT id, path, hash, deriver, narSize, sigs, ca FROM ValidPaths WHERE path >= ? AND path < ? LIMIT 1',
      );
      const referencesOf = db.prepare<[number], { path: string }>(
        'SELECT v.path AS path FROM Refs r JOIN ValidPaths v ON v.id = r.reference WHERE r.referrer = ?',
      );
      return new NixDatabase(db, storeDir, byHashPart, referencesOf);
    } catch (error) {
      db.close();
      throw new ConfigError(
        'CONFIG_INVALID',
        `${file} does not look like a Nix database (ValidPaths/Refs): ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /** The valid path with this hash part, or undefined (not valid: absent, deleted, or still being built). */
  async queryPathInfo(hash: StorePathHash): Promise<ValidPathInfo | undefined> {
    return this.withBusyRetry(() => this.reads.read(() => this.lookup(hash)));
  }

  /**
   * `queryPathInfo` at once, synchronously, in a read transaction of its own: for a caller that falls
   * back to `queryPathInfo` on any error (a busy database is not retried here).
   */
  queryPathInfoNow(hash: StorePathHash): ValidPathInfo | undefined {
    return this.lookup(hash);
  }

  close(): void {
    this.db.close();
  }

  private queryNow(hash: StorePathHash): ValidPathInfo | undefined {
    // Every path with this hash part sorts between "<dir>/<hash>" and "<dir>/<hash>." ('-' < '.').
    const prefix = `${this.storeDir}/${hash}`;
    const row = this.byHashPart.get(prefix, `${prefix}.`);
    if (row === undefined || !row.path.startsWith(`${prefix}-`)) return undefined;
    return this.toPathInfo(row, this.referencesOf.all(row.id));
  }

  private toPathInfo(row: ValidPathRow, references: readonly { path: string }[]): ValidPathInfo {
    try {
      const narSize = row.narSize ?? 0;
      if (!Number.isSafeInteger(narSize) || narSize <= 0) {
        throw new Error(`the NAR size ${String(row.narSize)} is unknown or invalid`);
      }
      return {
        storePath: StorePath.parse(row.path, this.storeDir),
        narHash: Hash.parseAny(row.hash, 'sha256'),
        narSize,
        references: references.map((reference) => StorePath.parse(reference.path, this.storeDir)),
        deriver: this.deriverBaseName(row.deriver),
        signatures: (row.sigs ?? '').split(' ').filter((sig) => sig !== ''),
        ca: row.ca === null || row.ca === '' ? undefined : row.ca,
      };
    } catch (error) {
      throw new DatabaseError(
        `the Nix database entry for ${row.path} is unusable: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  private deriverBaseName(deriver: string | null): string | undefined {
    if (deriver === null || deriver === '') return undefined;
    try {
      return StorePath.parse(deriver, this.storeDir).baseName;
    } catch {
      return undefined; // a deriver is informational; a strange one is left out rather than failing
    }
  }

  private async withBusyRetry<T>(query: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await query();
      } catch (error) {
        const delay = BUSY_RETRY_DELAYS_MS[attempt];
        if (!isBusy(error)) {
          throw error instanceof NicheError
            ? error
            : new DatabaseError(`reading the Nix database failed: ${(error as Error).message}`, {
                cause: error,
              });
        }
        if (delay === undefined) {
          // Transient by nature: 503, which Nix retries.
          throw new NicheError(
            'unavailable',
            'DATABASE_FAILURE',
            'the Nix database stayed locked; try again',
            {
              cause: error,
            },
          );
        }
        await sleep(delay);
      }
    }
  }
}
