// The cache service: the rules of niche, independent of any front end. Reads render narinfos and open
// NARs; writes verify an upload completely (NAR hashes and structure while it streams, then the narinfo
// against what was measured and against the cache's contents) before anything becomes visible, and sign
// what they accept with the cache's keys.
import { randomUUID } from 'node:crypto';
import { pipeline, type Readable } from 'node:stream';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Logger } from 'pino';
import type {
  CacheNar,
  CacheRecord,
  MetadataStore,
  NarRecord,
  PathRecord,
  PathWithNar,
  Permission,
} from '../db/metadata-store.js';
import {
  ConflictError,
  InvalidInputError,
  NicheError,
  NotFoundError,
  OverloadedError,
  TooLargeError,
} from '../errors.js';
import { formatCacheInfo } from '../nix/cache-info.js';
import { formatContentAddress, parseContentAddress } from '../nix/content-address.js';
import { isCompression, parseNarFileName, type Compression, type NarFileName } from '../nix/compression.js';
import { Hash } from '../nix/hash.js';
import type { NarListing } from '../nix/nar-listing.js';
import { listingDifference, parseUploadedListing } from '../nix/nar-listing-check.js';
import { narInfoFingerprint, parseNarInfo, type NarInfo } from '../nix/narinfo.js';
import { parseSignature, PublicKey } from '../nix/signing.js';
import { isStorePathHash, StorePath, type StorePathHash } from '../nix/store-path.js';
import { BufferedBlob, type BlobRange, type BlobReadResult, type BlobStore } from '../storage/blob-store.js';
import { AccessTracker } from './access-tracker.js';
import { BlobMemory } from './blob-memory.js';
import { ANONYMOUS, authorize, type Principal } from './auth.js';
import type { CacheObserver, UploadKind } from './cache-observer.js';
import { parseCacheName } from './cache-name.js';
import { Keyring, type CacheKeys } from './keyring.js';
import { NarInfoCache } from './narinfo-cache.js';
import { BuildLogs } from './build-logs.js';
import { NarListings } from './nar-listings.js';
import { Realisations } from './realisations.js';
import { receiveNar } from './nar-upload.js';
import { renderNarInfo } from './narinfo-render.js';
import { permissionsFor } from './tokens.js';
import { SMALL_READ_SIZE, type BufferPool } from '../util/buffer-pool.js';
import { createDecompressor } from '../util/compression.js';

export interface CacheLimits {
  /** Largest NAR file (as uploaded, compressed) accepted. */
  readonly maxNarFileSize: number;
  /** Largest uncompressed NAR accepted. */
  readonly maxNarSize: number;
  /** Largest narinfo body accepted. */
  readonly maxNarInfoSize: number;
  /** Largest `<hash>.ls` listing accepted or made (bytes of JSON). */
  readonly maxListingSize: number;
  /** Largest build log accepted (bytes of plain text). */
  readonly maxLogSize: number;
  /** NAR uploads received at once; more are refused with 503 and Retry-After (OverloadedError). */
  readonly maxUploads: number;
}

/** How long a client refused for overload is asked to wait, in seconds. */
export const OVERLOAD_RETRY_AFTER_SECONDS = 2;

/**
 * How long a NAR uploaded without its narinfo stays pending: publishable by a narinfo, and visible to those
 * who may push (Nix 2.8 asks for it with HEAD to skip re-uploading it). Nix sends the narinfo right after
 * the NAR; a day covers any push interrupted and resumed. Older uploads can no longer be published (the
 * client uploads the NAR again) and their rows may be deleted; GC reclaims their blobs.
 */
export const PENDING_UPLOAD_TTL_MS = 24 * 3600 * 1000;

export const DEFAULT_LIMITS: CacheLimits = {
  maxNarFileSize: 65 * 2 ** 30,
  maxNarSize: 64 * 2 ** 30,
  maxNarInfoSize: 1 << 20,
  maxListingSize: 32 * 2 ** 20,
  maxLogSize: 64 * 2 ** 20,
  maxUploads: 32,
};

export interface CacheServiceOptions {
  readonly db: MetadataStore;
  readonly blobs: BlobStore;
  readonly logger: Logger;
  readonly limits?: CacheLimits;
  readonly now?: () => Date;
  /** How long a cache record (name, visibility) may be served from memory. */
  readonly cacheRecordTtlMs?: number;
  /** Rendered narinfos kept in memory (0 disables), and for how long changes elsewhere may go unseen. */
  readonly narInfoCacheEntries?: number;
  readonly narInfoCacheTtlMs?: number;
  /** Bytes of small NARs kept in memory for downloads (src/cache/blob-memory.ts; 0 disables). */
  readonly narMemoryBytes?: number;
  /** See PENDING_UPLOAD_TTL_MS. */
  readonly pendingUploadTtlMs?: number;
  /** Told of uploads accepted and refused (the server's metrics). */
  readonly observer?: CacheObserver | undefined;
  /** How often recorded accesses are written (src/cache/access-tracker.ts); 0: only at close. */
  readonly accessFlushMs?: number;
  /** False: reads are not recorded as accesses (checks and tools that are not the cache's users). */
  readonly trackAccesses?: boolean;
  /**
   * Told of every change this service drops from its memory, for the other processes serving the same
   * stores (the workers of `niche serve --workers N`), which drop the same (`applyMemoryChange`).
   */
  readonly peers?: ((change: MemoryChange) => void) | undefined;
}

/**
 * What a service holds in memory that a change made elsewhere makes stale: rendered narinfos of removed
 * paths (or all of them), a cache record (a cache created, changed or deleted), a cache's keys.
 */
export type MemoryChange =
  | { readonly kind: 'narinfos'; readonly cacheId: number; readonly hashParts: readonly string[] }
  | { readonly kind: 'all-narinfos' }
  | { readonly kind: 'cache-record'; readonly name: string }
  | { readonly kind: 'keys'; readonly cacheId: number };

export interface NarDownload extends BlobReadResult {
  readonly nar: NarRecord;
}

/** A NAR a reader may download: `published` false means a pending upload, shown only to pushers. */
export interface FoundNar {
  readonly nar: NarRecord;
  readonly published: boolean;
}

/**
 * A published NAR kept in memory (by cache and file hash), with the count of removals (`#removals`) when
 * its lookup began: one begun before a removal is not served.
 */
interface HeldNar extends FoundNar {
  readonly published: true;
  readonly removals: number;
  /** The last access recorded for a download answered from memory (0: none yet). */
  accessedAt: number;
}

/** Bytes of small NARs kept in memory, by default (src/cache/blob-memory.ts). */
const NAR_MEMORY_BYTES = 32 << 20;

