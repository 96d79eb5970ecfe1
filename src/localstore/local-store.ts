// The host's own Nix store as a read-only binary cache: what nix-serve and harmonia do, inside niche. This
// is the service the HTTP routes call; it knows the Nix database, the store directory, the log directory
// and the signing keys, and nothing of HTTP. Every method takes validated values (StorePathHash, a
// checked .drv base name), so nothing here is reached with a hash that was not checked at the edge.
import type { Readable } from 'node:stream';
import { NicheError, NixFormatError, NotFoundError } from '../errors.js';
import { formatCacheInfo } from '../nix/cache-info.js';
import type { SecretKey } from '../nix/signing.js';
import type { ValidPathInfo } from '../nix/path-info.js';
import { isStorePathHash, type StorePathHash } from '../nix/store-path.js';
import { openBuildLog, type OpenedLog } from './build-log.js';
import type { LocalStoreConfig } from './local-store-config.js';
import { NarInfoCache } from '../cache/narinfo-cache.js';
import { NarInfoSigner, renderLocalNarInfo } from './local-narinfo.js';
import type { NarUrlTarget } from './nar-url.js';
import { NixDatabase } from './nix-db.js';
import { listPath } from './path-listing.js';
import { loadLocalStoreKeys } from './signing-keys.js';
import { browseStorePath, type BrowseResult } from './store-browse.js';
import type { BufferPool } from '../util/buffer-pool.js';
import { openVerifiedNar, openVerifiedNarChunks, type ByteWindow, type Primed } from './verified-nar.js';

/** nix-serve's and harmonia's priority: tried before cache.nixos.org (40). */
export const LOCAL_STORE_PRIORITY = 30;

export interface OpenLocalStoreOptions {
  readonly dataDir: string;
  /** The name of a key generated when no key file is configured. */
  readonly keyName: string;
}

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * The store holding something a NAR cannot represent (a socket, a FIFO) is the server's problem, not a bad
 * request: an internal error rather than the NixFormatError's 400.
 */
function unrepresentable(error: unknown): unknown {
  return error instanceof NixFormatError
    ? new NicheError('internal', error.code, error.message, { cause: error })
    : error;
}

function notValid(hash: string): NotFoundError {
  return new NotFoundError('NOT_FOUND', `${hash} is not a valid path in the local store`);
}

export class LocalStore {
  private readonly cacheInfoText: string;
  private readonly signer: NarInfoSigner;
  /**
   * Rendered narinfos, briefly: a valid path never changes, and one that Nix deletes meanwhile is seen
   * as gone within the TTL (its NAR request already checks validity, so a stale narinfo costs a 404).
   * One read near its expiry is re-read in the background (refresh ahead), and an expired one is checked
   * against the database synchronously when asked for (`cachedNarInfo`).
   */
  private readonly narinfos = new NarInfoCache({
    maxEntries: 10_000,
    ttlMs: 2_000,
    refresh: (_cacheId, hash) => (isStorePathHash(hash) ? this.#refresh(hash) : Promise.resolve()),
  });

  private constructor(
    readonly config: LocalStoreConfig,
    private readonly db: NixDatabase,
    private readonly keys: readonly SecretKey[],
    /** The key file generated at this start, if any (to tell the operator). */
    readonly generatedKeyFile: string | undefined,
  ) {
    this.signer = new NarInfoSigner(keys);
    this.cacheInfoText = formatCacheInfo({
      storeDir: config.storeDir,
      wantMassQuery: true,
      priority: LOCAL_STORE_PRIORITY,
    });
  }

  /** Opens the database and loads (or generates) the keys. Throws ConfigError for anything unusable. */
  static async open(config: LocalStoreConfig, options: OpenLocalStoreOptions): Promise<LocalStore> {
    const { keys, generated } = await loadLocalStoreKeys(config.keyFiles, options.dataDir, options.keyName);
    const db = NixDatabase.open(config.nixDb, config.storeDir);
    return new LocalStore(config, db, keys, generated);
  }

  get storeDir(): string {
    return this.config.storeDir;
  }

  /** `<name>:<base64>` of every signing key, for `trusted-public-keys`. */
  get publicKeys(): string[] {
    return this.keys.map((key) => key.publicKey.toString());
  }

  cacheInfo(): string {
    return this.cacheInfoText;
  }

  /**
   * The signed narinfo without a promise, if it is in memory: fresh, or expired and found unchanged by a
   * synchronous read of the database (about 30 µs, one indexed lookup and a render with the signature
   * memoised), which renews it. Undefined means "ask `narInfo`" (also when that read failed: the async
   * path retries a busy database and reports anything else).
   */
  cachedNarInfo(hash: StorePathHash): string | undefined {
    const now = Date.now();
    const fresh = this.narinfos.get(0, hash, now);
    if (fresh !== undefined || this.narinfos.expired(0, hash, now) === undefined) return fresh;
    let info: ValidPathInfo | undefined;
    try {
      info = this.db.queryPathInfoNow(hash);
    } catch {
      return undefined;
    }
    if (info !== undefined) return this.#offer(hash, info, now);
    this.narinfos.forget(0, hash); // no longer valid: the async path answers the 404
    return undefined;
  }

  /** The signed narinfo, or undefined if the path is not valid. */
  async narInfo(hash: StorePathHash): Promise<string | undefined> {
    const cached = this.narinfos.get(0, hash);
    if (cached !== undefined) return cached;
    const info = await this.db.queryPathInfo(hash);
    return info === undefined ? undefined : this.#offer(hash, info, Date.now());
  }

  /**
   * A background re-read of a held narinfo (NarInfoCache's refresh ahead). One that fails is dropped there:
   * the entry expires as usual, and the request that next asks for it reports what is wrong.
   */
  async #refresh(hash: StorePathHash): Promise<void> {
    const info = await this.db.queryPathInfo(hash);
    if (info === undefined) this.narinfos.forget(0, hash);
    else this.narinfos.refreshed(0, hash, renderLocalNarInfo(info, this.signer, this.storeDir));
  }

