// Reusable I/O buffers for the download paths. Streaming a NAR in fresh 1 MiB buffers makes the garbage
// collector the largest cost after the socket writes (a profile of a 1 GB download showed 30% of the CPU in
// GC, since each buffer is external memory that V8 counts toward its next collection). Buffers taken from
// a pool go back to it once their bytes have been handed to the kernel, so a steady download allocates
// nothing. Bounded: at most `maxFree` buffers wait in the pool; beyond that, returned buffers are left to
// the garbage collector. A shared pool's buffers live in SharedArrayBuffers, so a worker thread can read
// them without a copy (the SHA-256 of on-the-fly NARs, src/util/sha256-thread.ts).

export class BufferPool {
  readonly #free: Buffer[] = [];
  readonly size: number;
  readonly maxFree: number;
  readonly shared: boolean;

  constructor(size: number, maxFree: number, options: { readonly shared?: boolean } = {}) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`invalid buffer size ${size}`);
    this.size = size;
    this.maxFree = maxFree;
    this.shared = options.shared === true;
  }

  /** A buffer of exactly `size` bytes, with unspecified contents, owned by the caller. */
  take(): Buffer {
    const free = this.#free.pop();
    if (free !== undefined) return free;
    // A backing store of its own (never a slice of Node's shared slab), so `give` can recognise it.
    return this.shared ? Buffer.from(new SharedArrayBuffer(this.size)) : Buffer.allocUnsafeSlow(this.size);
  }

  /**
   * Takes back a buffer (or a view of one) that the caller owns outright and no longer uses: one from
   * `take`, or any other buffer with a backing store of exactly `size` bytes. Views of anything else
   * (Node's shared slab, larger buffers) are ignored, so a consumer may give back every chunk it was
   * handed by a pooled source once it is done with it.
   */
  give(buffer: Uint8Array): void {
    const backing = buffer.buffer;
    if (backing.byteLength !== this.size || this.#free.length >= this.maxFree) return;
    if (this.shared ? !(backing instanceof SharedArrayBuffer) : !(backing instanceof ArrayBuffer)) return;
    this.#free.push(Buffer.from(backing, 0, this.size));
  }

  /** How many buffers wait in the pool (for tests and metrics). */
  get free(): number {
    return this.#free.length;
  }
}

/** The pool of 1 MiB chunks shared by blob downloads and on-the-fly NARs. */
export const CHUNK_SIZE = 1 << 20;
// 16 free buffers serve about five downloads at once without allocating (each has up to three chunks
// out: two being written, one being read); the pool never holds more than 16 MiB while idle.
export const chunkPool = new BufferPool(CHUNK_SIZE, 16, { shared: true });

/**
 * The pool of buffers that small NARs are read into whole (src/storage/fs/fs-blob-store.ts), each held
 * until the kernel has taken the answer. Most NARs are a few KiB to tens of KiB: taken from `chunkPool`,
 * every stalled small download would pin 1 MiB instead of its own size. A NAR larger than these buffers
 * gets one of its own. Small uploads decode into one of these too (decompressBuffer in
 * src/util/compression.ts), held for the decoding only. At most 64 free buffers (4 MiB) wait while idle.
 */
export const SMALL_READ_SIZE = 64 << 10;
export const smallReadPool = new BufferPool(SMALL_READ_SIZE, 64);
