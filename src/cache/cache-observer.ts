// What the cache service tells whoever watches it (the server's metrics, src/metrics): uploads accepted
// and refused. An interface of the cache layer, so the layer stays free of any front end or metrics
// library; a service without an observer reports nothing and pays nothing.

/** How a path arrived: a NAR file, its narinfo, or both at once (JSON API upload, SSH). */
export type UploadKind = 'nar' | 'narinfo' | 'path';

export interface CacheObserver {
  /** An upload to `cache` (a cache that exists) was verified and stored. */
  uploadAccepted(cache: string, kind: UploadKind): void;
  /** An upload to `cache` was refused; `code` is the NicheError code, or INTERNAL for anything else. */
  uploadRefused(cache: string, kind: UploadKind, code: string): void;
}
