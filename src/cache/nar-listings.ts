// `<hash>.ls` listings of a cache's paths (PROTOCOL.md §7.1), made from the stored NAR when asked for.
// Listings are not stored: one follows entirely from its NAR, which was verified at upload, so a listing
// niche serves can never disagree with the path (a listing uploaded by a client is only checked, see
// CacheService.putListing). Nix itself never reads them; tools such as nix-index do, rarely. Making one
// costs decompressing and parsing the NAR, so that work is bounded: at most `maxConcurrent` at once, a
// bounded queue behind them (then 503 BUSY with Retry-After), one shared run per NAR, the results kept in
// a small memory cache, and a listing larger than `maxListingSize` refused instead of built.
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { NarRecord } from '../db/metadata-store.js';
import { NotFoundError, OverloadedError } from '../errors.js';
import { parseCompression } from '../nix/compression.js';
import { NarListingBuilder } from '../nix/nar-listing.js';
import { NarParser, type NarVisitor } from '../nix/nar-parser.js';
import type { BlobStore } from '../storage/blob-store.js';
import { createDecompressor } from '../util/compression.js';

/** Seconds a client refused because too many listings are being made is asked to wait. */
const BUSY_RETRY_AFTER_SECONDS = 5;

export interface NarListingsOptions {
  readonly blobs: BlobStore;
  /** Largest listing made (bytes of JSON, estimated while parsing). */
  readonly maxListingSize: number;
  readonly maxConcurrent?: number;
  readonly maxWaiting?: number;
  /** Bytes of listings kept in memory. */
  readonly memoryBytes?: number;
}

/** Feeds NarListingBuilder and stops the parse once the listing would pass the limit. */
class BoundedListing implements NarVisitor {
  readonly builder = new NarListingBuilder();
  #size = 0;

  constructor(private readonly limit: number) {}

  #add(path: readonly string[], bytes: number): void {
    this.#size += (path.at(-1)?.length ?? 0) + bytes;
    if (this.#size > this.limit) {
      // To a reader, a listing too large to make is one the cache does not have.
      throw new NotFoundError(
        'NOT_FOUND',
        `no listing: this path's listing would exceed the limit of ${this.limit} bytes`,
      );
    }
  }

  directory(path: readonly string[]): void {
    this.#add(path, 40);
    this.builder.directory(path);
  }

  file(path: readonly string[], size: number, executable: boolean, narOffset: number): void {
    this.#add(path, 80);
    this.builder.file(path, size, executable, narOffset);
  }

  symlink(path: readonly string[], target: string): void {
    this.#add(path, 40 + target.length);
    this.builder.symlink(path, target);
  }
}

export class NarListings {
  readonly #blobs: BlobStore;
  readonly #maxListingSize: number;
  readonly #maxConcurrent: number;
  readonly #maxWaiting: number;
  readonly #memoryBytes: number;
  #running = 0;
  readonly #waiting: (() => void)[] = [];
  /** One run per NAR file at a time, shared by every request for it. */
  readonly #inFlight = new Map<string, Promise<string | undefined>>();
  /** Made listings by NAR file hash, oldest first. */
  readonly #kept = new Map<string, string>();
  #keptBytes = 0;

  constructor(options: NarListingsOptions) {
    this.#blobs = options.blobs;
    this.#maxListingSize = options.maxListingSize;
    this.#maxConcurrent = options.maxConcurrent ?? 2;
    this.#maxWaiting = options.maxWaiting ?? 32;
    this.#memoryBytes = options.memoryBytes ?? 16 * 2 ** 20;
  }

  /** The listing of `nar`, as Nix 2.8 writes it; undefined if its blob is gone. */
  async listing(nar: NarRecord): Promise<string | undefined> {
    const kept = this.#kept.get(nar.fileHash);
    if (kept !== undefined) {
      this.#kept.delete(nar.fileHash);
      this.#kept.set(nar.fileHash, kept);
      return kept;
    }
    let run = this.#inFlight.get(nar.fileHash);
    if (run === undefined) {
      run = this.#make(nar).finally(() => this.#inFlight.delete(nar.fileHash));
      this.#inFlight.set(nar.fileHash, run);
    }
    return run;
  }

  async #make(nar: NarRecord): Promise<string | undefined> {
    await this.#acquire();
    try {
      const opened = await this.#blobs.get(nar.blobKey);
      if (opened === undefined) return undefined;
      const visitor = new BoundedListing(this.#maxListingSize);
      const parser = new NarParser(visitor);
      const sink = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          try {
            parser.update(chunk);
            callback();
          } catch (error) {
            callback(error as Error);
          }
        },
        final(callback) {
          try {
            parser.end();
            callback();
          } catch (error) {
            callback(error as Error);
          }
        },
      });
      await pipeline(opened.stream, createDecompressor(parseCompression(nar.compression)), sink);
      const text = visitor.builder.toString();
      this.#keep(nar.fileHash, text);
      return text;
    } finally {
      this.#release();
    }
  }

  #keep(fileHash: string, text: string): void {
    if (text.length > this.#memoryBytes / 4) return;
    this.#kept.set(fileHash, text);
    this.#keptBytes += text.length;
    for (const [key, value] of this.#kept) {
      if (this.#keptBytes <= this.#memoryBytes) break;
      this.#kept.delete(key);
      this.#keptBytes -= value.length;
    }
  }

  async #acquire(): Promise<void> {
    if (this.#running < this.#maxConcurrent) {
      this.#running++;
      return;
    }
    if (this.#waiting.length >= this.#maxWaiting) {
      throw new OverloadedError(
        'too many NAR listings are being made; try again later',
        BUSY_RETRY_AFTER_SECONDS,
      );
    }
    // The slot is handed over by #release, so #running stays counted.
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next();
    else this.#running--;
  }
}
