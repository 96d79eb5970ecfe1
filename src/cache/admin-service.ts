// Managing caches, their signing keys, tokens and SSH keys: the operations behind the admin parts of the JSON API,
// with their access rules. (The CLI runs the same storage operations directly against the data dir.)
import { hostname } from 'node:os';
import type {
  CacheChanges,
  CacheRecord,
  CacheUsage,
  MetadataStore,
  Permission,
  PinRecord,
  SigningKeyRecord,
  TokenRecord,
  TokenScope,
} from '../db/metadata-store.js';
import {
  ConflictError,
  ForbiddenError,
  InvalidInputError,
  NotFoundError,
  UnauthenticatedError,
} from '../errors.js';
import { PublicKey, SecretKey } from '../nix/signing.js';
import { DEFAULT_STORE_DIR } from '../nix/store-path.js';
import type { Principal } from './auth.js';
import { parseCacheName } from './cache-name.js';
import type { CacheService } from './cache-service.js';
import { pinPath, unpin } from './pins.js';
import { parseSshPublicKey } from './ssh-keys.js';
import {
  checkNewTokenExpiry,
  generateToken,
  hashToken,
  parseCachePattern,
  permissionsFor,
} from './tokens.js';

export const DEFAULT_PRIORITY = 40;
/** Paths signed by cache.nixos.org need not be pushed to a cache of ours. */
export const DEFAULT_UPSTREAM_KEYS: readonly string[] = [
  'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=',
];

/** `<host>-<cache>-<n>`: key names are lookup keys in nix.conf, so they should be unique per server. */
export function defaultKeyName(cacheName: string, n = 1, host: string = hostname()): string {
  const safeHost =
    host
      .toLowerCase()
      .replace(/[^a-z0-9.-]+/g, '-')
      .replace(/^[-.]+|[-.]+$/g, '') || 'niche';
  return `${safeHost}-${cacheName}-${n}`;
}

export function parseUpstreamKeys(keys: readonly string[]): string[] {
  return keys.map((key) => {
    try {
      return PublicKey.parse(key).toString();
    } catch (error) {
      throw new InvalidInputError(
        'KEY_INVALID',
        `invalid upstream key ${JSON.stringify(key.slice(0, 100))}`,
        {
          cause: error,
        },
      );
    }
  });
}

export interface NewCacheOptions {
  readonly name: string;
  readonly isPublic: boolean;
  readonly priority: number;
  readonly upstreamKeys?: readonly string[];
  /** The key to sign with; a new one is generated if absent. */
  readonly key?: SecretKey;
}

/** Creates a cache and its first signing key (used by the API, the CLI and the first start). */
export interface NewSshKey {
  /** The OpenSSH public key line (`ssh-ed25519 AAAA… comment`). */
  readonly publicKey: string;
  /** Defaults to the key's comment. */
  readonly description?: string | undefined;
  readonly scopes: readonly TokenScope[];
  readonly expiresAt: Date | undefined;
}

/**
 * Registers an SSH public key as a principal (the CLI and the API alike). Its token hash is that of a secret
 * nobody ever sees, so the record can never be used as a bearer token. A key that already has an unrevoked
 * record is refused: one key, one set of permissions.
 */
export async function registerSshKey(db: MetadataStore, request: NewSshKey, now: Date): Promise<TokenRecord> {
  const key = parseSshPublicKey(request.publicKey);
  checkNewTokenExpiry(request.expiresAt, now);
  if (request.scopes.length === 0) {
    throw new InvalidInputError('BAD_REQUEST', 'an SSH key needs at least one cache (or pattern)');
  }
  for (const scope of request.scopes) parseCachePattern(scope.cachePattern);
  const existing = await db.findTokenBySshKey(key.fingerprint);
  if (existing !== undefined) {
    throw new ConflictError(
      'SSH_KEY_EXISTS',
      `the SSH key ${key.fingerprint} is already registered (id ${existing.id}); remove it first to change it`,
    );
  }
  return db.createToken({
    description: request.description ?? key.comment,
    tokenHash: hashToken(generateToken()),
    scopes: request.scopes,
    expiresAt: request.expiresAt,
    sshKey: { fingerprint: key.fingerprint, publicKey: key.line },
  });
}

export async function createCacheWithKey(db: MetadataStore, options: NewCacheOptions): Promise<CacheRecord> {
  const name = parseCacheName(options.name);
  const key = options.key ?? SecretKey.generate(defaultKeyName(name));
  return db.createCache({
    name,
    isPublic: options.isPublic,
    priority: options.priority,
    storeDir: DEFAULT_STORE_DIR,
    upstreamKeys: parseUpstreamKeys(options.upstreamKeys ?? DEFAULT_UPSTREAM_KEYS),
    initialKey: { name: key.name, secretKey: key.toString(), publicKey: key.publicKey.toString() },
  });
}

