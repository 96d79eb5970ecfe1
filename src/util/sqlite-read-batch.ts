// Point reads of a SQLite database (niche's metadata, the local store's Nix database) that arrive in the
// same turn of the event loop, run in one read transaction.
//
// A statement outside a transaction is a read transaction of its own, and in WAL mode beginning and ending
// one costs system calls: a lock and an unlock on the shared-memory index (fcntl) and a check that the
// database file is still the one opened (fstat). On this machine's VM that was 6-7 µs of the 7 µs a
// missing path's lookup took, against 0.5 µs for the same lookup inside a transaction; under many
// concurrent requests for missing narinfos it was a quarter of the server's CPU (profiled). Requests read from
// many sockets in one poll of the event loop each ask for their lookup; queued until the loop's check
// phase (setImmediate, the same turn), they run together between one BEGIN and one COMMIT, synchronously,
// so nothing else can interleave and each lookup still sees every write that resolved before it was asked.
// A lone lookup runs on its own, as before, one macrotask later.
import type Database from 'better-sqlite3';

interface Pending {
  readonly work: () => unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/** The batches of one connection. `failure` maps what a read or the connection threw to the error to reject with. */
export class ReadBatch {
  readonly #db: Database.Database;
  readonly #begin: Database.Statement;
  readonly #commit: Database.Statement;
  readonly #failure: (error: unknown) => Error;
  #queue: Pending[] = [];

  constructor(db: Database.Database, failure: (error: unknown) => Error) {
    this.#db = db;
    this.#begin = db.prepare('BEGIN');
    this.#commit = db.prepare('COMMIT');
    this.#failure = failure;
  }

  /** Runs `work` (synchronous reads only) in this turn's batch. */
  read<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const pending = { work, resolve: resolve as (value: unknown) => void, reject };
      if (this.#queue.push(pending) === 1) setImmediate(this.#flush);
    });
  }

  readonly #flush = (): void => {
    const queue = this.#queue;
    this.#queue = [];
    const together = queue.length > 1 && this.#db.open && !this.#db.inTransaction;
    try {
      if (together) this.#begin.run();
    } catch (error) {
      for (const pending of queue) pending.reject(this.#failure(error));
      return;
    }
    try {
      for (const pending of queue) {
        try {
          pending.resolve(pending.work());
        } catch (error) {
          pending.reject(this.#failure(error));
        }
      }
    } finally {
      // A read transaction's COMMIT only releases its snapshot.
      if (together && this.#db.inTransaction) this.#commit.run();
    }
  };
}
