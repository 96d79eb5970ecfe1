// Group commit for SQLite. With `synchronous = NORMAL` in WAL mode a commit appends its frames to the WAL
// without an fsync; SQLite itself syncs the WAL before every checkpoint and the database file after it. A
// write is made durable here, before its caller hears of it, by one fdatasync of the WAL file off the event
// loop. The WAL is written in order, so a sync covers every commit made before it started: concurrent
// commits share one (at most one sync runs, and every commit that arrives meanwhile waits for the single
// next one). Compared with `synchronous = FULL`, the event loop no longer blocks for an fsync per commit,
// and N concurrent uploads pay for about two syncs instead of N.
import { open, type FileHandle } from 'node:fs/promises';

/** Flushes an open file to stable storage. */
export type SyncFile = (file: FileHandle) => Promise<void>;

export const fdatasyncFile: SyncFile = (file) => file.datasync();

export class WalSync {
  readonly #path: string;
  readonly #syncFile: SyncFile;
  #file: Promise<FileHandle> | undefined;
  #running: Promise<void> | undefined;
  #queued: Promise<void> | undefined;
  #closed = false;

  /** `path`: the database's `-wal` file, which exists while a connection has the database open. */
  constructor(path: string, syncFile: SyncFile = fdatasyncFile) {
    this.#path = path;
    this.#syncFile = syncFile;
  }

  /** Resolves once everything committed to the WAL before the call is on stable storage. */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('the WAL is closed'));
    // A sync that started before this call may have missed this caller's commit: wait for the next one.
    if (this.#queued !== undefined) return this.#queued;
    const running = this.#running;
    if (running === undefined) return this.#start();
    const next = (): Promise<void> => {
      this.#queued = undefined;
      return this.#start();
    };
    this.#queued = running.then(next, next);
    return this.#queued;
  }

  #start(): Promise<void> {
    const run = this.#flush().finally(() => {
      if (this.#running === run) this.#running = undefined;
    });
    this.#running = run;
    return run;
  }

  async #flush(): Promise<void> {
    // Opened once, on the first sync: SQLite keeps the file (the same inode: it truncates or rewrites it,
    // never replaces it) while any connection is open, and this one is open until close().
    if (this.#file === undefined) {
      const opening = open(this.#path, 'r');
      this.#file = opening;
      // Not kept if it failed: the next sync tries again.
      opening.catch(() => {
        if (this.#file === opening) this.#file = undefined;
      });
    }
    await this.#syncFile(await this.#file);
  }

  /** Waits for the syncs in flight, then closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([this.#running, this.#queued]);
    const file = await this.#file?.catch(() => undefined);
    await file?.close().catch(() => undefined);
  }
}