export interface PutNarInfoResult {
  readonly status: 'added' | 'unchanged';
}

/** A rendered narinfo kept in memory, with the access time last recorded for its path. */
interface CachedNarInfo {
  readonly text: string;
  accessedAt: number;
}

export class CacheService {
  readonly db: MetadataStore;
  readonly blobs: BlobStore;
  readonly keyring: Keyring;
  readonly limits: CacheLimits;
  readonly #logger: Logger;
  readonly #now: () => Date;
  readonly #recordTtlMs: number;
  readonly #records = new Map<string, { record: CacheRecord | undefined; expires: number }>();
  readonly #narinfos: NarInfoCache<CachedNarInfo>;
  /** Published NARs by file hash: a download then needs no database read (see findNar). */
  readonly #nars: NarInfoCache<HeldNar>;
  /**
   * How many times paths have left this service's memory (removed or re-signed here, or elsewhere and
   * heard of: applyMemoryChange). A NAR lookup kept before the last removal is not served, since it may
   * have been that path's; counting saves knowing which NARs the removed paths had.
   */
  #removals = 0;
  readonly #narBytes: BlobMemory;
  readonly #pendingUploadTtlMs: number;
  readonly #listings: NarListings;
  /** The caches' build logs. */
  readonly logs: BuildLogs;
  /** The caches' realisations of content-addressed derivations. */
  readonly realisations: Realisations;
  /** Last downloads and pushes of paths, for retention and quotas. */
  readonly access: AccessTracker;
  /** NAR uploads being received now (bounded by limits.maxUploads). */
  #uploadsInProgress = 0;
  readonly #observer: CacheObserver | undefined;
  readonly #peers: ((change: MemoryChange) => void) | undefined;

