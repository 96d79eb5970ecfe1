// Rendered narinfos kept in memory: a published path's narinfo only changes when signatures are added or
// the path is deleted, and this process drops the entry itself then. Changes made elsewhere (another
// replica, an operator command) are seen within the TTL. Only hits are kept: a miss must reflect an
// upload at once, since Nix checks each reference's narinfo right before uploading its referrer.
// Bounded: the oldest entries go first once `maxEntries` is reached. An entry is the rendered text, or an
// object holding it with what else the owner keeps per path (CacheService: the last recorded access).
export class NarInfoCache<T = string> {
  readonly #entries = new Map<string, { readonly value: T; readonly expires: number }>();
  readonly #maxEntries: number;
  readonly #ttlMs: number;

  constructor(maxEntries = 10_000, ttlMs = 10_000) {
    this.#maxEntries = maxEntries;
    this.#ttlMs = ttlMs;
  }

  get(cacheId: number, hashPart: string, now: number = Date.now()): T | undefined {
    const key = `${cacheId}:${hashPart}`;
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires > now) return entry.value;
    this.#entries.delete(key);
    return undefined;
  }

  set(cacheId: number, hashPart: string, value: T, now: number = Date.now()): void {
    if (this.#maxEntries === 0) return;
    const key = `${cacheId}:${hashPart}`;
    this.#entries.delete(key);
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expires: now + this.#ttlMs });
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
