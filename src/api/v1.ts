// The JSON API under /api/v1: request and response shapes, defined once and imported by both the server
// (to validate what arrives) and the client commands (to validate what comes back).
import { z } from 'zod';

export const API_PREFIX = '/api/v1';

/** A cache's push URL is its URL and this segment: `<server>/<cache>/push` (src/http/push-url.ts). */
export const PUSH_SEGMENT = 'push';

/** The URL to push to with `nix copy --to`, for a cache at `cacheUrl`. */
export function pushUrlOf(cacheUrl: string): string {
  return `${cacheUrl.replace(/\/+$/, '')}/${PUSH_SEGMENT}`;
}

export const permissionSchema = z.enum(['pull', 'push', 'delete', 'cache-admin', 'server-admin']);

export const cacheInfoSchema = z.object({
  name: z.string(),
  public: z.boolean(),
  priority: z.number().int(),
  storeDir: z.string(),
  /** Where Nix should substitute from (`<server>/<cache>`). */
  url: z.string(),
  /**
   * Where `nix copy --to` should push to (`<server>/<cache>/push`): the same cache under another URL, so
   * the pusher's narinfo disk cache never stands in for the substituter's (src/http/push-url.ts).
   */
  pushUrl: z.string(),
  /** Keys to put in trusted-public-keys (`name:base64`), retired ones included. */
  publicKeys: z.array(z.string()),
  /** Upstream caches' keys: paths they signed need not be pushed. */
  upstreamKeys: z.array(z.string()),
  /**
   * The cache over SSH, when the server runs its SSH server (`--ssh-listen`): the store URL (the SSH user
   * is the cache; the port is not in it, since Nix 2.8 takes none), the port, and the host key for
   * known_hosts. Absent from servers before it existed.
   */
  ssh: z
    .object({ url: z.string(), host: z.string(), port: z.number().int(), hostKey: z.string() })
    .nullable()
    .optional(),
  /** Seconds without a download or push after which a path may be collected; null: kept. */
  retentionSeconds: z.number().int().nullable().optional(),
  /** Stored bytes above which least recently used paths are collected; null: no quota. */
  maxSize: z.number().int().nullable().optional(),
  /** What the cache holds (absent from servers before it existed). */
  usage: z
    .object({
      paths: z.number().int(),
      narBytes: z.number().int(),
      storedBytes: z.number().int(),
      lastPushAt: z.string().nullable(),
    })
    .optional(),
});
export type CacheInfo = z.infer<typeof cacheInfoSchema>;

export const cacheListSchema = z.object({ caches: z.array(cacheInfoSchema) });
export type CacheList = z.infer<typeof cacheListSchema>;

export const createCacheSchema = z.strictObject({
  name: z.string(),
  public: z.boolean().default(true),
  priority: z.number().int().min(0).max(9999).default(40),
  upstreamKeys: z.array(z.string()).max(64).optional(),
});
export type CreateCacheRequest = z.input<typeof createCacheSchema>;

export const updateCacheSchema = z.strictObject({
  public: z.boolean().optional(),
  priority: z.number().int().min(0).max(9999).optional(),
  upstreamKeys: z.array(z.string()).max(64).optional(),
  /** null: keep paths however long they go unused. */
  retentionSeconds: z
    .number()
    .int()
    .min(60)
    .max(100 * 365 * 86_400)
    .nullable()
    .optional(),
  /** null: no quota. */
  maxSize: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
});
export type UpdateCacheRequest = z.input<typeof updateCacheSchema>;

export const pinInfoSchema = z.object({
  name: z.string(),
  storePath: z.string(),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
});
export type PinInfo = z.infer<typeof pinInfoSchema>;
export const pinListSchema = z.object({ pins: z.array(pinInfoSchema) });

/** `PUT /api/v1/caches/<cache>/pins/<name>`: pin (or move the pin to) a path of the cache. */
export const putPinSchema = z.strictObject({
  storePath: z.string().min(1).max(512),
  /** ISO date; absent: the pin never expires. */
  expiresAt: z.iso.datetime({ offset: true }).optional(),
});
export type PutPinRequest = z.input<typeof putPinSchema>;

export const keyInfoSchema = z.object({
  name: z.string(),
  publicKey: z.string(),
  createdAt: z.string(),
  retiredAt: z.string().nullable(),
});
export type KeyInfo = z.infer<typeof keyInfoSchema>;
export const keyListSchema = z.object({ keys: z.array(keyInfoSchema) });

/** Either generate a key (optionally naming it) or import a secret key file's contents. */
export const addKeySchema = z.union([
  z.strictObject({ generate: z.literal(true), name: z.string().min(1).max(200).optional() }),
  z.strictObject({ secretKey: z.string().min(1).max(1000) }),
]);
export type AddKeyRequest = z.input<typeof addKeySchema>;

/** At most this many paths per "which are missing" request. */
export const MAX_MISSING_QUERY = 10_000;

export const missingRequestSchema = z.strictObject({
  /** Store paths, full (`/nix/store/<hash>-<name>`) or base names. */
  paths: z.array(z.string().max(512)).max(MAX_MISSING_QUERY),
});
export type MissingRequest = z.input<typeof missingRequestSchema>;
export const missingResponseSchema = z.object({
  /** The subset of the request's paths (as given) that the cache does not have. */
  missing: z.array(z.string()),
});
export type MissingResponse = z.infer<typeof missingResponseSchema>;

