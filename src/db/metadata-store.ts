// The interface every metadata backend (SQLite now, PostgreSQL later) implements: caches, their signing
// keys, tokens, uploaded NARs and store paths. Values are plain records; validation of Nix formats happens
// above this layer, so a backend stores and returns exactly what it was given.

export type Permission = 'pull' | 'push' | 'delete' | 'cache-admin' | 'server-admin';
export const PERMISSIONS: readonly Permission[] = ['pull', 'push', 'delete', 'cache-admin', 'server-admin'];

export interface CacheRecord {
  readonly id: number;
  readonly name: string;
  readonly isPublic: boolean;
  readonly priority: number;
  readonly storeDir: string;
  /** Public keys (`name:base64`) of upstream caches: paths they signed need not be pushed here. */
  readonly upstreamKeys: readonly string[];
  readonly createdAt: Date;
  /** Paths not downloaded or pushed for this long may be collected (unless pinned or needed); none: kept. */
  readonly retentionMs: number | undefined;
  /** Stored bytes above which the least recently used paths are collected; none: no quota. */
  readonly maxSize: number | undefined;
}

export interface NewCache {
  readonly name: string;
  readonly isPublic: boolean;
  readonly priority: number;
  readonly storeDir: string;
  readonly upstreamKeys: readonly string[];
  /** Stored in the same transaction, so no one ever sees the cache without a key to sign with. */
  readonly initialKey?: NewSigningKey;
}

export interface CacheChanges {
  readonly isPublic?: boolean;
  readonly priority?: number;
  readonly upstreamKeys?: readonly string[];
  /** null clears it. */
  readonly retentionMs?: number | null;
  /** null clears it. */
  readonly maxSize?: number | null;
}

/** What a cache holds, kept up to date with every path added or removed. */
export interface CacheUsage {
  readonly paths: number;
  /** Sum of the paths' NAR sizes (uncompressed). */
  readonly narBytes: number;
  /** Sum of the sizes of the NAR files the paths use, each file once (what the cache costs to store). */
  readonly storedBytes: number;
  /** When the newest path was added; undefined if none ever was. */
  readonly lastPushAt: Date | undefined;
}

/** A named root of a cache: keeps its path and the path's closure (niche pin). */
export interface PinRecord {
  readonly name: string;
  readonly hashPart: string;
  readonly storePath: string;
  readonly createdAt: Date;
  readonly expiresAt: Date | undefined;
}

/** What GC needs to know of a path, read a page at a time. */
export interface GcPathRow {
  readonly hashPart: string;
  readonly fileHash: string;
  /** Bytes of its NAR file. */
  readonly fileSize: number;
  /** Milliseconds since the epoch: the last download or push (its creation if none was recorded). */
  readonly lastAccess: number;
  /** Another path of the same cache uses the same NAR file (removing one frees nothing by itself). */
  readonly sharesFile: boolean;
}

/** One reference between two paths of a cache: `referrer` references `hashPart`. */
export interface GcRefRow {
  readonly hashPart: string;
  readonly referrer: string;
}

/** A path GC (or an operator) wants to remove, if nothing keeps it. */
export interface DeleteCandidate {
  readonly hashPart: string;
  /** Kept if accessed after this (milliseconds since the epoch); undefined: whenever it was accessed. */
  readonly accessedAtMost?: number;
}

/** An access to record: a path by hash part (narinfo, push) or by its NAR file (download). */
export interface AccessRecord {
  readonly cacheId: number;
  readonly hashPart?: string;
  readonly fileHash?: string;
  /** Milliseconds since the epoch. */
  readonly at: number;
}

export interface SigningKeyRecord {
  readonly id: number;
  readonly cacheId: number;
  /** The key name, e.g. `example.org-1`. Unique per cache. */
  readonly name: string;
  /** `name:base64(64 bytes)`, as written by `nix-store --generate-binary-cache-key`. */
  readonly secretKey: string;
  /** `name:base64(32 bytes)`. */
  readonly publicKey: string;
  readonly createdAt: Date;
  /** Set when the key no longer signs new paths. */
  readonly retiredAt: Date | undefined;
}