  constructor(options: CacheServiceOptions) {
    this.db = options.db;
    this.blobs = options.blobs;
    this.#logger = options.logger;
    this.limits = options.limits ?? DEFAULT_LIMITS;
    this.#now = options.now ?? (() => new Date());
    this.#recordTtlMs = options.cacheRecordTtlMs ?? 2000;
    this.#pendingUploadTtlMs = options.pendingUploadTtlMs ?? PENDING_UPLOAD_TTL_MS;
    this.#observer = options.observer;
    this.#peers = options.peers;
    this.keyring = new Keyring(options.db);
    this.#listings = new NarListings({ blobs: options.blobs, maxListingSize: this.limits.maxListingSize });
    this.logs = new BuildLogs({
      db: options.db,
      blobs: options.blobs,
      logger: options.logger,
      maxLogSize: this.limits.maxLogSize,
      now: this.#now,
    });
    this.realisations = new Realisations({ db: options.db, keyring: this.keyring, now: this.#now });
    this.access = new AccessTracker({
      db: options.db,
      logger: options.logger,
      now: () => this.#now().getTime(),
      ...(options.accessFlushMs === undefined ? {} : { flushIntervalMs: options.accessFlushMs }),
      enabled: options.trackAccesses !== false,
    });
    this.#narinfos = new NarInfoCache<CachedNarInfo>({
      maxEntries: options.narInfoCacheEntries ?? 10_000,
      ttlMs: options.narInfoCacheTtlMs ?? 10_000,
      same: (held, offered) => held.text === offered.text,
      refresh: (cacheId, hashPart) => this.#refreshNarInfo(cacheId, hashPart),
    });
    this.#nars = new NarInfoCache<HeldNar>({
      maxEntries: options.narInfoCacheEntries ?? 10_000,
      ttlMs: options.narInfoCacheTtlMs ?? 10_000,
      same: (held, offered) => held.removals === offered.removals && held.nar.blobKey === offered.nar.blobKey,
      refresh: (cacheId, fileHash) => this.#refreshNar(cacheId, fileHash),
    });
    this.#narBytes = new BlobMemory({
      maxBytes: options.narMemoryBytes ?? NAR_MEMORY_BYTES,
      maxBlobBytes: SMALL_READ_SIZE,
    });
  }

  /**
   * The cache `name` if `principal` may do `needed` on it; throws otherwise (see `authorize`). The
   * principal may be given lazily: pulls from a public cache never resolve it, which saves a token lookup
   * per request, since Nix sends its netrc credentials with every request.
   */
  async open(
    name: string,
    principal: Principal | (() => Promise<Principal>),
    needed: Permission,
  ): Promise<CacheRecord> {
    // An impossible name reveals nothing about which caches exist: say so plainly.
    const record = await this.#lookup(parseCacheName(name));
    if (typeof principal !== 'function') return authorize(record, name, principal, needed);
    const publicRead = needed === 'pull' && record?.isPublic === true;
    return authorize(record, name, publicRead ? ANONYMOUS : await principal(), needed);
  }

  /** The remembered record of `name` (undefined: none, or too old to use); `record` undefined = no such cache. */
  #remembered(name: string, now: number): { record: CacheRecord | undefined } | undefined {
    const hit = this.#records.get(name);
    return hit !== undefined && hit.expires > now ? hit : undefined;
  }

  async #lookup(name: string): Promise<CacheRecord | undefined> {
    const now = Date.now();
    const hit = this.#remembered(name, now);
    if (hit !== undefined) return hit.record;
    const record = await this.db.getCache(name);
    if (this.#records.size > 10_000) this.#records.clear();
    this.#records.set(name, { record, expires: now + this.#recordTtlMs });
    return record;
  }

  /**
   * The narinfo of `hashPart` in the public cache `name` if both are in memory, without a promise: the
   * read path answers most narinfo hits this way. Undefined means "ask `open` and `getNarInfo`".
   */
  cachedPublicNarInfo(name: string, hashPart: string): { cache: CacheRecord; text: string } | undefined {
    const cache = this.#remembered(name, Date.now())?.record;
    if (cache === undefined || !cache.isPublic) return undefined;
    const cached = this.#narinfos.get(cache.id, hashPart);
    if (cached === undefined) return undefined;
    this.#touchCached(cache, hashPart, cached);
    return { cache, text: cached.text };
  }

  /** Writes what is held in memory (recorded accesses); the service is not used afterwards. */
  async close(): Promise<void> {
    await this.access.close();
  }

  /**
   * Whether `name` was found to be a cache by a recent lookup (without asking the store): metrics label
   * requests with the names of caches that exist, and with one shared label otherwise.
   */
  isKnownCache(name: string): boolean {
    return this.#records.get(name)?.record !== undefined;
  }

  forgetCacheRecord(name: string): void {
    this.#changed({ kind: 'cache-record', name });
  }

  /** Drops the cache's keys parsed in memory (a key was added or retired). */
  forgetKeys(cacheId: number): void {
    this.#changed({ kind: 'keys', cacheId });
  }

  /** Drops what `change` makes stale from memory, without telling the peers (it came from one of them). */
  applyMemoryChange(change: MemoryChange): void {
    switch (change.kind) {
      case 'narinfos':
        for (const hashPart of change.hashParts) this.#narinfos.forget(change.cacheId, hashPart);
        this.#removals += 1;
        return;
      case 'all-narinfos':
        this.#narinfos.clear();
        this.#nars.clear();
        this.#removals += 1;
        return;
      case 'cache-record':
        this.#records.delete(change.name);
        return;
      case 'keys':
        this.keyring.invalidate(change.cacheId);
        return;
    }
  }

  /** Applies `change` here and tells the peers. */
  #changed(change: MemoryChange): void {
    this.applyMemoryChange(change);
    this.#peers?.(change);
  }

  cacheInfo(cache: CacheRecord): string {
    return formatCacheInfo({ storeDir: cache.storeDir, wantMassQuery: true, priority: cache.priority });
  }

  keys(cache: CacheRecord): Promise<CacheKeys> {
    return this.keyring.forCache(cache);
  }

  async getNarInfo(cache: CacheRecord, hashPart: string): Promise<string | undefined> {
    if (!isStorePathHash(hashPart)) return undefined;
    const cached = this.#narinfos.get(cache.id, hashPart);
    if (cached !== undefined) {
      this.#touchCached(cache, hashPart, cached);
      return cached.text;
    }
    const found = await this.db.getPath(cache.id, hashPart);
    if (found === undefined) return undefined;
    const accessedAt = this.access.touchPath(cache.id, hashPart, {
      at: found.lastAccessAt.getTime(),
      retentionMs: cache.retentionMs,
    });
    const text = renderNarInfo(found);
    // An expired entry found unchanged is renewed (the held copy stays): it only needs the new access.
    const held = this.#narinfos.set(cache.id, hashPart, { text, accessedAt });
    if (held !== undefined && held.accessedAt < accessedAt) held.accessedAt = accessedAt;
    return held?.text ?? text;
  }

  /**
   * Re-reads a held narinfo near its expiry, in the background (NarInfoCache's refresh ahead, which bounds
   * how many run at once). A failed read leaves the entry to expire.
   */
  async #refreshNarInfo(cacheId: number, hashPart: string): Promise<void> {
    try {
      const found = await this.db.getPath(cacheId, hashPart);
      if (found === undefined) {
        this.#narinfos.forget(cacheId, hashPart);
        return;
      }
      const accessedAt = found.lastAccessAt.getTime();
      const held = this.#narinfos.refreshed(cacheId, hashPart, { text: renderNarInfo(found), accessedAt });
      if (held !== undefined && held.accessedAt < accessedAt) held.accessedAt = accessedAt;
    } catch (error) {
      this.#logger.debug({ err: error, cacheId, hashPart }, 'refreshing a narinfo in memory failed');
    }
  }

  /** Records an access of a narinfo served from memory, unless its last one is recent enough. */
  #touchCached(cache: CacheRecord, hashPart: string, cached: CachedNarInfo): void {
    cached.accessedAt = this.access.touchPath(cache.id, hashPart, {
      at: cached.accessedAt,
      retentionMs: cache.retentionMs,
    });
  }

  /** Drops the rendered narinfo of one path kept in memory (the path was removed). */
  forgetNarInfo(cacheId: number, hashPart: string): void {
    this.forgetPaths(cacheId, [hashPart]);
  }

  /** Drops the rendered narinfos of these paths kept in memory (removed, or given new signatures). */
  forgetPaths(cacheId: number, hashParts: readonly string[]): void {
    if (hashParts.length > 0) this.#changed({ kind: 'narinfos', cacheId, hashParts });
  }

  /**
   * What goes with paths GC or fsck removed: their narinfos kept in memory, the realisations resolving to
   * them, and the build logs of derivations no remaining path of the cache names.
   */
  async afterPathsRemoved(cache: CacheRecord, paths: readonly PathRecord[]): Promise<void> {
    this.forgetPaths(
      cache.id,
      paths.map((path) => path.hashPart),
    );
    // One statement each for the batch (a GC batch is hundreds of paths; a round trip each added up).
    await this.realisations.deleteOf(cache, paths.map(baseNameOf));
    await this.logs.deleteIfUnused(cache, [
      ...new Set(paths.flatMap((path) => (path.deriver === undefined ? [] : [path.deriver]))),
    ]);
  }

  /** Drops every rendered narinfo kept in memory (a cache was deleted). */
  forgetNarInfos(): void {
    this.#changed({ kind: 'all-narinfos' });
  }

  /**
   * The NAR `nar/<fileName>` if the caller may download it from this cache: a NAR of a published path (the
   * caller may already pull), or an unexpired upload awaiting its narinfo if `principal` may push here (Nix
   * 2.8 sends HEAD before uploading a NAR and skips the upload on 200). Anyone else sees no pending upload:
   * a NAR nobody published is not served, and the principal is resolved only in that case.
   */
  async findNar(
    cache: CacheRecord,
    fileName: string,
    principal: () => Promise<Principal>,
  ): Promise<FoundNar | undefined> {
    const parsed = parseNarFileName(fileName);
    if (parsed === undefined) return undefined;
    const held = this.#heldNar(cache.id, parsed);
    if (held !== undefined) return held;
    const removals = this.#removals;
    const found = await this.db.getNar(cache.id, parsed.fileHash);
    if (found === undefined || found.nar.compression !== parsed.compression) return undefined;
    if (found.published) {
      const offered: HeldNar = { nar: found.nar, published: true, removals, accessedAt: 0 };
      return this.#nars.set(cache.id, parsed.fileHash, offered) ?? offered;
    }
    if (!this.#pendingUploadUsable(found)) return undefined;
    const who = await principal();
    const mayPush = who.kind === 'token' && permissionsFor(who.token.scopes, cache.name).has('push');
    return mayPush ? { nar: found.nar, published: false } : undefined;
  }

  /** The published NAR held in memory for this file name, if its lookup may still be served (HeldNar). */
  #heldNar(cacheId: number, file: NarFileName): HeldNar | undefined {
    const held = this.#nars.get(cacheId, file.fileHash);
    return held?.removals === this.#removals && held.nar.compression === file.compression ? held : undefined;
  }

  /**
   * A NAR of the public cache `name` if its lookup and its bytes are both in memory, without a promise: the
   * read path answers most downloads of small NARs this way (as cachedPublicNarInfo for narinfos).
   * Undefined means "ask `open`, `findNar` and `openNar`". `data` is the bytes held, to be sent as they
   * are: never modified, never given to a pool (which would reuse it).
   */
  heldPublicNar(
    name: string,
    fileName: string,
  ): { cache: CacheRecord; nar: NarRecord; data: Buffer } | undefined {
    const cache = this.#remembered(name, Date.now())?.record;
    if (cache === undefined || !cache.isPublic) return undefined;
    const parsed = parseNarFileName(fileName);
    if (parsed === undefined) return undefined;
    const held = this.#heldNar(cache.id, parsed);
    if (held === undefined) return undefined;
    const data = this.#narBytes.get(held.nar.blobKey);
    if (data === undefined) return undefined;
    // As for narinfos from memory: recorded unless the last access recorded is recent enough.
    held.accessedAt = this.access.touchFile(cache.id, held.nar.fileHash, {
      at: held.accessedAt,
      retentionMs: cache.retentionMs,
    });
    return { cache, nar: held.nar, data };
  }

  /** Re-reads a published NAR held in memory near its expiry, in the background (as #refreshNarInfo). */
  async #refreshNar(cacheId: number, fileHash: string): Promise<void> {
    const removals = this.#removals;
    try {
      const found = await this.db.getNar(cacheId, fileHash);
      if (found?.published !== true) {
        this.#nars.forget(cacheId, fileHash);
        return;
      }
      this.#nars.refreshed(cacheId, fileHash, { nar: found.nar, published: true, removals, accessedAt: 0 });
    } catch (error) {
      this.#logger.debug({ err: error, cacheId, fileHash }, 'refreshing a NAR lookup in memory failed');
    }
  }

  /** Uploads recorded before this moment have expired. */
  #pendingCutoff(): Date {
    return new Date(this.#now().getTime() - this.#pendingUploadTtlMs);
  }

  #pendingUploadUsable(found: CacheNar): boolean {
    return found.uploadedAt !== undefined && found.uploadedAt >= this.#pendingCutoff();
  }

  /** Deletes the rows of expired pending uploads (every cache); their blobs are left to GC. */
  async expirePendingUploads(): Promise<number> {
    const removed = await this.db.deleteExpiredUploads(this.#pendingCutoff());
    if (removed > 0) this.#logger.info({ removed }, 'expired pending uploads removed');
    return removed;
  }

  /**
   * Opens a NAR found by `findNar` for download; undefined if its blob is gone. The blob is opened before
   * anything is sent, so a missing blob is still a clean 404. With `pool`, a small NAR read into memory is
   * in a buffer from it (`data`), the caller's to give back. Small NARs downloaded again and again are
   * answered from memory (src/cache/blob-memory.ts).
   */
  async openNar(
    cache: CacheRecord,
    nar: NarRecord,
    range?: BlobRange,
    pool?: BufferPool,
  ): Promise<NarDownload | undefined> {
    this.access.touchFile(cache.id, nar.fileHash);
    const held = range === undefined ? this.#narBytes.get(nar.blobKey) : undefined;
    if (held !== undefined) {
      const copy = copyHeld(held, pool);
      return Object.assign(new BufferedBlob(copy, copy.length, undefined), { nar });
    }
    const opened = await this.blobs.get(nar.blobKey, {
      ...(range === undefined ? {} : { range }),
      ...(pool === undefined ? {} : { pool }),
    });
    if (opened === undefined) {
      this.#logger.error(
        { cache: cache.name, blobKey: nar.blobKey },
        'NAR recorded in metadata but its blob is missing',
      );
      return undefined;
    }
    if (range === undefined && opened.data !== undefined) this.#narBytes.offer(nar.blobKey, opened.data);
    // Not a spread: a backend's result may make its stream on demand (a getter, not an own property).
    return Object.assign(opened, { nar });
  }

  /**
   * The path `storePath` (a full path in the cache's store directory) with its NAR, if the cache holds it
   * under exactly that name; undefined for a path it does not hold or that is not a valid store path.
   * For the SSH protocols, which ask by full path rather than by hash part.
   */
  async getPathInfo(cache: CacheRecord, storePath: string): Promise<PathWithNar | undefined> {
    let parsed: StorePath;
    try {
      parsed = StorePath.parse(storePath, cache.storeDir);
    } catch {
      return undefined;
    }
    const found = await this.db.getPath(cache.id, parsed.hash);
    if (found?.path.storePath !== storePath) return undefined;
    this.access.touchPath(cache.id, parsed.hash, {
      at: found.lastAccessAt.getTime(),
      retentionMs: cache.retentionMs,
    });
    return found;
  }

  /** The full store path of the cache's path with this hash part (QueryPathFromHashPart), if any. */
  async pathFromHashPart(cache: CacheRecord, hashPart: string): Promise<string | undefined> {
    if (!isStorePathHash(hashPart)) return undefined;
    return (await this.db.getPath(cache.id, hashPart))?.path.storePath;
  }

  /**
   * The uncompressed NAR of a path, streamed (decompressed on the way if it is stored compressed);
   * undefined if its blob is gone. The caller reads or destroys the stream.
   */
  async openPlainNar(cache: CacheRecord, nar: NarRecord): Promise<Readable | undefined> {
    const opened = await this.openNar(cache, nar);
    if (opened === undefined) return undefined;
    if (nar.compression === 'none') return opened.stream;
    const decoder = createDecompressor(isCompression(nar.compression) ? nar.compression : 'none');
    pipeline(opened.stream, decoder, () => undefined);
    return decoder;
  }

  /** NAR uploads being received right now. */
  get uploadsInProgress(): number {
    return this.#uploadsInProgress;
  }

  /**
   * Takes one of the limits.maxUploads upload slots, or refuses at once with OverloadedError (before any
   * of the body is read); call the returned function when the upload has ended, however it ended.
   */
  #takeUploadSlot(): () => void {
    if (this.#uploadsInProgress >= this.limits.maxUploads) {
      throw new OverloadedError(
        `${this.#uploadsInProgress} uploads are in progress, the most this server takes at once; retry in a moment`,
        OVERLOAD_RETRY_AFTER_SECONDS,
      );
    }
    this.#uploadsInProgress++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#uploadsInProgress--;
    };
  }

  /** Tells the observer, if any, how an upload of `kind` to `cache` ended. */
  async #observed<T>(cache: CacheRecord, kind: UploadKind, upload: () => Promise<T>): Promise<T> {
    const observer = this.#observer;
    if (observer === undefined) return upload();
    let result: T;
    try {
      result = await upload();
    } catch (error) {
      observer.uploadRefused(cache.name, kind, error instanceof NicheError ? error.code : 'INTERNAL');
      throw error;
    }
    observer.uploadAccepted(cache.name, kind);
    return result;
  }

  /** Streams an uploaded NAR file in, verifying it completely before it becomes visible. */
  uploadNar(
    cache: CacheRecord,
    fileName: string,
    body: Readable,
    options: { contentLength: number | undefined; signal?: AbortSignal },
  ): Promise<NarRecord> {
    return this.#observed(cache, 'nar', () => this.#uploadNar(cache, fileName, body, options));
  }

  async #uploadNar(
    cache: CacheRecord,
    fileName: string,
    body: Readable,
    options: { contentLength: number | undefined; signal?: AbortSignal },
  ): Promise<NarRecord> {
    const parsed = parseNarFileName(fileName);
    if (parsed === undefined) {
      throw new InvalidInputError(
        'BAD_REQUEST',
        `invalid NAR file name ${JSON.stringify(fileName.slice(0, 100))}: expected <nix32 sha256>.nar[.xz|.zst|.bz2|.br]`,
      );
    }
    const blobKey = freshNarBlobKey(parsed.fileHash);
    const release = this.#takeUploadSlot();
    try {
      const received = await receiveNar({
        body,
        compression: parsed.compression,
        blobs: this.blobs,
        blobKey,
        expectedFileHash: Hash.parsePrefixed(`sha256:${parsed.fileHash}`),
        contentLength: options.contentLength,
        maxFileSize: this.limits.maxNarFileSize,
        maxNarSize: this.limits.maxNarSize,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
      return await this.#recordNar(cache, {
        fileHash: received.fileHash.toNix32(),
        fileSize: received.fileSize,
        compression: parsed.compression,
        narHash: received.narHash.toNix32(),
        narSize: received.narSize,
        blobKey,
      });
    } finally {
      release();
    }
  }

  /**
   * Accepts a narinfo for `hashPart` after checking it against the uploaded NAR and the cache, then signs
   * it with the cache's keys. Re-uploading an identical path is harmless; different content is refused.
   */
  putNarInfo(cache: CacheRecord, hashPart: string, text: string): Promise<PutNarInfoResult> {
    return this.#observed(cache, 'narinfo', () => this.#putNarInfo(cache, hashPart, text));
  }

  async #putNarInfo(cache: CacheRecord, hashPart: string, text: string): Promise<PutNarInfoResult> {
    if (Buffer.byteLength(text) > this.limits.maxNarInfoSize) {
      throw new TooLargeError(`narinfo exceeds the limit of ${this.limits.maxNarInfoSize} bytes`);
    }
    const hash = requireHashPart(hashPart);
    const info = parseNarInfo(text, { storeDir: cache.storeDir });
    checkClaimedPath(info.storePath, hash, `${hashPart}.narinfo`);
    const nar = await this.#narOf(cache, info);
    checkAgainstNar(info, nar);
    return this.#publish(cache, info, nar);
  }

  /** The `<hash>.ls` listing of a published path, made from its NAR; undefined if there is no such path. */
  async getListing(cache: CacheRecord, hashPart: string): Promise<string | undefined> {
    if (!isStorePathHash(hashPart)) return undefined;
    const found = await this.db.getPath(cache.id, hashPart);
    if (found === undefined) return undefined;
    const listing = await this.#listings.listing(found.nar);
    if (listing === undefined) {
      this.#logger.error(
        { cache: cache.name, blobKey: found.nar.blobKey },
        'NAR recorded in metadata but its blob is missing',
      );
    }
    return listing;
  }

  /**
   * Checks a `<hash>.ls` listing a client uploaded (`write-nar-listing=true`). It is not stored: listings
   * are made from the NAR (getListing). Nix uploads it before the NAR and narinfo, so it can be compared
   * with the NAR only if the path is already in the cache; otherwise only its form is checked.
   */
  async putListing(cache: CacheRecord, hashPart: string, text: string): Promise<void> {
    const hash = requireHashPart(hashPart);
    const uploaded = parseUploadedListing(text);
    const found = await this.db.getPath(cache.id, hash);
    if (found === undefined) return;
    const actual = await this.#listings.listing(found.nar);
    if (actual === undefined) return;
    const difference = listingDifference(uploaded, JSON.parse(actual) as NarListing);
    if (difference !== undefined) {
      throw new InvalidInputError(
        'LISTING_MISMATCH',
        `the listing does not match the NAR of ${found.path.storePath}: ${difference}`,
      );
    }
  }

  /**
   * Adopts a path from an existing binary cache (`niche import`): its narinfo, and its NAR file opened only
   * if the path is not here yet. The NAR is verified against the narinfo like any upload; the narinfo's
   * signatures are kept and the cache's own are added. Returns 'unchanged' for a path already present.
   */
  async importPath(
    cache: CacheRecord,
    narInfoText: string,
    openNar: (url: string) => Promise<Readable>,
  ): Promise<PutNarInfoResult> {
    const info = parseNarInfo(narInfoText, { storeDir: cache.storeDir });
    const existing = await this.db.getPath(cache.id, info.storePath.hash);
    if (existing !== undefined) {
      if (existing.path.narHash !== info.narHash.toNix32() || existing.path.narSize !== info.narSize) {
        throw conflict(cache, existing.path);
      }
      return this.#publish(cache, info, existing.nar);
    }
    await this.#checkReferences(cache, info);
    const compression = parseImportCompression(info.compression);
    const fileHash = info.fileHash?.algorithm === 'sha256' ? info.fileHash : undefined;
    const blobKey = freshNarBlobKey(fileHash?.toNix32());
    const received = await receiveNar({
      body: await openNar(info.url),
      compression,
      blobs: this.blobs,
      blobKey,
      expectedFileHash: fileHash,
      expectedNar: { hash: info.narHash, size: info.narSize },
      contentLength: info.fileSize,
      maxFileSize: this.limits.maxNarFileSize,
      maxNarSize: this.limits.maxNarSize,
    });
    const recorded = await this.#recordNar(cache, {
      fileHash: received.fileHash.toNix32(),
      fileSize: received.fileSize,
      compression,
      narHash: received.narHash.toNix32(),
      narSize: received.narSize,
      blobKey,
    });
    return this.#publish(cache, info, recorded);
  }

  /**
   * The one-request upload of the JSON API: the path's metadata, then its NAR, verified while it streams
   * and published at once. Refuses early (before reading the NAR) what it can.
   */
  uploadPath(
    cache: CacheRecord,
    hashPart: string,
    upload: PathUploadClaim,
    body: Readable,
    options: { contentLength: number | undefined; signal?: AbortSignal },
  ): Promise<PutNarInfoResult> {
    return this.#observed(cache, 'path', () => this.#uploadPath(cache, hashPart, upload, body, options));
  }

  async #uploadPath(
    cache: CacheRecord,
    hashPart: string,
    upload: PathUploadClaim,
    body: Readable,
    options: { contentLength: number | undefined; signal?: AbortSignal },
  ): Promise<PutNarInfoResult> {
    const hash = requireHashPart(hashPart);
    const claim = parseClaim(upload, cache.storeDir);
    checkClaimedPath(claim.storePath, hash, hashPart);
    if (claim.narHash.algorithm !== 'sha256') {
      throw new InvalidInputError('HASH_INVALID', 'narHash must be a sha256 hash');
    }
    const upstream = verifiedUpstreamReferences(cache, upload.upstreamReferences ?? []);
    await this.#checkReferences(cache, claim, upstream);
    const existing = await this.db.getPath(cache.id, hash);
    if (existing !== undefined) {
      // Decided without reading the NAR (the HTTP layer closes the connection on the unread body).
      if (existing.path.narHash !== claim.narHash.toNix32() || existing.path.narSize !== claim.narSize) {
        throw conflict(cache, existing.path);
      }
      return this.#publish(cache, claim, existing.nar, upstream);
    }
    const blobKey = freshNarBlobKey(undefined);
    const release = this.#takeUploadSlot();
    let recorded: NarRecord;
    try {
      const received = await receiveNar({
        body,
        compression: upload.compression,
        blobs: this.blobs,
        blobKey,
        expectedFileHash: undefined,
        expectedNar: { hash: claim.narHash, size: claim.narSize },
        contentLength: options.contentLength,
        maxFileSize: this.limits.maxNarFileSize,
        maxNarSize: this.limits.maxNarSize,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
      recorded = await this.#recordNar(cache, {
        fileHash: received.fileHash.toNix32(),
        fileSize: received.fileSize,
        compression: upload.compression,
        narHash: received.narHash.toNix32(),
        narSize: received.narSize,
        blobKey,
      });
    } finally {
      release();
    }
    return this.#publish(cache, claim, recorded, upstream);
  }

  /** Records a received NAR; if the same file was already stored under another key, drops this copy. */
  async #recordNar(cache: CacheRecord, nar: NarRecord): Promise<NarRecord> {
    const recorded = await this.db.recordNarUpload(cache.id, nar, this.#now());
    if (recorded.blobKey !== nar.blobKey) await this.blobs.delete(nar.blobKey);
    this.#logger.info(
      { cache: cache.name, fileHash: nar.fileHash, fileSize: nar.fileSize, narSize: nar.narSize },
      'NAR received',
    );
    return recorded;
  }

  /** Checks what only the cache can check, signs, and inserts (or confirms) the path. */
  async #publish(
    cache: CacheRecord,
    claim: PathClaim,
    nar: NarRecord,
    upstream: ReadonlySet<string> = NO_UPSTREAM,
  ): Promise<PutNarInfoResult> {
    const hashPart = claim.storePath.hash;
    const ca = claim.ca === undefined ? undefined : checkCa(claim.ca);
    // The deriver is not checked against the cache: it is not a reference (Nix never fetches it to
    // complete a closure, and caches rarely hold .drv files), only a valid base name, as parsed.
    await this.#checkReferences(cache, claim, upstream);

    const keys = await this.keys(cache);
    const ours = new Set(keys.signing.map((key) => key.name));
    const clientSignatures = claim.signatures.filter(
      (signature) => !ours.has(parseSignature(signature).keyName),
    );
    const fingerprint = narInfoFingerprint(claim, cache.storeDir);
    const signatures = [...clientSignatures, ...keys.signing.map((key) => key.sign(fingerprint))];
    const references = claim.references.map((reference) => reference.baseName).sort(compareBytes);

    const record: PathRecord = {
      hashPart,
      storePath: claim.storePath.toString(cache.storeDir),
      fileHash: nar.fileHash,
      narHash: nar.narHash,
      narSize: nar.narSize,
      references,
      deriver: claim.deriver,
      ca,
      signatures,
      createdAt: this.#now(),
    };
    // The references checked above are checked again, and held, in addPath's transaction: a GC or delete
    // running meanwhile cannot leave the new path with a missing reference.
    const self = claim.storePath.baseName;
    const required = claim.references
      .filter((reference) => reference.baseName !== self && !upstream.has(reference.baseName))
      .map((reference) => String(reference.hash));
    const outcome = await this.db.addPath(cache.id, record, this.#pendingCutoff(), required);
    if (outcome.status === 'added') {
      this.#logger.info({ cache: cache.name, path: record.storePath }, 'path added');
      return { status: 'added' };
    }
    const existing = outcome.existing;
    const same =
      existing.storePath === record.storePath &&
      existing.narHash === record.narHash &&
      existing.narSize === record.narSize &&
      existing.references.join(' ') === record.references.join(' ');
    if (!same) throw conflict(cache, existing);
    this.access.touchPath(cache.id, hashPart);
    const missing = clientSignatures.filter((signature) => !existing.signatures.includes(signature));
    if (missing.length > 0) {
      await this.db.addSignatures(cache.id, hashPart, missing);
      this.forgetPaths(cache.id, [hashPart]);
    }
    return { status: 'unchanged' };
  }

  /**
   * The subset of `paths` (full store paths or base names) that the cache does not have under exactly that
   * name (a path holding the same hash part under another name does not count).
   */
  async missingPaths(cache: CacheRecord, paths: readonly string[]): Promise<string[]> {
    const baseNames = paths.map((text) => {
      try {
        return text.startsWith('/')
          ? StorePath.parse(text, cache.storeDir).baseName
          : StorePath.parseBaseName(text).baseName;
      } catch (error) {
        throw new InvalidInputError(
          'STORE_PATH_INVALID',
          `invalid store path ${JSON.stringify(text.slice(0, 200))}`,
          {
            cause: error,
          },
        );
      }
    });
    const present = await this.#presentBaseNames(cache.id, [...new Set(baseNames)]);
    return paths.filter((_path, index) => !present.has(baseNames[index] ?? ''));
  }

  /** Deletes the cache with its paths, keys and build logs (NAR blobs stay for GC). False if it was gone. */
  async deleteCache(cache: CacheRecord): Promise<boolean> {
    const logBlobs = await this.db.listBuildLogBlobKeys(cache.id);
    const deleted = await this.db.deleteCache(cache.id);
    await this.logs.deleteBlobs(logBlobs);
    this.forgetCacheRecord(cache.name);
    this.forgetNarInfos();
    this.forgetKeys(cache.id);
    return deleted;
  }

  /** Deletes a path that nothing else in the cache references and no pin keeps. */
  async deletePath(cache: CacheRecord, hashPart: string): Promise<void> {
    const hash = requireHashPart(hashPart);
    // Checked and removed in one transaction: an upload referencing the path cannot slip in between.
    const [path] = await this.db.deletePathsIfUnused(cache.id, [{ hashPart: hash }], this.#now());
    if (path === undefined) {
      const referrers = await this.db.findReferrers(cache.id, hash, 6);
      if (referrers.length > 0) {
        throw new ConflictError(
          'PATH_REFERENCED',
          `${hash} is referenced by ${referrers.slice(0, 5).join(', ')}${referrers.length > 5 ? ' and more' : ''} ` +
            `in cache ${cache.name}; delete those first`,
        );
      }
      const now = this.#now();
      const pins = (await this.db.listPins(cache.id)).filter(
        (pin) => pin.hashPart === hash && (pin.expiresAt === undefined || pin.expiresAt > now),
      );
      if (pins.length > 0) {
        throw new ConflictError(
          'PATH_PINNED',
          `${hash} is pinned as ${pins.map((pin) => pin.name).join(', ')} in cache ${cache.name}; remove the pin first`,
        );
      }
      throw new NotFoundError('NOT_FOUND', `${hash} is not in cache ${cache.name}`);
    }
    this.forgetPaths(cache.id, [hash]);
    this.#logger.info({ cache: cache.name, hashPart: hash }, 'path deleted');
    // Realisations resolving to it go with it, and its build log with the last of the cache's paths its
    // derivation built.
    await this.realisations.deleteOf(cache, [baseNameOf(path)]);
    await this.logs.deleteIfUnused(cache, path.deriver === undefined ? [] : [path.deriver]);
  }

  async #narOf(cache: CacheRecord, info: NarInfo): Promise<NarRecord> {
    const fileName = info.url.startsWith('nar/') ? info.url.slice(4) : undefined;
    const parsed = fileName === undefined ? undefined : parseNarFileName(fileName);
    if (parsed === undefined) {
      throw new InvalidInputError(
        'NARINFO_INVALID',
        `narinfo URL ${JSON.stringify(info.url.slice(0, 120))} is not of the form nar/<nix32 file hash>.nar[.ext]`,
      );
    }
    const found = await this.db.getNar(cache.id, parsed.fileHash);
    if (found === undefined) {
      throw new InvalidInputError(
        'NAR_NOT_UPLOADED',
        `narinfo refers to ${info.url}, which was not uploaded to cache ${cache.name}; upload the NAR first`,
      );
    }
    if (!found.published && !this.#pendingUploadUsable(found)) {
      throw new InvalidInputError(
        'NAR_NOT_UPLOADED',
        `narinfo refers to ${info.url}, whose upload to cache ${cache.name} is older than ` +
          `${Math.round(this.#pendingUploadTtlMs / 3600_000)} h and has expired; upload the NAR again`,
      );
    }
    return found.nar;
  }

  /**
   * Which of `baseNames` the cache holds, asked in batches with a turn of the event loop between them: a
   * narinfo may list tens of thousands of references, and one query for all of them (synchronous with
   * SQLite) would hold up every other request for as long as it runs.
   */
  async #presentBaseNames(cacheId: number, baseNames: readonly string[]): Promise<Set<string>> {
    // In hash order (a base name starts with its hash part), the probes walk the primary key's pages in
    // order, each batch a range of it: on a million paths 10,000 probes took 105 ms instead of 133 (pages
    // in the OS cache) and 100 ms instead of 900 (from disk), for 7 ms of sorting.
    const sorted = [...baseNames].sort();
    if (sorted.length <= PRESENCE_BATCH) return this.db.findPresentBaseNames(cacheId, sorted);
    const present = new Set<string>();
    for (let start = 0; start < sorted.length; start += PRESENCE_BATCH) {
      if (start > 0) await yieldToEventLoop();
      const batch = sorted.slice(start, start + PRESENCE_BATCH);
      for (const baseName of await this.db.findPresentBaseNames(cacheId, batch)) present.add(baseName);
    }
    return present;
  }

  /**
   * Every reference must name exactly (hash part and name) a path the cache holds, the path itself, or a
   * path vouched for by an upstream key. Nix looks each reference up by its full store path, so a
   * reference to `<hash>-othername` of a path held as `<hash>-name` would break every closure through it.
   */
  async #checkReferences(
    cache: CacheRecord,
    info: PathClaim,
    upstream: ReadonlySet<string> = NO_UPSTREAM,
  ): Promise<void> {
    const self = info.storePath.baseName;
    const outside = (reference: StorePath): boolean =>
      reference.baseName !== self && !upstream.has(reference.baseName);
    const wanted = [...new Set(info.references.filter(outside).map((reference) => reference.baseName))];
    if (wanted.length === 0) return;
    const present = await this.#presentBaseNames(cache.id, wanted);
    const absent = wanted.filter((baseName) => !present.has(baseName));
    if (absent.length > 0) {
      const names = absent
        .slice(0, 5)
        .map((name) =>
          name.startsWith(`${info.storePath.hash}-`) ? `${name} (not the path itself, ${self})` : name,
        );
      throw new InvalidInputError(
        'REFERENCE_MISSING',
        `${info.storePath.baseName} references paths that are not in cache ${cache.name}: ${names.join(', ')}` +
          (absent.length > 5 ? ` and ${absent.length - 5} more` : '') +
          '; upload them first',
      );
    }
  }
}

