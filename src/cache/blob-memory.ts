// The bytes of small NARs kept in memory for downloads. A binary cache is read far more than it is
// written, and the same closure is fetched by every machine that needs it; most NARs are a few KiB. From
// the filesystem, each download of one costs four system calls (open, fstat, read, close) besides the
// metadata lookup, and system calls are much of what a small download spends: held bytes alone took a
// scratch A/B on this VM from 59 to 47 µs of user and 27 to 16 µs of system CPU per download
// (docs/design.md, "Reads").
//
// Blobs are immutable and their keys are never reused (every upload writes a blob of its own:
// freshNarBlobKey in src/cache/cache-service.ts), so what is held can never be stale; a key deleted
// elsewhere is only asked for again if the metadata still names it. Nothing needs to be told about
// deletions: a deleted blob's bytes age out like any others.
//
// Bounded by bytes (`maxBytes`, of blobs of at most `maxBlobBytes` each); what has not been read lately
// goes first (CLOCK, second chance: a read only marks its entry, the entries are reordered on eviction,
// which is rare once the hot set is held). Admission as for narinfos (src/cache/doorkeeper.ts): a blob is
// kept from its second read on, so a stream of NARs fetched once (a new closure, a mirror's sweep) does
// not push out the hot set.
import { Doorkeeper } from './doorkeeper.js';

export interface BlobMemoryOptions {
  /** Total bytes held, at most (0: nothing is kept). */
  readonly maxBytes: number;
  /** Larger blobs are never kept. */
  readonly maxBlobBytes: number;
}

interface Held {
  readonly data: Buffer;
  /** Read since it was put at the end of the queue. */
  read: boolean;
}

export class BlobMemory {
  /** By key, in the order of the eviction queue (first out first). */
  readonly #held = new Map<string, Held>();
  readonly #maxBytes: number;
  readonly #maxBlobBytes: number;
  readonly #doorkeeper: Doorkeeper;
  #bytes = 0;

  constructor(options: BlobMemoryOptions) {
    this.#maxBytes = options.maxBytes;
    this.#maxBlobBytes = Math.min(options.maxBlobBytes, options.maxBytes);
    // Sized as for entries of a quarter of the largest size (it remembers four offers an entry).
    this.#doorkeeper = new Doorkeeper(
      this.#maxBlobBytes <= 0 ? 0 : Math.ceil(this.#maxBytes / Math.max(1, this.#maxBlobBytes >> 2)),
    );
  }

  /** The held bytes of `key` (not to be modified or given to a pool), or undefined. */
  get(key: string): Buffer | undefined {
    const held = this.#held.get(key);
    if (held === undefined) return undefined;
    held.read = true;
    return held.data;
  }

  /**
   * Offers the whole contents of `key`, just read: a copy is kept if it is small enough and was offered
   * recently (see above). `data` stays the caller's.
   */
  offer(key: string, data: Uint8Array): void {
    if (data.length > this.#maxBlobBytes || this.#held.has(key)) return;
    if (!this.#doorkeeper.admit(0, key)) return;
    // A backing store of its own: a view of a pooled or slab buffer would pin all of it, and be reused.
    const copy = Buffer.allocUnsafeSlow(data.length);
    copy.set(data);
    this.#held.set(key, { data: copy, read: false });
    this.#bytes += copy.length;
    // Entries read since they were queued go to the back, unmarked; the first one unread goes out. Ends:
    // each entry is moved at most once before it comes up again unmarked.
    for (const [oldKey, old] of this.#held) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#held.delete(oldKey);
      if (old.read) {
        old.read = false;
        this.#held.set(oldKey, old);
      } else {
        this.#bytes -= old.data.length;
      }
    }
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#held.size;
  }
}