export interface NewSigningKey {
  readonly name: string;
  readonly secretKey: string;
  readonly publicKey: string;
}

export interface TokenScope {
  /** A cache name or a pattern with `*` wildcards. */
  readonly cachePattern: string;
  readonly permissions: readonly Permission[];
}

export interface TokenRecord {
  readonly id: number;
  readonly description: string;
  /** Hex SHA-256 of the secret token; the token itself is never stored. */
  readonly tokenHash: string;
  readonly scopes: readonly TokenScope[];
  readonly createdAt: Date;
  readonly expiresAt: Date | undefined;
  readonly revokedAt: Date | undefined;
  /** Set for an SSH key registered as a principal (its secret is the private key; tokenHash is unusable). */
  readonly sshKey: SshKeyRecord | undefined;
}

export interface SshKeyRecord {
  /** `SHA256:…` of the key blob, as OpenSSH prints it; what sessions are looked up by. */
  readonly fingerprint: string;
  /** The OpenSSH public key line without comment: `ssh-ed25519 AAAA…`. */
  readonly publicKey: string;
}

export interface NewToken {
  readonly description: string;
  readonly tokenHash: string;
  readonly scopes: readonly TokenScope[];
  readonly expiresAt: Date | undefined;
  readonly sshKey?: SshKeyRecord | undefined;
}

/** A verified, stored NAR file. Shared by all caches that hold it (content-addressed by fileHash). */
export interface NarRecord {
  /** nix32 SHA-256 of the file as stored (compressed). */
  readonly fileHash: string;
  readonly fileSize: number;
  /** `xz`, `zstd`, `bzip2`, `br` or `none`. */
  readonly compression: string;
  /** nix32 SHA-256 of the uncompressed NAR. */
  readonly narHash: string;
  readonly narSize: number;
  /** The blob key under which the file is stored. */
  readonly blobKey: string;
}

/** A NAR as one cache sees it: published by one of its paths, and/or uploaded to it awaiting a narinfo. */
export interface CacheNar {
  readonly nar: NarRecord;
  /** A path of the cache points at it, so anyone who may pull from the cache may download it. */
  readonly published: boolean;
  /** When it was last uploaded to the cache without a narinfo yet; undefined if no upload is pending. */
  readonly uploadedAt: Date | undefined;
}

/** A store path in a cache: what its narinfo says, minus the parts derived from its NAR. */
export interface PathRecord {
  /** The 32-character nix32 hash part; the lookup key. */
  readonly hashPart: string;
  /** The full store path, e.g. `/nix/store/<hash>-<name>`. */
  readonly storePath: string;
  /** The NAR file holding the contents (references NarRecord.fileHash). */
  readonly fileHash: string;
  /** nix32 SHA-256 of the uncompressed NAR (copied from the NAR record for fast reads). */
  readonly narHash: string;
  readonly narSize: number;
  /** Base names (`<hash>-<name>`), sorted, may include the path itself. */
  readonly references: readonly string[];
  /** Base name of the deriver, if known. */
  readonly deriver: string | undefined;
  readonly ca: string | undefined;
  /** `keyname:base64` signatures, in order. */
  readonly signatures: readonly string[];
  readonly createdAt: Date;
}

/** A page of paths in hash-part order (MetadataStore.listPaths). */
export interface PathPageOptions {
  /** The hash part of the last path of the previous page. */
  readonly after?: string | undefined;
  /** nix32 characters the hash part starts with. */
  readonly hashPrefix?: string | undefined;
  readonly limit: number;
}

/** A page of paths in name order (MetadataStore.findPathsByName). */
export interface NamePageOptions {
  /** Store path name characters ([A-Za-z0-9+-._?=]) the name starts with; '' for every path. */
  readonly prefix: string;
  /** The last path of the previous page. */
  readonly after?: { readonly name: string; readonly hashPart: string } | undefined;
  readonly limit: number;
}

/**
 * The exclusive upper bound of the strings that start with `prefix`, in byte order: every character of a
 * hash part or store path name is below U+007F, so `prefix + '\x7f'` is above all of them.
 */
