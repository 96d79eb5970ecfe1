// NARs of local store paths are made on the fly from the filesystem, so nothing guarantees that the tree
// still matches what the Nix database recorded (a path modified behind Nix's back, a failing disk, a bug
// in the writer). A client must never receive a complete, well-formed response carrying the wrong NAR:
// this stream hashes and counts every byte, fails as soon as there are too many, and holds back the chunk
// that completes the response until the NAR hash and size have been checked. A failure is an error on the
// stream, which the HTTP layer turns into a broken connection, so the client sees a truncated download.
import { Readable } from 'node:stream';
import { NicheError } from '../errors.js';
import type { Hash } from '../nix/hash.js';
import { narChunks } from '../nix/nar-writer.js';
import type { BufferPool } from '../util/buffer-pool.js';
import { createSha256 } from '../util/sha256-thread.js';

export interface ByteWindow {
  /** First byte, inclusive. */
  readonly start: number;
  /** Last byte, inclusive. */
  readonly end: number;
}

export interface ExpectedNar {
  readonly path: string;
  readonly narHash: Hash;
  readonly narSize: number;
}

function mismatch(code: 'NAR_HASH_MISMATCH' | 'NAR_SIZE_MISMATCH', message: string): NicheError {
  return new NicheError('internal', code, message);
}

export interface VerifiedNarOptions {
  /** Target chunk size (the pool's buffer size, or 1 MiB, by default). */
  readonly chunkSize?: number;
  /** Take chunk buffers from this pool; the consumer may give each chunk back once it is done with it. */
  readonly pool?: BufferPool;
}

/**
 * The bytes `window` of the NAR of `expected.path` (all of it if undefined). The whole NAR is generated
 * from its first byte either way (the writer cannot seek), so when the window reaches the end of the NAR,
 * the hash of the entire NAR is checked before the last chunk is released. A window that ends earlier
 * stops generating there: its bytes cannot be hash-checked, only that the NAR is long enough for them.
 */
export async function* verifiedNarChunks(
  expected: ExpectedNar,
  window?: ByteWindow,
  options: VerifiedNarOptions = {},
): AsyncGenerator<Buffer, void, undefined> {
  const { narSize } = expected;
  const { pool } = options;
  const start = window?.start ?? 0;
  const end = window?.end ?? narSize - 1;
  const toTheEnd = end === narSize - 1;
  // A window that ends early cannot be checked against the NAR hash, so it is not hashed at all.
  const hasher = toTheEnd ? createSha256() : undefined;
  let offset = 0;
  // The chunk to send next, once the hashing thread is done with its bytes (the consumer may reuse them
  // as soon as it has sent them). Hashing a chunk overlaps with making the next one.
  let held: { bytes: Buffer; hashed: Promise<void> } | undefined;
  let digested = false;
  try {
    for await (const chunk of narChunks(expected.path, options)) {
      const chunkStart = offset;
      offset += chunk.length;
      if (offset > narSize) {
        throw mismatch(
          'NAR_SIZE_MISMATCH',
          `the NAR of ${expected.path} is longer than the ${narSize} bytes the Nix database records`,
        );
      }
      const hashed = hasher?.update(chunk) ?? Promise.resolve();
      // Awaited below, unless the NAR fails first: then its outcome no longer matters.
      hashed.catch(() => undefined);
      if (held !== undefined) {
        await held.hashed;
        yield held.bytes;
        held = undefined;
      }
      const from = Math.max(start - chunkStart, 0);
      const to = Math.min(end + 1 - chunkStart, chunk.length);
      if (to > from) {
        held = { bytes: from === 0 && to === chunk.length ? chunk : chunk.subarray(from, to), hashed };
      } else {
        await hashed; // before the window: hashed, not sent
        pool?.give(chunk);
      }
      if (!toTheEnd && offset > end) {
        // Everything asked for is generated; the rest of the NAR is not needed (the source is closed on return).
        if (held !== undefined) yield held.bytes;
        return;
      }
    }
    if (offset !== narSize) {
      throw mismatch(
        'NAR_SIZE_MISMATCH',
        `the NAR of ${expected.path} has ${offset} bytes, the Nix database records ${narSize}`,
      );
    }
    if (held !== undefined) await held.hashed;
    digested = true;
    const actual = hasher === undefined ? undefined : await hasher.digest();
    if (actual !== undefined && !actual.equals(expected.narHash.bytes)) {
      throw mismatch(
        'NAR_HASH_MISMATCH',
        `the NAR of ${expected.path} does not hash to ${expected.narHash.toString()} as the Nix database records (the path was modified?)`,
      );
    }
    if (held !== undefined) yield held.bytes;
  } finally {
    // A NAR cut short (an error, a client gone) leaves its hash unfinished on the hashing thread.
    if (!digested) hasher?.dispose();
  }
}

/**
 * An async iterator whose first item was already pulled from `source`. Unlike a wrapping generator, it
 * closes `source` when returned even before the first `next()`, so no file stays open.
 */
export class Primed<T> implements AsyncIterableIterator<T> {
  #first: IteratorResult<T, void> | undefined;
  readonly #source: AsyncGenerator<T, void, undefined>;

  constructor(first: IteratorResult<T, void>, source: AsyncGenerator<T, void, undefined>) {
    this.#first = first;
    this.#source = source;
  }

  async next(): Promise<IteratorResult<T, void>> {
    const first = this.#first;
    if (first === undefined) return this.#source.next();
    this.#first = undefined;
    return first;
  }

  async return(): Promise<IteratorResult<T, void>> {
    this.#first = undefined;
    return this.#source.return(undefined);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/**
 * `verifiedNarChunks` with its first chunk already produced: a path that vanished or cannot be read (and a
 * small NAR that fails its check) fails here, before any header is sent, so the caller can still answer
 * with a clean status. Iterate it to the end or call `return()`: that closes the files being read.
 */
export async function openVerifiedNarChunks(
  expected: ExpectedNar,
  window?: ByteWindow,
  options: VerifiedNarOptions = {},
): Promise<Primed<Buffer>> {
  const chunks = verifiedNarChunks(expected, window, options);
  try {
    return new Primed(await chunks.next(), chunks);
  } catch (error) {
    await chunks.return(undefined);
    throw error;
  }
}

/** `openVerifiedNarChunks` as a stream. Destroying the stream closes the files being read. */
export async function openVerifiedNar(
  expected: ExpectedNar,
  window?: ByteWindow,
  options: VerifiedNarOptions = {},
): Promise<Readable> {
  const chunks = await openVerifiedNarChunks(expected, window, options);
  let pending = false;
  return new Readable({
    highWaterMark: 1 << 20,
    read() {
      if (pending) return;
      pending = true;
      chunks.next().then(
        (next) => {
          pending = false;
          this.push(next.done === true ? null : next.value);
        },
        (error: unknown) => {
          this.destroy(error instanceof Error ? error : new Error(String(error)));
        },
      );
    },
    destroy(error, callback) {
      // Waits for a read in flight, then runs the generators' finally blocks (closing open files).
      chunks.return().then(
        () => {
          callback(error);
        },
        (returnError: unknown) => {
          callback(error ?? (returnError as Error));
        },
      );
    },
  });
}
