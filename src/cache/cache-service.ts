// The cache service: the rules of niche, independent of any front end. Reads render narinfos and open
// NARs; writes verify an upload completely (NAR hashes and structure while it streams, then the narinfo
// against what was measured and against the cache's contents) before anything becomes visible, and sign
// what they accept with the cache's keys.
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { CacheRecord, MetadataStore, NarRecord, PathRecord, Permission } from '../db/metadata-store.js';
import { ConflictError, InvalidInputError, TooLargeError } from '../errors.js';
import { formatCacheInfo } from '../nix/cache-info.js';
import { formatContentAddress, parseContentAddress } from '../nix/content-address.js';
import { parseNarFileName } from '../nix/compression.js';
import { Hash } from '../nix/hash.js';
import { narInfoFingerprint, parseNarInfo, type NarInfo } from '../nix/narinfo.js';
import { parseSignature } from '../nix/signing.js';
import { isStorePathHash, type StorePathHash } from '../nix/store-path.js';
import type { BlobRange, BlobReadResult, BlobStore } from '../storage/blob-store.js';
import { authorize, type Principal } from './auth.js';
import { parseCacheName } from './cache-name.js';
import { Keyring, type CacheKeys } from './keyring.js';
import { receiveNar } from './nar-upload.js';
import { renderNarInfo } from './narinfo-render.js';

export interface CacheLimits {
  /** Largest NAR file (as uploaded, compressed) accepted. */
  readonly maxNarFileSize: number;
  /** Largest uncompressed NAR accepted. */
  readonly maxNarSize: number;
  /** Largest narinfo body accepted. */
  readonly maxNarInfoSize: number;
}

export const DEFAULT_LIMITS: CacheLimits = {
  maxNarFileSize: 65 * 2 ** 30,
  maxNarSize: 64 * 2 ** 30,
  maxNarInfoSize: 1 << 20,
};

export interface CacheServiceOptions {
  readonly db: MetadataStore;
  readonly blobs: BlobStore;
  readonly logger: Logger;
  readonly limits?: CacheLimits;
  readonly now?: () => Date;
  /** How long a cache record (name, visibility) may be served from memory. */
  readonly cacheRecordTtlMs?: number;
}

export interface NarDownload extends BlobReadResult {
  readonly nar: NarRecord;
}

export interface PutNarInfoResult {
  readonly status: 'added' | 'unchanged';
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

  constructor(options: CacheServiceOptions) {
    this.db = options.db;
    this.blobs = options.blobs;
    this.#logger = options.logger;
    this.limits = options.limits ?? DEFAULT_LIMITS;
    this.#now = options.now ?? (() => new Date());
    this.#recordTtlMs = options.cacheRecordTtlMs ?? 2000;
    this.keyring = new Keyring(options.db);
  }

  /** Looks the cache up and applies the access rules (see `authorize`). */
  async open(name: string, principal: Principal, needed: Permission): Promise<CacheRecord> {
    // An impossible name reveals nothing about which caches exist: say so plainly.
    const record = await this.#lookup(parseCacheName(name));
    return authorize(record, name, principal, needed);
  }

  async #lookup(name: string): Promise<CacheRecord | undefined> {
    const now = Date.now();
    const hit = this.#records.get(name);
    if (hit !== undefined && hit.expires > now) return hit.record;
    const record = await this.db.getCache(name);
    if (this.#records.size > 10_000) this.#records.clear();
    this.#records.set(name, { record, expires: now + this.#recordTtlMs });
    return record;
  }

  forgetCacheRecord(name: string): void {
    this.#records.delete(name);
  }

  cacheInfo(cache: CacheRecord): string {
    return formatCacheInfo({ storeDir: cache.storeDir, wantMassQuery: true, priority: cache.priority });
  }

  keys(cache: CacheRecord): Promise<CacheKeys> {
    return this.keyring.forCache(cache);
  }

  async getNarInfo(cache: CacheRecord, hashPart: string): Promise<string | undefined> {
    if (!isStorePathHash(hashPart)) return undefined;
    const found = await this.db.getPath(cache.id, hashPart);
    return found === undefined ? undefined : renderNarInfo(found);
  }

  async hasNarInfo(cache: CacheRecord, hashPart: string): Promise<boolean> {
    if (!isStorePathHash(hashPart)) return false;
    return (await this.db.findPresentPaths(cache.id, [hashPart])).size > 0;
  }

  /** The NAR record for `nar/<fileName>` if this cache holds it. */
  async findNar(cache: CacheRecord, fileName: string): Promise<NarRecord | undefined> {
    const parsed = parseNarFileName(fileName);
    if (parsed === undefined) return undefined;
    const nar = await this.db.getNar(cache.id, parsed.fileHash);
    return nar !== undefined && nar.compression === parsed.compression ? nar : undefined;
  }

