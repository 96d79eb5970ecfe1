// Reading the local Nix database (read-only) to notice new store paths for `niche watch-store`: every
// valid path has a row in ValidPaths with an increasing id, so "what appeared since id N" is one indexed
// query. Polling it is cheap and needs neither the daemon nor a post-build hook. The database is never
// written: it is opened read-only, and SQLite's busy timeout waits out Nix's short write locks.
import Database from 'better-sqlite3';
import { NicheError } from '../errors.js';

export const DEFAULT_NIX_DB = '/nix/var/nix/db/db.sqlite';

export interface NewPath {
  readonly id: number;
  readonly path: string;
}

export class NixDbError extends NicheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('config', 'CONFIG_INVALID', message, options);
  }
}

export class NixDbReader {
  private constructor(
    private readonly db: Database.Database,
    private readonly latest: Database.Statement<[], { id: number | null }>,
    private readonly after: Database.Statement<[number, number], NewPath>,
  ) {}

  static open(file: string = DEFAULT_NIX_DB): NixDbReader {
    let db: Database.Database;
    try {
      db = new Database(file, { readonly: true, fileMustExist: true, timeout: 5000 });
    } catch (error) {
      throw new NixDbError(`cannot open the Nix database ${file} read-only: ${(error as Error).message}`, {
        cause: error,
      });
    }
    try {
      return new NixDbReader(
        db,
        db.prepare<[], { id: number | null }>('SELECT MAX(id) AS id FROM ValidPaths'),
        db.prepare<[number, number], NewPath>(
          'SELECT id, path FROM ValidPaths WHERE id > ? ORDER BY id LIMIT ?',
        ),
      );
    } catch (error) {
      db.close();
      throw new NixDbError(`${file} does not look like a Nix database: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  /** The id of the newest valid path (0 for an empty store). */
  latestId(): number {
    return this.latest.get()?.id ?? 0;
  }

  /** Paths registered after `id`, oldest first, at most `limit`. */
  pathsAfter(id: number, limit: number): NewPath[] {
    return this.after.all(id, limit);
  }

  close(): void {
    this.db.close();
  }
}