  /** Renders the narinfo of `info` and offers it to memory; the held copy if it is the same text. */
  #offer(hash: StorePathHash, info: ValidPathInfo, now: number): string {
    const text = renderLocalNarInfo(info, this.signer, this.storeDir);
    return this.narinfos.set(0, hash, text, now) ?? text;
  }

  /**
   * The path a NAR URL names, if it is valid and (when the URL carries one) still has the NAR hash the URL
   * was issued for. Throws NOT_FOUND otherwise.
   */
  async findNar(target: NarUrlTarget): Promise<ValidPathInfo> {
    const info = await this.db.queryPathInfo(target.storeHash);
    if (info === undefined) throw notValid(target.storeHash);
    if (target.narHash !== undefined && info.narHash.toNix32() !== target.narHash) {
      throw new NotFoundError(
        'NOT_FOUND',
        `${target.storeHash} no longer has the NAR hash ${target.narHash}`,
      );
    }
    return info;
  }

  /**
   * The verified NAR of `info` (or the bytes `window` of it) as chunks, the first already made: a path
   * that vanished from disk is NOT_FOUND here, before the caller sends anything. With a pool, the chunks
   * are the caller's to give back to it once written. Iterate to the end or call `return()`.
   */
  async openNarChunks(info: ValidPathInfo, window?: ByteWindow, pool?: BufferPool): Promise<Primed<Buffer>> {
    const path = info.storePath.toString(this.storeDir);
    try {
      return await openVerifiedNarChunks(
        { path, narHash: info.narHash, narSize: info.narSize },
        window,
        pool === undefined ? {} : { pool },
      );
    } catch (error) {
      throw this.#openFailure(path, error);
    }
  }

  /** `openNarChunks` as a stream (for piping through a compressor). */
  async openNar(info: ValidPathInfo, window?: ByteWindow): Promise<Readable> {
    const path = info.storePath.toString(this.storeDir);
    try {
      return await openVerifiedNar({ path, narHash: info.narHash, narSize: info.narSize }, window);
    } catch (error) {
      throw this.#openFailure(path, error);
    }
  }

  #openFailure(path: string, error: unknown): unknown {
    if (isGone(error)) return new NotFoundError('NOT_FOUND', `${path} is registered but not on disk`);
    return unrepresentable(error);
  }

  /** The `.ls` NAR listing, or undefined if the path is not valid. */
  async listing(hash: StorePathHash): Promise<string | undefined> {
    const info = await this.db.queryPathInfo(hash);
    if (info === undefined) return undefined;
    try {
      return await listPath(info.storePath.toString(this.storeDir));
    } catch (error) {
      if (isGone(error)) return undefined;
      throw unrepresentable(error);
    }
  }

  /** The build log of a derivation (`<hash>-<name>.drv`, validated by the caller), if Nix kept one. */
  openLog(drvBaseName: string): Promise<OpenedLog | undefined> {
    return openBuildLog(this.config.logDir, drvBaseName);
  }

  /** A directory listing or an open file inside a valid store path (confined to it). */
  async browse(hash: StorePathHash, segments: readonly string[]): Promise<BrowseResult> {
    const info = await this.db.queryPathInfo(hash);
    if (info === undefined) throw notValid(hash);
    return browseStorePath(this.storeDir, info.storePath.baseName, segments);
  }

  close(): void {
    this.db.close();
  }
}