export function prefixUpperBound(prefix: string): string {
  return `${prefix}\x7f`;
}

/** A path with the NAR it points to, as needed to render a narinfo. */
export interface PathWithNar {
  readonly path: PathRecord;
  readonly nar: NarRecord;
  /**
   * When the path was last downloaded or pushed as far as the store knows (recordAccesses), else when it
   * was added. Accesses are recorded only once per resolution (src/cache/access-tracker.ts).
   */
  readonly lastAccessAt: Date;
}

/** A build log kept for a cache (`nix store copy-log`), keyed by its derivation. */
export interface BuildLogRecord {
  /** The derivation's base name, `<hash>-<name>.drv`. */
  readonly drv: string;
  /** The blob holding the log, compressed as `compression` says. */
  readonly blobKey: string;
  /** `zstd` or `none`. */
  readonly compression: string;
  /** Bytes of the plain log. */
  readonly size: number;
  /** Bytes of the blob. */
  readonly storedSize: number;
  readonly createdAt: Date;
}

/** A realisation of a content-addressed derivation's output in a cache (PROTOCOL.md §7.2). */
export interface RealisationRecord {
  /** `sha256:<hex>!<output name>` (Nix ≤ 2.34), or `<drv base name>^<output name>` (a 2.35+ build trace). */
  readonly id: string;
  /** The output path's base name. */
  readonly outPath: string;
  /** Ids of other realisations and their out paths' base names. */
  readonly dependentRealisations: Readonly<Record<string, string>>;
  /** `keyname:base64` signatures, in order. */
  readonly signatures: readonly string[];
  readonly createdAt: Date;
}

export type AddRealisationOutcome =
  | { readonly status: 'added' }
  /** The id is already taken; nothing was changed. */
  | { readonly status: 'exists'; readonly existing: RealisationRecord };

export type AddPathOutcome =
  | { readonly status: 'added' }
  /** The hash part is already taken; nothing was changed. */
  | { readonly status: 'exists'; readonly existing: PathRecord };

export interface MetadataStore {
  close(): Promise<void>;
  /** Resolves when the store answers a trivial query (readiness checks); rejects otherwise. */
  ping(): Promise<void>;

  createCache(cache: NewCache): Promise<CacheRecord>; // throws ConflictError('CACHE_EXISTS')
  getCache(name: string): Promise<CacheRecord | undefined>;
  listCaches(): Promise<CacheRecord[]>;
  /** Returns the updated record; throws NotFoundError('CACHE_NOT_FOUND') if there is no such cache. */
  updateCache(cacheId: number, changes: CacheChanges): Promise<CacheRecord>;
  /**
   * Deletes the cache with its keys, paths, realisations, build logs and pending uploads (the NAR records and blobs stay
   * for GC; the logs' blobs are the caller's to delete, see listBuildLogBlobKeys).
   * Returns false if there was no such cache.
   */
  deleteCache(cacheId: number): Promise<boolean>;

  addSigningKey(cacheId: number, key: NewSigningKey): Promise<SigningKeyRecord>;
  /** All keys of the cache, oldest first, retired ones included. */
  listSigningKeys(cacheId: number): Promise<SigningKeyRecord[]>;
  /** Stops the key from signing. Returns false if the cache has no unretired key of that name. */
  retireSigningKey(cacheId: number, name: string, at: Date): Promise<boolean>;

  createToken(token: NewToken): Promise<TokenRecord>;
  findTokenByHash(tokenHash: string): Promise<TokenRecord | undefined>;
  /** The newest unrevoked token of the SSH key with this fingerprint (it may have expired). */
  findTokenBySshKey(fingerprint: string): Promise<TokenRecord | undefined>;
  listTokens(): Promise<TokenRecord[]>;
  /** Returns false if no such (unrevoked) token exists. */
  revokeToken(id: number, at: Date): Promise<boolean>;