/** Adds a signing key (generated, or imported from a secret key file's text) to a cache. */
export async function addCacheKey(
  db: MetadataStore,
  cache: CacheRecord,
  source: { readonly generate: true; readonly name?: string | undefined } | { readonly secretKey: string },
): Promise<SigningKeyRecord> {
  const existing = await db.listSigningKeys(cache.id);
  let key: SecretKey;
  if ('secretKey' in source) {
    key = SecretKey.parse(source.secretKey);
  } else {
    let name = source.name;
    for (let n = existing.length + 1; name === undefined; n += 1) {
      const candidate = defaultKeyName(cache.name, n);
      if (!existing.some((record) => record.name === candidate)) name = candidate;
    }
    key = SecretKey.generate(name);
  }
  if (existing.some((record) => record.name === key.name)) {
    throw new ConflictError('KEY_EXISTS', `cache ${cache.name} already has a key named ${key.name}`);
  }
  return db.addSigningKey(cache.id, {
    name: key.name,
    secretKey: key.toString(),
    publicKey: key.publicKey.toString(),
  });
}

/** Retires a key; the last active key cannot be retired (nothing would sign new paths). */
export async function retireCacheKey(db: MetadataStore, cache: CacheRecord, name: string): Promise<void> {
  const keys = await db.listSigningKeys(cache.id);
  const active = keys.filter((key) => key.retiredAt === undefined);
  if (!active.some((key) => key.name === name)) {
    throw new NotFoundError('NOT_FOUND', `cache ${cache.name} has no active key named ${name}`);
  }
  if (active.length === 1) {
    throw new ConflictError(
      'KEY_EXISTS',
      `${name} is the only active key of cache ${cache.name}; add another first`,
    );
  }
  await db.retireSigningKey(cache.id, name, new Date());
}

/** Checks a permission on a cache name without looking the cache up (for creating caches, tokens). */
export function requirePermission(principal: Principal, cacheName: string, needed: Permission): void {
  if (principal.kind === 'anonymous') {
    throw new UnauthenticatedError('TOKEN_MISSING', `authentication required (${needed})`);
  }
  if (principal.kind === 'invalid') {
    throw new UnauthenticatedError('TOKEN_INVALID', `invalid credentials: ${principal.reason}`);
  }
  if (!permissionsFor(principal.token.scopes, cacheName).has(needed)) {
    throw new ForbiddenError(`this token lacks the ${needed} permission on ${cacheName}`);
  }
}

/** Server-wide administration (tokens, metrics) needs server-admin on every cache, i.e. on the pattern `*`. */
export function requireServerAdmin(principal: Principal, what = 'managing tokens'): void {
  if (principal.kind === 'token' && !principal.token.scopes.some((scope) => scope.cachePattern === '*')) {
    throw new ForbiddenError(`${what} needs the server-admin permission on the cache pattern *`);
  }
  requirePermission(principal, '*', 'server-admin');
}

export class AdminService {
  readonly #db: MetadataStore;
  readonly #caches: CacheService;

  constructor(db: MetadataStore, caches: CacheService) {
    this.#db = db;
    this.#caches = caches;
  }

  /** Public caches and those the token has any permission on. */
  async visibleCaches(principal: Principal): Promise<CacheRecord[]> {
    const all = await this.#db.listCaches();
    return all.filter(
      (cache) =>
        cache.isPublic ||
        (principal.kind === 'token' && permissionsFor(principal.token.scopes, cache.name).size > 0),
    );
  }