/**
 * `GET /api/v1/caches/<cache>/paths?name=…|hash=…&after=…&limit=…`: a page of the cache's paths, by hash
 * part (optionally those starting with `hash`) or by name (those starting with `name`), each page an index
 * range read on from `after`, the previous page's `next`. `limit` is 1 to 1000 (default 100).
 */
export const pathQuerySchema = z.strictObject({
  name: z.string().max(1000).optional(),
  hash: z.string().max(1000).optional(),
  after: z.string().max(1000).optional(),
  limit: z.coerce.number().int().default(100),
});
export type PathQuery = z.input<typeof pathQuerySchema>;
export const pathInfoSchema = z.object({
  storePath: z.string(),
  /** `sha256:<nix32>`, as in a narinfo. */
  narHash: z.string(),
  narSize: z.number().int(),
  /** The NAR file as served: its compression and size. */
  compression: z.string(),
  fileSize: z.number().int(),
  /** Base names (`<hash>-<name>`), as in a narinfo. */
  references: z.array(z.string()),
  deriver: z.string().nullable(),
  ca: z.string().nullable(),
  signatures: z.array(z.string()),
  createdAt: z.string(),
});
export type PathInfo = z.infer<typeof pathInfoSchema>;
export const pathListSchema = z.object({
  paths: z.array(pathInfoSchema),
  /** The `after` of the next page; null when this page is the last. */
  next: z.string().nullable(),
});
export type PathList = z.infer<typeof pathListSchema>;

/**
 * `PUT /api/v1/caches/<cache>/paths/<hash>` uploads a path in one request: the body is one line of JSON
 * (this shape, no raw newlines, at most MAX_UPLOAD_HEADER bytes) terminated by `\n`, followed by the NAR
 * compressed as `compression` says. The server verifies the NAR against narHash/narSize while it streams.
 */
export const UPLOAD_CONTENT_TYPE = 'application/vnd.niche.path-upload';
export const MAX_UPLOAD_HEADER = 1 << 20;

/**
 * A reference the cache need not hold because an upstream cache serves it: the path's signed fields and
 * signatures. The server accepts it in place of the path when a signature verifies with one of the
 * cache's upstream keys.
 */
export const upstreamReferenceSchema = z.strictObject({
  storePath: z.string().max(512),
  narHash: z.string().max(200),
  narSize: z.number().int().positive(),
  references: z.array(z.string().max(512)).max(100_000),
  signatures: z.array(z.string().max(1000)).min(1).max(100),
});
export type UpstreamReference = z.infer<typeof upstreamReferenceSchema>;

export const pathUploadSchema = z.strictObject({
  /** Full store path. */
  storePath: z.string().max(512),
  /** `sha256:<nix32|base16>` or SRI. */
  narHash: z.string().max(200),
  narSize: z.number().int().positive(),
  /** Base names. */
  references: z.array(z.string().max(512)).max(100_000),
  deriver: z.string().max(512).optional(),
  signatures: z.array(z.string().max(1000)).max(100).default([]),
  ca: z.string().max(500).optional(),
  compression: z.enum(['xz', 'zstd', 'br', 'none']),
  /** References signed upstream (see upstreamReferenceSchema), so they need not be pushed. */
  upstreamReferences: z.array(upstreamReferenceSchema).max(10_000).default([]),
});
export type PathUpload = z.input<typeof pathUploadSchema>;

export const pathUploadResultSchema = z.object({
  status: z.enum(['added', 'unchanged']),
  storePath: z.string(),
});
export type PathUploadResult = z.infer<typeof pathUploadResultSchema>;

export const tokenScopeSchema = z.strictObject({
  /** Cache name or pattern with `*` wildcards. */
  cache: z.string().min(1).max(63),
  permissions: z.array(permissionSchema).min(1),
});

export const tokenInfoSchema = z.object({
  id: z.number().int(),
  description: z.string(),
  scopes: z.array(tokenScopeSchema),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
});
export type TokenInfo = z.infer<typeof tokenInfoSchema>;
export const tokenListSchema = z.object({ tokens: z.array(tokenInfoSchema) });

export const createTokenSchema = z.strictObject({
  description: z.string().max(500).default(''),
  scopes: z.array(tokenScopeSchema).min(1).max(100),
  /** ISO date. */
  expiresAt: z.iso.datetime({ offset: true }).optional(),
});
export type CreateTokenRequest = z.input<typeof createTokenSchema>;
export const createTokenResponseSchema = z.object({ token: z.string(), info: tokenInfoSchema });

export const sshKeyInfoSchema = tokenInfoSchema.extend({
  /** `SHA256:…`, as `ssh-keygen -l` prints it. */
  fingerprint: z.string(),
  /** The OpenSSH public key line, without comment. */
  publicKey: z.string(),
});
export type SshKeyInfo = z.infer<typeof sshKeyInfoSchema>;
export const sshKeyListSchema = z.object({ sshKeys: z.array(sshKeyInfoSchema) });

export const addSshKeySchema = z.strictObject({
  /** The OpenSSH public key line (`ssh-ed25519 AAAA… comment`). */
  publicKey: z.string().min(1).max(8192),
  /** Defaults to the key's comment. */
  description: z.string().max(500).optional(),
  scopes: z.array(tokenScopeSchema).min(1).max(100),
  /** ISO date. */
  expiresAt: z.iso.datetime({ offset: true }).optional(),
});
export type AddSshKeyRequest = z.input<typeof addSshKeySchema>;

export const whoamiSchema = z.object({
  /** null when the request carried no valid token. */
  token: tokenInfoSchema.nullable(),
});
export type Whoami = z.infer<typeof whoamiSchema>;

export const apiErrorSchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });
