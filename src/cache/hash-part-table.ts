// The hash parts of a cache's paths, sorted, as GC holds them: 32 ASCII bytes each in one growing buffer.
// A million paths as strings took about 56 MB of heap (a 32-character string is 48 bytes, plus its array
// slot); packed they take 32 MB, outside the heap, and GC's planning stays under its memory bound on
// PostgreSQL too (docs/bench-gc.md). Lookups are binary searches comparing bytes.

const WIDTH = 32;

export class HashPartTable {
  #bytes = new Uint8Array(WIDTH * 1024);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  /** Appends a hash part (32 nix32 characters); the caller keeps the table sorted. */
  push(hashPart: string): void {
    if (hashPart.length !== WIDTH) throw new Error(`not a hash part: ${JSON.stringify(hashPart)}`);
    if ((this.#length + 1) * WIDTH > this.#bytes.length) {
      const bigger = new Uint8Array(this.#bytes.length * 2);
      bigger.set(this.#bytes);
      this.#bytes = bigger;
    }
    const base = this.#length * WIDTH;
    for (let i = 0; i < WIDTH; i += 1) this.#bytes[base + i] = hashPart.charCodeAt(i);
    this.#length += 1;
  }

  at(index: number): string {
    if (!Number.isInteger(index) || index < 0 || index >= this.#length) {
      throw new RangeError(`index ${index} outside a table of ${this.#length} hash parts`);
    }
    return Buffer.from(this.#bytes.buffer, this.#bytes.byteOffset + index * WIDTH, WIDTH).toString('latin1');
  }

  /** Compares entry `index` with `key` (32 character codes): negative, zero or positive. */
  #compare(index: number, key: Uint8Array): number {
    const base = index * WIDTH;
    for (let i = 0; i < WIDTH; i += 1) {
      const difference = (this.#bytes[base + i] as number) - (key[i] as number);
      if (difference !== 0) return difference;
    }
    return 0;
  }

  /** Whether the entries are strictly increasing (sorted, no duplicates); else the first index out of order. */
  firstOutOfOrder(): number | undefined {
    for (let index = 1; index < this.#length; index += 1) {
      if (this.#compare(index - 1, this.#bytes.subarray(index * WIDTH, (index + 1) * WIDTH)) >= 0)
        return index;
    }
    return undefined;
  }

  /** The index of `hashPart`, or undefined if the table does not hold it (binary search). */
  indexOf(hashPart: string): number | undefined {
    if (hashPart.length !== WIDTH) return undefined;
    const key = new Uint8Array(WIDTH);
    for (let i = 0; i < WIDTH; i += 1) key[i] = hashPart.charCodeAt(i);
    let low = 0;
    let high = this.#length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const order = this.#compare(middle, key);
      if (order === 0) return middle;
      if (order < 0) low = middle + 1;
      else high = middle - 1;
    }
    return undefined;
  }
}
