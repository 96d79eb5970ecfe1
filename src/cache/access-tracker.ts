// When each path was last downloaded or pushed, for retention and quotas (src/cache/gc.ts). Recording it
// must cost the read path next to nothing, so an access only sets a map entry in memory (the later time
// wins); the entries are written every `flushIntervalMs`, and at close, in slices sized to hold the event
// loop for a few milliseconds at a time. On PostgreSQL every replica writes its own into the same rows,
// which only ever move forward in time.
//
// Bounded: at most `maxEntries` distinct paths and NAR files are held; when full, a flush starts at once,
// and accesses arriving while that flush is still running and the map is full again are dropped (counted
// and logged). A dropped access only makes a path look older than it is until its next access, never
// younger; retention periods are days, the flush interval a minute. A flush that fails (SQLite's write
// lock taken by a collection on another connection: the write does not wait for it on the event loop)
// keeps its accesses for the next one.
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Logger } from 'pino';

import type { AccessRecord, MetadataStore } from '../db/metadata-store.js';
import { accessResolutionMs } from './access-resolution.js';

export const DEFAULT_ACCESS_FLUSH_MS = 60_000;
/** The access time the store holds for a path (or that this process recorded), and its cache's retention. */
export interface KnownAccess {
  readonly at: number;
  readonly retentionMs: number | undefined;
}
const DEFAULT_MAX_ENTRIES = 100_000;
/**
 * Accesses are written in slices, one call of the store each (one transaction, one statement per kind on
 * PostgreSQL), with a turn of the event loop between slices. On SQLite a call runs on the event loop, so a
 * slice is sized to take about FLUSH_SLICE_MS: with a million paths a random row update took 150-240 µs
 * here (page reads and WAL frames for rows scattered over a 1.6 GB file), and fixed slices of 250 held
 * the loop for 35-60 ms each, back to back for seconds: narinfo p99 0.4-0.7 s at c=64 during a flush
 * (docs/bench-scale.md, run 6). On a small cache a row costs a few µs, and slices grow to the maximum.
 */
const FLUSH_SLICE_MS = 4;
const MIN_SLICE = 16;
const MAX_SLICE = 1000;
const FIRST_SLICE = 250;

/** The next slice's size after `written` accesses took `ms`: aiming at FLUSH_SLICE_MS, moving at most 4× a step. */
export function nextSliceSize(written: number, ms: number): number {
  const aimed = ms > 0 ? Math.round((written * FLUSH_SLICE_MS) / ms) : MAX_SLICE;
  return Math.min(MAX_SLICE, Math.max(MIN_SLICE, Math.min(aimed, written * 4), Math.floor(written / 4)));
}

export interface AccessTrackerOptions {
  readonly db: MetadataStore;
  readonly logger: Logger;
  readonly flushIntervalMs?: number;
  readonly maxEntries?: number;
  readonly now?: () => number;
  /** False: accesses are not recorded at all (tools that read the cache without being its users). */
  readonly enabled?: boolean;
  /** A monotonic clock in ms, timing the slices of a flush. */
  readonly clock?: () => number;
}

export class AccessTracker {
  readonly #db: MetadataStore;
  readonly #logger: Logger;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #clock: () => number;
  /** Accesses written per call of the store, adapted to the time calls take. */
  #slice = FIRST_SLICE;
  /** `<cacheId> <hashPart>` and `<cacheId> <fileHash>` (a hash part is 32 characters, a file hash 52). */
  #pending = new Map<string, number>();
  #flushing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #dropped = 0;
  /** Flushes that failed in a row. */
  #failures = 0;
  #closed = false;