  /**
   * Records a verified NAR file (once, globally) and attaches it to the cache as an upload awaiting its
   * narinfo. Must be called only after the blob is durable. Returns the NAR as recorded: if the file hash
   * was already known, the earlier record (whose blobKey may differ from the one given).
   */
  recordNarUpload(cacheId: number, nar: NarRecord, at: Date): Promise<NarRecord>;
  /**
   * The NAR if it is attached to the cache: referenced by one of its paths, or uploaded to it and
   * awaiting its narinfo (however long ago: the caller decides when a pending upload has expired).
   */
  getNar(cacheId: number, fileHash: string): Promise<CacheNar | undefined>;
  /**
   * Removes pending uploads (of every cache) last recorded before `before`, which can no longer be
   * published; the NAR records and blobs stay for GC. Returns how many were removed.
   */
  deleteExpiredUploads(before: Date): Promise<number>;

  getPath(cacheId: number, hashPart: string): Promise<PathWithNar | undefined>;
  /**
   * A page of the cache's paths ordered by hash part, starting after the hash part `after` (exclusive);
   * with `hashPrefix`, only hash parts that start with it (an index range, never a scan).
   */
  listPaths(cacheId: number, options: PathPageOptions): Promise<PathWithNar[]>;
  /**
   * A page of the cache's paths whose name (what follows `<hash>-`) starts with `prefix`, ordered by
   * name then hash part, starting after `after` (exclusive). Backed by an index on the name.
   */
  findPathsByName(cacheId: number, options: NamePageOptions): Promise<PathWithNar[]>;
  /**
   * The subset of `baseNames` (`<hash>-<name>`) the cache holds under exactly that name: a path with the
   * same hash part and another name does not count, since Nix looks references up by their full path.
   */
  findPresentBaseNames(cacheId: number, baseNames: readonly string[]): Promise<Set<string>>;
  /**
   * Atomically adds the path unless its hash part is taken, and detaches the pending upload of its NAR.
   * The NAR must be attached to the cache, checked in the same transaction: referenced by one of its
   * paths, or uploaded to it (recordNarUpload) at or after `uploadedSince` (older uploads have expired);
   * otherwise NotFoundError('NAR_NOT_UPLOADED').
   */
  addPath(
    cacheId: number,
    path: PathRecord,
    uploadedSince: Date,
    /**
     * Hash parts of references that must be in the cache, checked in the same transaction (and held there
     * against a concurrent GC until it commits); InvalidInputError('REFERENCE_MISSING') otherwise.
     */
    requiredReferences?: readonly string[],
  ): Promise<AddPathOutcome>;
  /** Appends signatures not yet present to an existing path. */
  addSignatures(cacheId: number, hashPart: string, signatures: readonly string[]): Promise<void>;
  /** Hash parts of up to `limit` paths of the cache that reference `hashPart` (itself excluded). */
  findReferrers(cacheId: number, hashPart: string, limit: number): Promise<string[]>;
  /** Removes the path (its NAR record and blob stay for GC). Returns false if it was not there. */
  deletePath(cacheId: number, hashPart: string): Promise<boolean>;
  /**
   * Removes, in one transaction, each candidate (taken in the order given: referrers first) that, checked
   * atomically with the removal so that no concurrent upload can slip a referrer or a pin in between: was
   * not accessed after its `accessedAtMost` (when given), is named by no unexpired pin, and is referenced
   * by no path of the cache other than candidates removed before it in this call. Returns the removed
   * paths. Their NAR records and blobs stay for GC.
   */
  deletePathsIfUnused(
    cacheId: number,
    candidates: readonly DeleteCandidate[],
    now: Date,
  ): Promise<PathRecord[]>;

  /** Records accesses: a path's last access only ever moves forward. Unknown paths are ignored. */
  recordAccesses(accesses: readonly AccessRecord[]): Promise<void>;
  getCacheUsage(cacheId: number): Promise<CacheUsage>;
  /** A page of the cache's paths for GC, ordered by hash part, after `after` (exclusive). */
  scanGcPaths(cacheId: number, after: string, limit: number): Promise<GcPathRow[]>;
  /** A page of the cache's references between distinct paths, ordered by (hashPart, referrer), after `after`. */
  scanGcRefs(cacheId: number, after: GcRefRow | undefined, limit: number): Promise<GcRefRow[]>;

