// Admission for the in-memory caches of the read path (narinfos, NAR lookups, small NAR bytes): a key is
// let in only when it is offered a second time while its first offer is still remembered, as in TinyLFU.
// Remembering an offer costs one 32-bit slot of a fixed table, not an entry, so a scan of keys read once
// (a million paths read at random, a closure fetched by one machine) passes through without pushing out
// the hot set or filling V8's old generation with entries that are never read again
// (docs/bench-scale.md, run 6).
export class Doorkeeper {
  /** Fingerprints of recent offers, by slot; 0 is an empty slot. */
  readonly #offered: Uint32Array;

  /** Remembers about `4 × entries` recent offers (a power of two of at least 64 slots; 0: none). */
  constructor(entries: number) {
    this.#offered = new Uint32Array(entries <= 0 ? 0 : 2 ** Math.ceil(Math.log2(Math.max(entries * 4, 64))));
  }

  /** Whether `key` (in namespace `space`) was offered recently; remembers this offer either way. */
  admit(space: number, key: string): boolean {
    if (this.#offered.length === 0) return false;
    // FNV-1a over the namespace and the key (a nix32 hash or a blob key: already well distributed): the
    // low bits pick the slot, the whole hash (never 0) is the fingerprint.
    let hash = Math.imul(2166136261 ^ space, 16777619);
    for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 16777619);
    const fingerprint = hash >>> 0 || 1;
    const slot = fingerprint & (this.#offered.length - 1);
    if (this.#offered[slot] === fingerprint) return true;
    this.#offered[slot] = fingerprint;
    return false;
  }
}