  /**
   * Opens a NAR for download; undefined if the cache does not hold it. The blob is opened before anything
   * is sent, so a missing blob is still a clean 404.
   */
  async openNar(cache: CacheRecord, fileName: string, range?: BlobRange): Promise<NarDownload | undefined> {
    const nar = await this.findNar(cache, fileName);
    if (nar === undefined) return undefined;
    const opened = await this.blobs.get(nar.blobKey, range === undefined ? {} : { range });
    if (opened === undefined) {
      this.#logger.error(
        { cache: cache.name, blobKey: nar.blobKey },
        'NAR recorded in metadata but its blob is missing',
      );
      return undefined;
    }
    return { ...opened, nar };
  }

  /** Streams an uploaded NAR file in, verifying it completely before it becomes visible. */
  async uploadNar(
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
    const blobKey = `nar/${parsed.fileHash}`;
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
    const nar: NarRecord = {
      fileHash: received.fileHash.toNix32(),
      fileSize: received.fileSize,
      compression: parsed.compression,
      narHash: received.narHash.toNix32(),
      narSize: received.narSize,
      blobKey,
    };
    await this.db.recordNarUpload(cache.id, nar, this.#now());
    this.#logger.info(
      { cache: cache.name, fileHash: nar.fileHash, fileSize: nar.fileSize, narSize: nar.narSize },
      'NAR received',
    );
    return nar;
  }

  /**
   * Accepts a narinfo for `hashPart` after checking it against the uploaded NAR and the cache, then signs
   * it with the cache's keys. Re-uploading an identical path is harmless; different content is refused.
   */
  async putNarInfo(cache: CacheRecord, hashPart: string, text: string): Promise<PutNarInfoResult> {
    if (Buffer.byteLength(text) > this.limits.maxNarInfoSize) {
      throw new TooLargeError(`narinfo exceeds the limit of ${this.limits.maxNarInfoSize} bytes`);
    }
    if (!isStorePathHash(hashPart)) {
      throw new InvalidInputError(
        'STORE_PATH_INVALID',
        `invalid store path hash ${JSON.stringify(hashPart)}`,
      );
    }
    const info = parseNarInfo(text, { storeDir: cache.storeDir });
    if (info.storePath.hash !== hashPart) {
      throw new InvalidInputError(
        'STORE_PATH_MISMATCH',
        `narinfo for ${info.storePath.baseName} uploaded as ${hashPart}.narinfo`,
      );
    }
    const nar = await this.#narOf(cache, info);
    checkAgainstNar(info, nar);
    const ca = info.ca === undefined ? undefined : checkCa(info.ca);
    await this.#checkReferences(cache, info, hashPart);

    const keys = await this.keys(cache);
    const ours = new Set(keys.signing.map((key) => key.name));
    const clientSignatures = info.signatures.filter(
      (signature) => !ours.has(parseSignature(signature).keyName),
    );
    const fingerprint = narInfoFingerprint(info, cache.storeDir);
    const signatures = [...clientSignatures, ...keys.signing.map((key) => key.sign(fingerprint))];
    const references = info.references.map((reference) => reference.baseName).sort(compareBytes);

    const record: PathRecord = {
      hashPart,
      storePath: info.storePath.toString(cache.storeDir),
      fileHash: nar.fileHash,
      narHash: nar.narHash,
      narSize: nar.narSize,
      references,
      deriver: info.deriver,
      ca,
      signatures,
      createdAt: this.#now(),
    };
    const outcome = await this.db.addPath(cache.id, record);
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
    if (!same) {
      throw new ConflictError(
        'PATH_CONFLICT',
        `${existing.storePath} is already in cache ${cache.name} with different contents ` +
          `(NarHash sha256:${existing.narHash}); it is never replaced`,
      );
    }
    const missing = clientSignatures.filter((signature) => !existing.signatures.includes(signature));
    if (missing.length > 0) await this.db.addSignatures(cache.id, hashPart, missing);
    return { status: 'unchanged' };
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
    const nar = await this.db.getNar(cache.id, parsed.fileHash);
    if (nar === undefined) {
      throw new InvalidInputError(
        'NAR_NOT_UPLOADED',
        `narinfo refers to ${info.url}, which was not uploaded to cache ${cache.name}; upload the NAR first`,
      );
    }
    return nar;
  }

  async #checkReferences(cache: CacheRecord, info: NarInfo, self: StorePathHash): Promise<void> {
    const wanted = [
      ...new Set(info.references.map((reference) => reference.hash).filter((hash) => hash !== self)),
    ];
    if (wanted.length === 0) return;
    const present = await this.db.findPresentPaths(cache.id, wanted);
    const absent = info.references.filter(
      (reference) => reference.hash !== self && !present.has(reference.hash),
    );
    if (absent.length > 0) {
      const names = absent.slice(0, 5).map((reference) => reference.baseName);
      throw new InvalidInputError(
        'REFERENCE_MISSING',
        `${info.storePath.baseName} references paths that are not in cache ${cache.name}: ${names.join(', ')}` +
          (absent.length > 5 ? ` and ${absent.length - 5} more` : '') +
          '; upload them first',
      );
    }
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
