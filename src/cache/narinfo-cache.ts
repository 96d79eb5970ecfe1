// Rendered narinfos kept in memory: a published path's narinfo only changes when signatures are added or
// the path is deleted, and this process drops the entry itself then. Changes made elsewhere (another
// replica, an operator command) are seen within the TTL. Only hits are kept: a miss must reflect an
// upload at once, since Nix checks each reference's narinfo right before uploading its referrer.
// Bounded: the oldest entries go first once `maxEntries` is reached. An entry is the rendered text, or an
// object holding it with what else the owner keeps per path (CacheService: the last recorded access).
//
// Admission: a narinfo is kept only when it is offered a second time while the first offer is still
// remembered (a doorkeeper, as in TinyLFU). Remembering an offer costs one 32-bit slot of a fixed table
// (four slots per entry, so about as many recent offers as the cache could hold entries four times over),
// not an entry. Without it, a cache much larger than its hot set (a million paths read at random) put
// every narinfo read from the database into memory, pushing out one that was never read again: a scan
// emptied the cache of its hot set, and the entries lived just long enough to die in V8's old generation
// (a scratch round promoted 165 MB with entries churning, 34 MB with none kept: docs/bench-scale.md,
// run 6). A path asked for again and again is kept from its second read on.
export class NarInfoCache<T = string> {
  readonly #entries = new Map<string, { readonly value: T; readonly expires: number }>();
  readonly #maxEntries: number;
  readonly #ttlMs: number;
  /** Fingerprints of recent offers, by slot; 0 is an empty slot. */
  readonly #offered: Uint32Array;

  constructor(maxEntries = 10_000, ttlMs = 10_000) {
    this.#maxEntries = maxEntries;
    this.#ttlMs = ttlMs;
    this.#offered = new Uint32Array(maxEntries === 0 ? 0 : doorkeeperSlots(maxEntries));
  }

  get(cacheId: number, hashPart: string, now: number = Date.now()): T | undefined {
    const key = `${cacheId}:${hashPart}`;
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires > now) return entry.value;
    this.#entries.delete(key);
    return undefined;
  }

  /**
   * Offers the narinfo of a path just read: kept if this path was offered recently (or is held already,
   * and then replaced), else only remembered as offered. Returns whether it is kept.
   */
  set(cacheId: number, hashPart: string, value: T, now: number = Date.now()): boolean {
    if (this.#maxEntries === 0) return false;
    const key = `${cacheId}:${hashPart}`;
    const held = this.#entries.delete(key);
    if (!held && !this.#admit(cacheId, hashPart)) return false;
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expires: now + this.#ttlMs });
    return true;
  }

  /** Whether the path's previous offer is still remembered; remembers this one either way. */
  #admit(cacheId: number, hashPart: string): boolean {
    // FNV-1a over the cache id and the hash part (nix32, 32 characters, already uniformly distributed):
    // the low bits pick the slot, the whole hash (never 0) is the fingerprint.
    let hash = Math.imul(2166136261 ^ cacheId, 16777619);
    for (let i = 0; i < hashPart.length; i++) hash = Math.imul(hash ^ hashPart.charCodeAt(i), 16777619);
    const fingerprint = hash >>> 0 || 1;
    const slot = fingerprint & (this.#offered.length - 1);
    if (this.#offered[slot] === fingerprint) return true;
    this.#offered[slot] = fingerprint;
    return false;
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

/** A power of two of at least four slots per entry (at 10,000 entries: 65,536 slots, 256 KiB). */
function doorkeeperSlots(maxEntries: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(maxEntries * 4, 64)));
}
