// Rendered narinfos kept in memory: a published path's narinfo only changes when signatures are added or
// the path is deleted, and this process drops the entry itself then. Changes made elsewhere (another
// replica, an operator command) are seen within the TTL. Only hits are kept: a miss must reflect an
// upload at once, since Nix checks each reference's narinfo right before uploading its referrer.
// Bounded: the oldest entries go first once `maxEntries` is reached.
export class NarInfoCache {
  readonly #entries = new Map<string, { readonly text: string; readonly expires: number }>();
  readonly #maxEntries: number;
  readonly #ttlMs: number;

  constructor(maxEntries = 10_000, ttlMs = 10_000) {
    this.#maxEntries = maxEntries;
    this.#ttlMs = ttlMs;
  }

  get(cacheId: number, hashPart: string, now: number = Date.now()): string | undefined {
    const key = `${cacheId}:${hashPart}`;
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires > now) return entry.text;
    this.#entries.delete(key);
    return undefined;
  }

  set(cacheId: number, hashPart: string, text: string, now: number = Date.now()): void {
    if (this.#maxEntries === 0) return;
    const key = `${cacheId}:${hashPart}`;
    this.#entries.delete(key);
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { text, expires: now + this.#ttlMs });
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