/** What a client claims about a path, whichever way it was uploaded (the signed fields and the rest). */
export type PathClaim = Pick<
  NarInfo,
  'storePath' | 'narHash' | 'narSize' | 'references' | 'deriver' | 'signatures' | 'ca'
>;

/** The metadata line of a JSON-API upload, as validated by the HTTP layer's schema. */
export interface PathUploadClaim {
  readonly storePath: string;
  readonly narHash: string;
  readonly narSize: number;
  readonly references: readonly string[];
  readonly deriver?: string | undefined;
  readonly signatures: readonly string[];
  readonly ca?: string | undefined;
  readonly compression: Exclude<Compression, 'bzip2'>;
  readonly upstreamReferences?: readonly {
    readonly storePath: string;
    readonly narHash: string;
    readonly narSize: number;
    readonly references: readonly string[];
    readonly signatures: readonly string[];
  }[];
}

function parseClaim(upload: PathUploadClaim, storeDir: string): PathClaim {
  const field = <T>(name: string, parse: () => T): T => {
    try {
      return parse();
    } catch (error) {
      if (error instanceof NicheError) {
        throw new InvalidInputError(error.code, `invalid ${name}: ${error.message}`, { cause: error });
      }
      throw error;
    }
  };
  const storePath = field('storePath', () => StorePath.parse(upload.storePath, storeDir));
  return {
    storePath,
    narHash: field('narHash', () => Hash.parsePrefixed(upload.narHash)),
    narSize: upload.narSize,
    references: field('references', () =>
      upload.references.map((reference) => StorePath.parseBaseName(reference)),
    ),
    deriver:
      upload.deriver === undefined
        ? undefined
        : field('deriver', () => StorePath.parseBaseName(upload.deriver ?? '').baseName),
    signatures: field('signatures', () =>
      upload.signatures.map((signature) => {
        parseSignature(signature);
        return signature;
      }),
    ),
    ca: upload.ca,
  };
}