  constructor(options: AccessTrackerOptions) {
    this.#db = options.db;
    this.#logger = options.logger;
    this.#maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.#now = options.now ?? Date.now;
    this.#clock = options.clock ?? (() => performance.now());
    this.#closed = options.enabled === false;
    const interval = options.flushIntervalMs ?? DEFAULT_ACCESS_FLUSH_MS;
    if (interval > 0 && !this.#closed) {
      // The first flush at a random moment of the first interval: processes started together (the
      // workers of `niche serve --workers N`) would otherwise flush in step every time, and on SQLite a
      // flush does not wait for another's write lock (it keeps its accesses for the next one).
      this.#timer = setTimeout(
        () => {
          this.#timer = setInterval(() => void this.flush(), interval);
          this.#timer.unref();
          void this.flush();
        },
        Math.floor(Math.random() * interval),
      );
      this.#timer.unref();
    }
  }

  /**
   * A narinfo was served, or the path pushed again. With `known`, recorded only if the known access is
   * older than the resolution. Returns the access time now known: `known.at` when skipped, else now.
   */
  touchPath(cacheId: number, hashPart: string, known?: KnownAccess): number {
    return this.#touchUnlessKnown(cacheId, hashPart, known);
  }

  /**
   * A NAR file was downloaded: every path of the cache using it was accessed. With `known`, as touchPath.
   * Returns the access time now known.
   */
  touchFile(cacheId: number, fileHash: string, known?: KnownAccess): number {
    return this.#touchUnlessKnown(cacheId, fileHash, known);
  }

  #touchUnlessKnown(cacheId: number, hash: string, known: KnownAccess | undefined): number {
    const now = this.#now();
    if (known !== undefined && now - known.at < accessResolutionMs(known.retentionMs)) return known.at;
    this.#touch(`${cacheId} ${hash}`, now);
    return now;
  }

  #touch(key: string, now: number): void {
    if (this.#closed) return;
    const pending = this.#pending;
    if (pending.size >= this.#maxEntries && !pending.has(key)) {
      if (this.#flushing === undefined) {
        void this.flush();
      } else {
        this.#dropped += 1;
        return;
      }
    }
    this.#pending.set(key, now);
  }

  /** Writes what was recorded so far; resolves when written (or logged as failed). */
  flush(): Promise<void> {
    if (this.#flushing !== undefined) return this.#flushing.then(() => this.flush());
    if (this.#pending.size === 0) return Promise.resolve();
    const batch = this.#pending;
    this.#pending = new Map();
    const dropped = this.#dropped;
    this.#dropped = 0;
    this.#flushing = this.#write(batch, dropped).finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  async #write(batch: Map<string, number>, dropped: number): Promise<void> {
    if (dropped > 0) {
      this.#logger.warn({ dropped }, 'access tracking: accesses dropped while the store was slow');
    }
    let records: AccessRecord[] = [];
    let written = 0;
    try {
      for (const [key, at] of batch) {
        const space = key.indexOf(' ');
        const cacheId = Number(key.slice(0, space));
        const hash = key.slice(space + 1);
        records.push(hash.length === 32 ? { cacheId, hashPart: hash, at } : { cacheId, fileHash: hash, at });
        if (records.length >= this.#slice) {
          await this.#writeSlice(records);
          written += records.length;
          records = [];
          await yieldToEventLoop();
        }
      }
      if (records.length > 0) await this.#writeSlice(records);
      this.#failures = 0;
    } catch (error) {
      // Kept for the next flush (the store may be busy: SQLite does not wait for its write lock here),
      // as far as there is room; the later time wins where an access came meanwhile.
      this.#failures += 1;
      let index = 0;
      for (const [key, at] of batch) {
        if (index++ < written) continue;
        if (this.#pending.size >= this.#maxEntries && !this.#pending.has(key)) break;
        const newer = this.#pending.get(key);
        if (newer === undefined || newer < at) this.#pending.set(key, at);
      }
      const log = { err: error, accesses: batch.size - written, failures: this.#failures };
      if (this.#failures >= 5) this.#logger.warn(log, 'access tracking: cannot record accesses');
      else this.#logger.debug(log, 'access tracking: store busy, accesses kept for the next flush');
    }
  }

  async #writeSlice(records: readonly AccessRecord[]): Promise<void> {
    const started = this.#clock();
    await this.#db.recordAccesses(records);
    // Only a full slice says what a full slice costs: a flush's last one is usually shorter.
    if (records.length >= this.#slice) this.#slice = nextSliceSize(records.length, this.#clock() - started);
  }

  /** Stops the timer and writes what is pending. */
  async close(): Promise<void> {
    // clearTimeout clears an interval too.
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.flush();
    this.#closed = true;
  }
}