  async createCache(
    principal: Principal,
    request: {
      name: string;
      isPublic: boolean;
      priority: number;
      upstreamKeys?: readonly string[] | undefined;
    },
  ): Promise<CacheRecord> {
    const name = parseCacheName(request.name);
    requirePermission(principal, name, 'server-admin');
    const cache = await createCacheWithKey(this.#db, {
      name,
      isPublic: request.isPublic,
      priority: request.priority,
      ...(request.upstreamKeys === undefined ? {} : { upstreamKeys: request.upstreamKeys }),
    });
    this.#caches.forgetCacheRecord(name);
    return cache;
  }

  async updateCache(principal: Principal, name: string, changes: CacheChanges): Promise<CacheRecord> {
    const cache = await this.#caches.open(name, principal, 'cache-admin');
    const updated = await this.#db.updateCache(cache.id, {
      ...changes,
      ...(changes.upstreamKeys === undefined
        ? {}
        : { upstreamKeys: parseUpstreamKeys(changes.upstreamKeys) }),
    });
    this.#caches.forgetCacheRecord(name);
    return updated;
  }

  async deleteCache(principal: Principal, name: string): Promise<void> {
    const cache = await this.#caches.open(name, principal, 'server-admin');
    await this.#caches.deleteCache(cache);
  }

  usage(cache: CacheRecord): Promise<CacheUsage> {
    return this.#db.getCacheUsage(cache.id);
  }

  /** The cache's pins: anyone who may pull may see them. */
  async pins(principal: Principal, name: string): Promise<PinRecord[]> {
    const cache = await this.#caches.open(name, principal, 'pull');
    return this.#db.listPins(cache.id);
  }

  /** Pins (or moves a pin to) a path of the cache: cache-admin, since a pin overrides retention and quota. */
  async putPin(
    principal: Principal,
    name: string,
    request: { readonly name: string; readonly storePath: string; readonly expiresAt?: Date | undefined },
  ): Promise<PinRecord> {
    const cache = await this.#caches.open(name, principal, 'cache-admin');
    return pinPath(this.#db, cache, request, new Date());
  }

  async removePin(principal: Principal, name: string, pinName: string): Promise<void> {
    const cache = await this.#caches.open(name, principal, 'cache-admin');
    await unpin(this.#db, cache, pinName);
  }

  async keys(principal: Principal, name: string): Promise<SigningKeyRecord[]> {
    const cache = await this.#caches.open(name, principal, 'cache-admin');
    return this.#db.listSigningKeys(cache.id);
  }

  async addKey(
    principal: Principal,
    name: string,
    source: { readonly generate: true; readonly name?: string | undefined } | { readonly secretKey: string },
  ): Promise<SigningKeyRecord> {
    const cache = await this.#caches.open(name, principal, 'cache-admin');
    const key = await addCacheKey(this.#db, cache, source);
    this.#caches.forgetKeys(cache.id);
    return key;
  }

  async retireKey(principal: Principal, name: string, keyName: string): Promise<SigningKeyRecord> {
    const cache = await this.#caches.open(name, principal, 'cache-admin');
    await retireCacheKey(this.#db, cache, keyName);
    this.#caches.forgetKeys(cache.id);
    const key = (await this.#db.listSigningKeys(cache.id)).find((record) => record.name === keyName);
    if (key === undefined) throw new NotFoundError('NOT_FOUND', `cache ${name} has no key named ${keyName}`);
    return key;
  }

  async tokens(principal: Principal): Promise<TokenRecord[]> {
    requireServerAdmin(principal);
    return (await this.#db.listTokens()).filter((token) => token.sshKey === undefined);
  }

  async sshKeys(principal: Principal): Promise<TokenRecord[]> {
    requireServerAdmin(principal);
    return (await this.#db.listTokens()).filter((token) => token.sshKey !== undefined);
  }

  async addSshKey(principal: Principal, request: NewSshKey): Promise<TokenRecord> {
    requireServerAdmin(principal);
    return registerSshKey(this.#db, request, new Date());
  }

  /** Revokes an SSH key by id; sessions of the key end within seconds (src/ssh/session.ts). */
  async removeSshKey(principal: Principal, id: number): Promise<void> {
    requireServerAdmin(principal);
    const key = (await this.#db.listTokens()).find((token) => token.id === id && token.sshKey !== undefined);
    if (key === undefined || !(await this.#db.revokeToken(id, new Date()))) {
      throw new NotFoundError('NOT_FOUND', `no registered SSH key with id ${id}`);
    }
  }

  async createToken(
    principal: Principal,
    request: { description: string; scopes: readonly TokenScope[]; expiresAt: Date | undefined },
  ): Promise<{ secret: string; record: TokenRecord }> {
    requireServerAdmin(principal);
    checkNewTokenExpiry(request.expiresAt, new Date());
    for (const scope of request.scopes) parseCachePattern(scope.cachePattern);
    const secret = generateToken();
    const record = await this.#db.createToken({
      description: request.description,
      tokenHash: hashToken(secret),
      scopes: request.scopes,
      expiresAt: request.expiresAt,
    });
    return { secret, record };
  }

  async revokeToken(principal: Principal, id: number): Promise<void> {
    requireServerAdmin(principal);
    const token = (await this.#db.listTokens()).find((record) => record.id === id);
    if (token?.sshKey !== undefined || !(await this.#db.revokeToken(id, new Date()))) {
      throw new NotFoundError('NOT_FOUND', `no active token with id ${id}`);
    }
  }
}