const NO_UPSTREAM: ReadonlySet<string> = new Set();

/** Base names per presence query (a few milliseconds of SQLite each). */
const PRESENCE_BATCH = 1000;

/**
 * The base names of the upstream references whose signed fields verify with one of the cache's upstream
 * keys (entries that do not verify are simply not accepted; the reference check then names them).
 */
function verifiedUpstreamReferences(
  cache: CacheRecord,
  entries: NonNullable<PathUploadClaim['upstreamReferences']>,
): ReadonlySet<string> {
  if (entries.length === 0 || cache.upstreamKeys.length === 0) return NO_UPSTREAM;
  const keys = cache.upstreamKeys.flatMap((text) => {
    try {
      return [PublicKey.parse(text)];
    } catch {
      return [];
    }
  });
  const accepted = new Set<string>();
  for (const entry of entries) {
    try {
      const info = {
        storePath: StorePath.parse(entry.storePath, cache.storeDir),
        narHash: Hash.parsePrefixed(entry.narHash),
        narSize: entry.narSize,
        references: entry.references.map((reference) => StorePath.parseBaseName(reference)),
      };
      const fingerprint = narInfoFingerprint(info, cache.storeDir);
      if (entry.signatures.some((signature) => keys.some((key) => key.verify(fingerprint, signature)))) {
        accepted.add(info.storePath.baseName);
      }
    } catch (error) {
      if (!(error instanceof NicheError)) throw error;
      // A malformed entry vouches for nothing.
    }
  }
  return accepted;
}

