// The interface every blob backend (local filesystem now, S3 later) implements. Blobs are immutable byte
// strings addressed by a key such as `nar/<nix32 file hash>`; niche never rewrites one in place.
import { Readable } from 'node:stream';
import type { BufferPool } from '../util/buffer-pool.js';

/** An inclusive byte range, as in HTTP `Range: bytes=start-end`. */
export interface BlobRange {
  readonly start: number;
  readonly end: number;
}

export interface PutOptions {
  /** Aborting rejects the put and leaves nothing behind. */
  readonly signal?: AbortSignal;
  /** If set, the put fails (and commits nothing) unless exactly this many bytes arrive. */
  readonly expectedSize?: number;
  /** If set, the put fails (and commits nothing) unless the bytes hash to this SHA-256 digest. */
  readonly expectedSha256?: Buffer;
  /** The put fails (and commits nothing) as soon as more than this many bytes arrive. */
  readonly maxSize?: number;
}

export interface PutResult {
  readonly size: number;
  readonly sha256: Buffer;
}

export interface BlobReadResult {
  /** The requested bytes (the whole blob, or the range). */
  readonly stream: Readable;
  /** The size of the whole blob. */
  readonly size: number;
  /** The range being streamed, if one was asked for. */
  readonly range?: BlobRange;
  /**
   * The same bytes as `stream`, when the backend read them into memory anyway (small blobs): callers may
   * send this instead of consuming the stream (which is then never made). If `GetOptions.pool` was given,
   * a view of a buffer taken from it, the caller's to give back once written.
   */
  readonly data?: Buffer;
  /**
   * The same bytes as `stream`, as chunks read into buffers taken from `pool`, offered by backends that
   * read at positions (the filesystem). Each chunk is the consumer's, to give back to the pool once
   * written: a download then allocates nothing per chunk. Iterating it to the end, or returning early,
   * releases the blob as consuming `stream` does; use one or the other.
   */
  readonly chunks?: (pool: BufferPool) => AsyncIterable<Buffer>;
}

/**
 * A blob (or the range of it) already in memory, as a read result: its stream is only made for a caller
 * that asks for it. For backends that read small blobs whole, and for bytes held elsewhere.
 */
export class BufferedBlob implements BlobReadResult {
  readonly size: number;
  readonly range: BlobRange | undefined;
  readonly data: Buffer;
  #stream: Readable | undefined;

  constructor(data: Buffer, size: number, range: BlobRange | undefined) {
    this.data = data;
    this.size = size;
    this.range = range;
  }

  get stream(): Readable {
    return (this.#stream ??= Readable.from([this.data], { objectMode: false }));
  }
}

export interface GetOptions {
  readonly range?: BlobRange;
  /**
   * Where a backend that reads small blobs into memory (`data`) takes the buffer from, instead of
   * allocating one per read: thousands of small NAR downloads a second otherwise allocate megabytes of
   * buffers a second, and the garbage collector's share of the CPU grows with them.
   */
  readonly pool?: BufferPool;
}

export interface BlobStat {
  readonly size: number;
  /** When the blob was written (GC leaves blobs without metadata alone until they are old enough). */
  readonly modifiedAt?: Date;
}

export interface BlobStore {
  /**
   * Streams `source` into the blob `key`. Resolves only once the blob is durable and visible under `key`;
   * rejects (leaving no partial blob visible) if the source errors, the signal aborts, or a check in
   * `options` fails. Writing a key that already exists replaces it atomically (callers only do so with
   * identical content, since keys are content addresses).
   */
  put(key: string, source: Readable, options?: PutOptions): Promise<PutResult>;
  /**
   * `put` for bytes already in memory (small uploads): the same promise, checks and atomicity. A backend
   * may check the bytes before writing anything and write them in fewer steps than a stream needs.
   */
  putBuffer(key: string, data: Uint8Array, options?: PutOptions): Promise<PutResult>;
  /**
   * Opens the blob for reading. Resolves to undefined if it does not exist, so callers can answer 404
   * before sending any header. The range must lie within the blob (callers check against `head`).
   */
  get(key: string, options?: GetOptions): Promise<BlobReadResult | undefined>;
  head(key: string): Promise<BlobStat | undefined>;
  /** Deletes the blob. A blob that is already gone is success. */
  delete(key: string): Promise<void>;
  /** Lists keys starting with `prefix`, in no particular order. */
  list(prefix: string): AsyncIterable<string>;
  close(): Promise<void>;
}

const KEY_PATTERN = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)*$/;

/** Keys are chosen by niche, never by clients; this guards the backends against a bug upstream. */
export function assertValidBlobKey(key: string): void {
  if (
    !KEY_PATTERN.test(key) ||
    key.length > 512 ||
    key.split('/').some((part) => part === '..' || part === '.')
  ) {
    throw new Error(`invalid blob key: ${JSON.stringify(key)}`);
  }
}
