// Build logs per cache (PROTOCOL.md §7.4): uploaded by `nix store copy-log --to`, read by `nix log` and
// `nix-store -l` (which find a path's log through its narinfo's Deriver). A log is a row (cache,
// derivation) and a blob `log/<uuid>`, stored zstd-compressed (build logs shrink 5-10×). An upload streams:
// the body is undone of its Content-Encoding (Nix 2.32+ `log-compression`), counted against the limit,
// compressed and written to the blob store, which commits only a complete body; then the row points at it,
// replacing (and deleting the blob of) the cache's earlier log for that derivation. Logs go with the cache
// (deleteCache) and with the last of the cache's paths built by their derivation (deletePath).
import { randomUUID } from 'node:crypto';
import { PassThrough, type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { BuildLogRecord, CacheRecord, MetadataStore } from '../db/metadata-store.js';
import { InvalidInputError, NicheError, TooLargeError } from '../errors.js';
import { StorePath } from '../nix/store-path.js';
import type { BlobStore } from '../storage/blob-store.js';
import {
  createCompressor,
  createContentDecoder,
  createDecompressor,
  type ContentCoding,
} from '../util/compression.js';
import { BorrowedReadable } from '../util/read-chunk.js';

/** Counts the bytes through it and fails once they pass `limit`. */
class ByteLimit extends Transform {
  count = 0;

  constructor(
    private readonly limit: number,
    private readonly what: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.count += chunk.length;
    if (this.count > this.limit) {
      callback(new TooLargeError(`${this.what} exceeds the limit of ${this.limit} bytes`));
      return;
    }
    callback(null, chunk);
  }
}

/** The base name `<hash>-<name>.drv` if `text` is one, else undefined. */
export function parseDrvBaseName(text: string): string | undefined {
  try {
    const path = StorePath.parseBaseName(text);
    return path.name.endsWith('.drv') ? path.baseName : undefined;
  } catch {
    return undefined;
  }
}

export interface LogUpload {
  readonly body: Readable;
  /** The body's Content-Encoding, if any. */
  readonly coding: ContentCoding | undefined;
  readonly contentLength: number | undefined;
  readonly signal?: AbortSignal;
}

/** An opened log: the stored (zstd) bytes if the client takes them, else the plain text. */
export interface OpenedLog {
  readonly stream: Readable;
  readonly size: number;
  /** `zstd` when `stream` is the stored compressed bytes. */
  readonly encoding: 'zstd' | undefined;
}

export class BuildLogs {
  readonly #db: MetadataStore;
  readonly #blobs: BlobStore;
  readonly #logger: Logger;
  readonly #maxLogSize: number;
  readonly #now: () => Date;

  constructor(options: {
    db: MetadataStore;
    blobs: BlobStore;
    logger: Logger;
    maxLogSize: number;
    now: () => Date;
  }) {
    this.#db = options.db;
    this.#blobs = options.blobs;
    this.#logger = options.logger;
    this.#maxLogSize = options.maxLogSize;
    this.#now = options.now;
  }

  /** Stores the log of `drvText` for the cache; true if it replaced an earlier one. */
  async put(cache: CacheRecord, drvText: string, upload: LogUpload): Promise<{ replaced: boolean }> {
    const drv = parseDrvBaseName(drvText);
    if (drv === undefined) {
      throw new InvalidInputError(
        'STORE_PATH_INVALID',
        `expected log/<hash>-<name>.drv, not log/${drvText.slice(0, 100)}`,
      );
    }
    // An encoded log may be a little larger than the plain one (incompressible text).
    const maxBody = this.#maxLogSize + Math.ceil(this.#maxLogSize / 64) + 2 ** 16;
    if (upload.contentLength !== undefined && upload.contentLength > maxBody) {
      throw new TooLargeError(`a log of ${upload.contentLength} bytes exceeds the limit of ${maxBody} bytes`);
    }
    const blobKey = `log/${randomUUID()}`;
    const abort = new AbortController();
    const onOuterAbort = (): void => {
      abort.abort(upload.signal?.reason);
    };
    upload.signal?.addEventListener('abort', onOuterAbort, { once: true });
    const received = new ByteLimit(maxBody, 'the log upload');
    const plain = new ByteLimit(this.#maxLogSize, 'the log');
    const output = new PassThrough();
    // Not destroyed when the pipeline fails: the HTTP layer still answers on this connection.
    const source = new BorrowedReadable(upload.body);
    const stages = [
      source,
      received,
      ...(upload.coding === undefined ? [] : [createContentDecoder(upload.coding)]),
      plain,
      createCompressor('zstd'),
      output,
    ] as const;
    const piped = pipeline(stages, { signal: abort.signal });
    const stored = this.#blobs.put(blobKey, output, { signal: abort.signal });
    let storedSize: number;
    try {
      [, { size: storedSize }] = await Promise.all([piped, stored]);
    } catch (error) {
      abort.abort(error);
      const settled = await Promise.allSettled([piped, stored]);
      throw this.#uploadError(error, settled, upload.coding);
    } finally {
      upload.signal?.removeEventListener('abort', onOuterAbort);
    }
    if (upload.contentLength !== undefined && received.count !== upload.contentLength) {
      await this.#blobs.delete(blobKey);
      throw new InvalidInputError(
        'UPLOAD_INCOMPLETE',
        `upload ended after ${received.count} of ${upload.contentLength} bytes`,
      );
    }
    const record: BuildLogRecord = {
      drv,
      blobKey,
      compression: 'zstd',
      size: plain.count,
      storedSize,
      createdAt: this.#now(),
    };
    let replaced: string | undefined;
    try {
      replaced = await this.#db.putBuildLog(cache.id, record);
    } catch (error) {
      await this.#blobs.delete(blobKey);
      throw error;
    }
    if (replaced !== undefined) await this.#deleteBlob(replaced);
    this.#logger.info({ cache: cache.name, drv, size: record.size }, 'build log stored');
    return { replaced: replaced !== undefined };
  }

  /** The first error that is ours (a limit, a bad encoding), else the one that stopped the upload. */
  #uploadError(
    error: unknown,
    settled: readonly PromiseSettledResult<unknown>[],
    coding: ContentCoding | undefined,
  ): unknown {
    const reasons = [
      error,
      ...settled.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : [])),
    ];
    const ours = reasons.find((reason) => reason instanceof NicheError);
    if (ours !== undefined) return ours;
    if (error instanceof Error && 'code' in error && error.code === 'ECONNRESET') {
      return new InvalidInputError('UPLOAD_INCOMPLETE', 'the client closed the connection during the upload');
    }
    if (coding !== undefined && !(error instanceof Error && error.name === 'AbortError')) {
      const reason = error instanceof Error ? error.message : String(error);
      return new InvalidInputError(
        'COMPRESSION_INVALID',
        `the log is not valid ${coding} data (Content-Encoding): ${reason}`,
        { cause: error },
      );
    }
    return error;
  }

  /** The record of the log of `drvText`, or undefined. */
  async find(cache: CacheRecord, drvText: string): Promise<BuildLogRecord | undefined> {
    const drv = parseDrvBaseName(drvText);
    return drv === undefined ? undefined : this.#db.getBuildLog(cache.id, drv);
  }

  /**
   * Opens a log found by `find`: as stored (zstd) if `zstdAccepted`, else decompressed. Undefined if its
   * blob is gone. The blob is opened before anything is sent, so that is still a clean 404.
   */
  async open(cache: CacheRecord, log: BuildLogRecord, zstdAccepted: boolean): Promise<OpenedLog | undefined> {
    const opened = await this.#blobs.get(log.blobKey);
    if (opened === undefined) {
      this.#logger.error(
        { cache: cache.name, blobKey: log.blobKey },
        'build log recorded but its blob is missing',
      );
      return undefined;
    }
    if (log.compression === 'none') return { stream: opened.stream, size: log.size, encoding: undefined };
    if (zstdAccepted) return { stream: opened.stream, size: log.storedSize, encoding: 'zstd' };
    const decompressor = createDecompressor('zstd');
    // Errors of either side end up on the decompressor, which is what the caller sends; destroying it
    // (the client went away) closes the blob.
    pipeline(opened.stream, decompressor).catch(() => undefined);
    return { stream: decompressor, size: log.size, encoding: undefined };
  }

  /** Deletes the cache's log of `drv` if no path of the cache names it as its deriver any more. */
  /** Deletes the logs of `drvs` that no path of the cache names as its deriver any more. */
  async deleteIfUnused(cache: CacheRecord, drvs: readonly string[]): Promise<void> {
    if (drvs.length === 0) return;
    for (const blobKey of await this.#db.deleteUnusedBuildLogs(cache.id, drvs))
      await this.#deleteBlob(blobKey);
  }

  /** Deletes a replaced or removed log's blob; a failure leaves an orphan blob, which is only logged. */
  async #deleteBlob(blobKey: string): Promise<void> {
    try {
      await this.#blobs.delete(blobKey);
    } catch (error) {
      this.#logger.warn({ err: error, blobKey }, 'could not delete the blob of a build log');
    }
  }

  /** Deletes the blobs of logs whose rows are gone (their cache was deleted). */
  async deleteBlobs(blobKeys: readonly string[]): Promise<void> {
    for (const blobKey of blobKeys) await this.#deleteBlob(blobKey);
  }
}