/** `<hash>-<name>` of a path record. */
function baseNameOf(path: PathRecord): string {
  return path.storePath.slice(path.storePath.lastIndexOf('/') + 1);
}

function conflict(cache: CacheRecord, existing: PathRecord): ConflictError {
  return new ConflictError(
    'PATH_CONFLICT',
    `${existing.storePath} is already in cache ${cache.name} with different contents ` +
      `(NarHash sha256:${existing.narHash}); it is never replaced`,
  );
}

function parseImportCompression(name: string): Compression {
  if (!isCompression(name)) {
    throw new InvalidInputError(
      'COMPRESSION_INVALID',
      `NAR compression ${JSON.stringify(name)} is not one niche accepts (xz, zstd, bzip2, br, none)`,
    );
  }
  return name;
}

function requireHashPart(text: string): StorePathHash {
  if (!isStorePathHash(text)) {
    throw new InvalidInputError(
      'STORE_PATH_INVALID',
      `invalid store path hash ${JSON.stringify(text.slice(0, 100))}`,
    );
  }
  return text;
}

function checkClaimedPath(storePath: StorePath, hash: StorePathHash, uploadedAs: string): void {
  if (storePath.hash !== hash) {
    throw new InvalidInputError(
      'STORE_PATH_MISMATCH',
      `metadata for ${storePath.baseName} uploaded as ${uploadedAs}`,
    );
  }
}