  /**
   * Creates or moves the pin `name` to the path, which must be in the cache (checked in the same
   * transaction; NotFoundError('NOT_FOUND') otherwise). Returns the pin as stored.
   */
  putPin(cacheId: number, pin: PinRecord): Promise<PinRecord>;
  listPins(cacheId: number): Promise<PinRecord[]>;
  /** Returns false if there was no such pin. */
  deletePin(cacheId: number, name: string): Promise<boolean>;

  /**
   * Blob collection, first step, a page at a time in file-hash order after `after`: NARs that no path of
   * any cache and no pending upload uses get `unused_since = now` (if not set yet), used ones lose it.
   * Returns the last file hash of the page, or undefined when there are no more.
   */
  markUnusedNars(after: string, limit: number, now: Date): Promise<string | undefined>;
  /**
   * Second step: removes up to `limit` NAR records unused since before `before` and still unused (checked
   * atomically with the removal) and returns them; the caller then deletes their blobs.
   */
  takeUnusedNars(before: Date, limit: number): Promise<NarRecord[]>;
  /** The subset of `fileHashes` (NAR records) that no path of any cache and no pending upload uses. */
  findUnusedNars(fileHashes: readonly string[]): Promise<Set<string>>;
  /** The subset of `blobKeys` that a NAR record or a build log names. */
  findKnownBlobKeys(blobKeys: readonly string[]): Promise<Set<string>>;
  /** A page of NAR records ordered by file hash after `after` (fsck). */
  listNars(after: string, limit: number): Promise<NarRecord[]>;
  /** The hash parts of the cache's paths whose NAR file is `fileHash`. */
  findPathsByFile(cacheId: number, fileHash: string): Promise<string[]>;
  /**
   * Removes a NAR record with every path (in every cache) and pending upload that uses it (fsck --repair,
   * for a blob found missing or corrupt; the caller has removed the paths' referrers first). Returns false
   * if there was no such record.
   */
  deleteNar(fileHash: string): Promise<boolean>;

  /**
   * Takes or renews the lease `name` for `holder` until `until` if it is free, expired, already `holder`'s,
   * or held by `replacing` (a holder the caller knows to be dead). Returns false if another holder has it.
   */
  acquireLease(name: string, holder: string, now: Date, until: Date, replacing?: string): Promise<boolean>;
  /** Who holds the lease `name` (expired or not), if anyone. */
  leaseHolder(name: string): Promise<string | undefined>;
  releaseLease(name: string, holder: string): Promise<void>;

  /**
   * Stores the log of `log.drv` in the cache, replacing the one it had: returns the replaced log's blob key
   * (the caller deletes that blob), or undefined. Throws NotFoundError('CACHE_NOT_FOUND') without a cache.
   */
  putBuildLog(cacheId: number, log: BuildLogRecord): Promise<string | undefined>;
  getBuildLog(cacheId: number, drv: string): Promise<BuildLogRecord | undefined>;
  /** The blob keys of all the cache's logs (deleteCache removes the rows; the caller the blobs). */
  listBuildLogBlobKeys(cacheId: number): Promise<string[]>;
  /**
   * Removes the log of each of `drvs` unless a path of the cache still names it as its deriver, in one
   * statement or transaction. Returns the removed logs' blob keys.
   */
  deleteUnusedBuildLogs(cacheId: number, drvs: readonly string[]): Promise<string[]>;

  /** Adds the realisation unless its id is taken. Throws NotFoundError('CACHE_NOT_FOUND') without a cache. */
  addRealisation(cacheId: number, realisation: RealisationRecord): Promise<AddRealisationOutcome>;
  getRealisation(cacheId: number, id: string): Promise<RealisationRecord | undefined>;
  /** Appends signatures not yet present to an existing realisation; NOT_FOUND if there is none. */
  addRealisationSignatures(cacheId: number, id: string, signatures: readonly string[]): Promise<void>;
  /** Removes the realisations whose out path is one of `outPaths` (base names); returns how many. */
  deleteRealisationsOf(cacheId: number, outPaths: readonly string[]): Promise<number>;
}
