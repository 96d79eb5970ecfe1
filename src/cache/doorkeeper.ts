// Admission for the in-memory caches of the read path (narinfos, NAR lookups, small NAR bytes): a key is
// let in only when it is offered a second time while its first offer is still remembered, the doorkeeper
// of TinyLFU. Offers are remembered in a Bloom filter, not as entries, so a scan of keys read once (a
// million paths read at random, a closure fetched by one machine) passes through without pushing out the
// hot set or filling V8's old generation with entries that are never read again (docs/bench-scale.md,
// run 6).
//
// A Bloom filter errs the harmless way: a key never offered may be taken for one that was (under 2% of
// first offers are admitted at once, when the filter is fullest). A table of one fingerprint per slot, as
// this was first, errs the other way: two keys sharing a slot and read in turn overwrite each other's
// offer forever, and about a fifth of 2000 small NARs read round-robin were never admitted. The filter is
// emptied once it has remembered its capacity of offers, so it never fills up; offers made before are
// forgotten, and their keys need two more.
export class Doorkeeper {
  readonly #bits: Uint32Array;
  readonly #mask: number;
  readonly #capacity: number;
  #remembered = 0;

  /** Remembers about `4 × entries` recent offers in 10 bits each (rounded up to a power of two; 0: none). */
  constructor(entries: number) {
    this.#capacity = Math.max(0, entries * 4);
    const bits = this.#capacity === 0 ? 0 : 2 ** Math.ceil(Math.log2(Math.max(this.#capacity * 10, 1024)));
    this.#bits = new Uint32Array(bits / 32);
    this.#mask = bits - 1;
  }

  /** Whether `key` (in namespace `space`) was offered recently; remembers this offer either way. */
  admit(space: number, key: string): boolean {
    if (this.#capacity === 0) return false;
    if (this.#remembered >= this.#capacity) {
      this.#bits.fill(0);
      this.#remembered = 0;
    }
    // FNV-1a over the namespace and the key (a nix32 hash or a blob key: already well distributed), and
    // three bit positions from it and a second mix of it (Kirsch and Mitzenmacher's double hashing).
    let hash = Math.imul(2166136261 ^ space, 16777619);
    for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 16777619);
    const step = Math.imul(hash ^ (hash >>> 16), 0x45d9f3b) | 1;
    let seen = true;
    for (let i = 0; i < 3; i++) {
      const bit = (hash + Math.imul(i, step)) & this.#mask;
      const word = bit >>> 5;
      const flag = 1 << (bit & 31);
      const current = this.#bits[word] ?? 0;
      if ((current & flag) === 0) {
        seen = false;
        this.#bits[word] = current | flag;
      }
    }
    if (!seen) this.#remembered += 1;
    return seen;
  }
}
