// Rendered narinfos kept in memory: a published path's narinfo only changes when signatures are added or
// the path is deleted, and this process drops the entry itself then. Changes made elsewhere (another
// replica, an operator command) are seen within the TTL. Only hits are kept: a miss must reflect an
// upload at once, since Nix checks each reference's narinfo right before uploading its referrer.
// Bounded: the oldest entries go first once `maxEntries` is reached. An entry is the rendered text, or an
// object holding it with what else the owner keeps per path (CacheService: the last recorded access).
//
// Admission: a narinfo is kept only when it is offered a second time while the first offer is still
// remembered (src/cache/doorkeeper.ts). Without it, a cache much larger than its hot set (a million paths
// read at random) put every narinfo read from the database into memory, pushing out one that was never
// read again: a scan emptied the cache of its hot set, and the entries lived just long enough to die in
// V8's old generation (a scratch round promoted 165 MB with entries churning, 34 MB with none kept:
// docs/bench-scale.md, run 6). A path asked for again and again is kept from its second read on.
//
// The keys are a cache id and a string, a path's hash part for narinfos; CacheService also keeps its NAR
// lookups here, by file hash.
//
// Expiry: an expired entry is not served, but it stays (within the bound) until it is read again, so that
// a re-read that finds the narinfo unchanged (almost always: a published narinfo changes only when a
// signature is added) renews the entry in place rather than replacing it. Replacing every hot entry once
// per TTL made a new copy of the hot set each TTL, living long enough to be promoted to V8's old
// generation; renewing instead took the local store's c=1 narinfo p99 from about 1.05 to 0.65 ms
// (docs/bench-tail.md, run 4).
//
// Refresh ahead: with an owner's `refresh`, an entry read in the last quarter of its TTL is re-read from
// the source in the background (once, and at most `maxRefreshes` re-reads at a time), and `refreshed`
// renews or replaces it. A path read all the time then never expires on a request's way; the staleness
// bound is the same, since an entry is still never served more than a TTL after the source last
// confirmed it.
import { Doorkeeper } from './doorkeeper.js';

interface Entry<T> {
  readonly value: T;
  expires: number;
  /** A background re-read has been asked for since the entry was last renewed. */
  refreshing: boolean;
}

export interface NarInfoCacheOptions<T> {
  readonly maxEntries?: number;
  readonly ttlMs?: number;
  /** Whether an offered value may renew the held one in place (default: `Object.is`). */
  readonly same?: (held: T, offered: T) => boolean;
  /**
   * Re-reads an entry near its expiry, in the background, ending in `refreshed` or `forget`. A rejection
   * is dropped: the entry then expires as usual (the owner logs what it needs to).
   */
  readonly refresh?: (cacheId: number, hashPart: string) => Promise<void>;
  /** Re-reads running at once, at most (default 16); beyond, an entry waits for a later read to ask. */
  readonly maxRefreshes?: number;
}

export class NarInfoCache<T = string> {
  readonly #entries = new Map<string, Entry<T>>();
  readonly #maxEntries: number;
  readonly #ttlMs: number;
  readonly #same: (held: T, offered: T) => boolean;
  readonly #refresh: ((cacheId: number, hashPart: string) => Promise<void>) | undefined;
  readonly #maxRefreshes: number;
  #refreshes = 0;
  readonly #doorkeeper: Doorkeeper;

  constructor(options: NarInfoCacheOptions<T> = {}) {
    this.#maxEntries = options.maxEntries ?? 10_000;
    this.#ttlMs = options.ttlMs ?? 10_000;
    this.#same = options.same ?? Object.is;
    this.#refresh = options.refresh;
    this.#maxRefreshes = options.maxRefreshes ?? 16;
    this.#doorkeeper = new Doorkeeper(this.#maxEntries);
  }

  /** The value, unless it is not held or has expired. Near expiry, asks for a refresh (see above). */
  get(cacheId: number, hashPart: string, now: number = Date.now()): T | undefined {
    const entry = this.#entries.get(`${cacheId}:${hashPart}`);
    if (entry === undefined || entry.expires <= now) return undefined;
    if (
      this.#refresh !== undefined &&
      !entry.refreshing &&
      (entry.expires - now) * 4 < this.#ttlMs &&
      this.#refreshes < this.#maxRefreshes
    ) {
      entry.refreshing = true;
      this.#refreshes += 1;
      void this.#refresh(cacheId, hashPart).then(this.#refreshDone, this.#refreshDone);
    }
    return entry.value;
  }

  readonly #refreshDone = (): void => {
    this.#refreshes -= 1;
  };

  /** The held value whose time is up (to be checked against the source and then offered again). */
  expired(cacheId: number, hashPart: string, now: number = Date.now()): T | undefined {
    const entry = this.#entries.get(`${cacheId}:${hashPart}`);
    return entry !== undefined && entry.expires <= now ? entry.value : undefined;
  }

  /**
   * Offers the narinfo of a path just read: kept if this path was offered recently (or is held already),
   * else only remembered as offered. A held value that is the same as the offered one (`same`) is kept
   * and given a new TTL; a different one is replaced. Returns the value now held, or undefined if none is.
   */
  set(cacheId: number, hashPart: string, value: T, now: number = Date.now()): T | undefined {
    if (this.#maxEntries === 0) return undefined;
    const key = `${cacheId}:${hashPart}`;
    const entry = this.#entries.get(key);
    if (entry !== undefined && this.#same(entry.value, value)) {
      entry.expires = now + this.#ttlMs;
      entry.refreshing = false;
      return entry.value;
    }
    const held = entry !== undefined && this.#entries.delete(key);
    if (!held && !this.#doorkeeper.admit(cacheId, hashPart)) return undefined;
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expires: now + this.#ttlMs, refreshing: false });
    return value;
  }

  /**
   * The outcome of a background re-read: `set`, but only for a path still held (one forgotten meanwhile,
   * because this process deleted it, stays forgotten). Returns the value now held, if any.
   */
  refreshed(cacheId: number, hashPart: string, value: T, now: number = Date.now()): T | undefined {
    return this.#entries.has(`${cacheId}:${hashPart}`) ? this.set(cacheId, hashPart, value, now) : undefined;
  }

  forget(cacheId: number, hashPart: string): void {
    this.#entries.delete(`${cacheId}:${hashPart}`);
  }

  clear(): void {
    this.#entries.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}