function checkAgainstNar(info: NarInfo, nar: NarRecord): void {
  const mismatch = (
    code:
      | 'NAR_HASH_MISMATCH'
      | 'NAR_SIZE_MISMATCH'
      | 'FILE_HASH_MISMATCH'
      | 'FILE_SIZE_MISMATCH'
      | 'COMPRESSION_MISMATCH',
    what: string,
    claimed: string,
    actual: string,
  ): never => {
    throw new InvalidInputError(
      code,
      `${what} mismatch for ${info.storePath.baseName}: narinfo says ${claimed}, the uploaded NAR has ${actual}`,
    );
  };
  if (info.compression !== nar.compression)
    mismatch('COMPRESSION_MISMATCH', 'Compression', info.compression, nar.compression);
  if (
    info.fileHash !== undefined &&
    !(info.fileHash.algorithm === 'sha256' && info.fileHash.toNix32() === nar.fileHash)
  ) {
    mismatch('FILE_HASH_MISMATCH', 'FileHash', info.fileHash.toString(), `sha256:${nar.fileHash}`);
  }
  if (info.fileSize !== undefined && info.fileSize !== nar.fileSize) {
    mismatch('FILE_SIZE_MISMATCH', 'FileSize', String(info.fileSize), String(nar.fileSize));
  }
  if (!(info.narHash.algorithm === 'sha256' && info.narHash.toNix32() === nar.narHash)) {
    mismatch('NAR_HASH_MISMATCH', 'NarHash', info.narHash.toString(), `sha256:${nar.narHash}`);
  }
  if (info.narSize !== nar.narSize)
    mismatch('NAR_SIZE_MISMATCH', 'NarSize', String(info.narSize), String(nar.narSize));
}

/** Accepts only content addresses every supported Nix can parse, normalised to nix32. */
function checkCa(text: string): string {
  const ca = parseContentAddress(text);
  if (ca.method === 'git') {
    throw new InvalidInputError(
      'NARINFO_INVALID',
      'fixed:git: content addresses are refused: Nix 2.8 clients cannot parse a narinfo that contains one',
    );
  }
  return formatContentAddress(ca);
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * A copy of bytes held in memory (in a buffer of `pool` if given) for a download: the caller owns what it
 * is handed and gives it back to the pool once sent; the held bytes themselves must never get there (a
 * pool reuses what it is given).
 */
function copyHeld(held: Buffer, pool: BufferPool | undefined): Buffer {
  const buffer = pool !== undefined && pool.size >= held.length ? pool.take() : undefined;
  const data = buffer?.subarray(0, held.length) ?? Buffer.allocUnsafe(held.length);
  data.set(held);
  return data;
}

/**
 * A blob key no other upload uses: every upload writes its own blob, and the NAR record names the one kept
 * (a second copy of a known file is deleted by its uploader). So GC, which deletes exactly the blob of a
 * record it removed, can never delete a blob an upload of the same file has just written (design.md,
 * "Lifecycle").
 */
function freshNarBlobKey(fileHash: string | undefined): string {
  const unique = randomUUID().replaceAll('-', '');
  return fileHash === undefined ? `nar/u-${unique}` : `nar/${fileHash}-${unique}`;
}
