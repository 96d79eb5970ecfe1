// Who is asking, and may they? Credentials arrive as HTTP Basic (the password is the token: that is what
// Nix sends from netrc) or as `Authorization: Bearer <token>`. Authentication only resolves a principal;
// the access rules live in `authorize`, one function for every front end.
import { ForbiddenError, NotFoundError, UnauthenticatedError } from '../errors.js';
import type { CacheRecord, MetadataStore, Permission, TokenRecord } from '../db/metadata-store.js';
import { sshKeyFingerprint } from './ssh-keys.js';
import { hashToken, looksLikeToken, permissionsFor, tokenIsActive } from './tokens.js';

export type Principal =
  | { readonly kind: 'anonymous' }
  /** Credentials were sent but are malformed, unknown, revoked or expired. */
  | { readonly kind: 'invalid'; readonly reason: string }
  | { readonly kind: 'token'; readonly token: TokenRecord };

export const ANONYMOUS: Principal = { kind: 'anonymous' };

/** The secret from an Authorization header, undefined if there is none, or an error string. */
export function tokenFromAuthorization(header: string | undefined): { token?: string; error?: string } {
  if (header === undefined || header === '') return {};
  const space = header.indexOf(' ');
  const scheme = (space === -1 ? header : header.slice(0, space)).toLowerCase();
  const value = space === -1 ? '' : header.slice(space + 1).trim();
  if (scheme === 'bearer')
    return looksLikeToken(value) ? { token: value } : { error: 'malformed bearer token' };
  if (scheme === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon === -1) return { error: 'malformed basic credentials' };
    const password = decoded.slice(colon + 1);
    return looksLikeToken(password)
      ? { token: password }
      : { error: 'the basic-auth password is not a niche token' };
  }
  return { error: `unsupported authorization scheme ${JSON.stringify(scheme.slice(0, 20))}` };
}

export class Authenticator {
  readonly #db: MetadataStore;
  readonly #now: () => Date;

  constructor(db: MetadataStore, now: () => Date = () => new Date()) {
    this.#db = db;
    this.#now = now;
  }

  async authenticate(authorization: string | undefined): Promise<Principal> {
    const { token, error } = tokenFromAuthorization(authorization);
    if (error !== undefined) return { kind: 'invalid', reason: error };
    if (token === undefined) return ANONYMOUS;
    const record = await this.#db.findTokenByHash(hashToken(token));
    if (record === undefined) return { kind: 'invalid', reason: 'unknown token' };
    if (!tokenIsActive(record, this.#now())) {
      return { kind: 'invalid', reason: record.revokedAt === undefined ? 'token expired' : 'token revoked' };
    }
    return { kind: 'token', token: record };
  }

  /**
   * The principal of an SSH public key (its blob, as the SSH protocol carries it), registered with
   * `niche ssh-key add`. The front end has checked that the client holds the private key.
   */
  async authenticateSshKey(keyBlob: Buffer): Promise<Principal> {
    const record = await this.#db.findTokenBySshKey(sshKeyFingerprint(keyBlob));
    if (record === undefined) return { kind: 'invalid', reason: 'unknown SSH key' };
    if (!tokenIsActive(record, this.#now())) return { kind: 'invalid', reason: 'SSH key expired' };
    return { kind: 'token', token: record };
  }
}

/** How a principal is named in messages: a token, or an SSH key. */
export function principalNoun(principal: Principal): string {
  return principal.kind === 'token' && principal.token.sshKey !== undefined ? 'SSH key' : 'token';
}

/**
 * Decides access to a cache (undefined = no cache of that name). Returns the cache or throws:
 * - public caches are readable by anyone (even with bad credentials, since Nix sends netrc credentials
 *   on every request and a stale token must not hide a public cache);
 * - without valid credentials, anything else is 401, whether or not the cache exists;
 * - a token without any right on the cache gets 404, so it cannot learn whether the cache exists;
 * - a token with some right but not the one needed gets 403.
 */
export function authorize(
  cache: CacheRecord | undefined,
  cacheName: string,
  principal: Principal,
  needed: Permission,
): CacheRecord {
  if (cache !== undefined && needed === 'pull' && cache.isPublic) return cache;
  if (principal.kind === 'anonymous') {
    throw new UnauthenticatedError(
      'TOKEN_MISSING',
      `authentication required for ${needed} on cache ${cacheName}`,
    );
  }
  if (principal.kind === 'invalid') {
    throw new UnauthenticatedError('TOKEN_INVALID', `invalid credentials: ${principal.reason}`);
  }
  const granted = permissionsFor(principal.token.scopes, cacheName);
  const visible = cache !== undefined && (cache.isPublic || granted.size > 0);
  if (!visible) throw new NotFoundError('CACHE_NOT_FOUND', `no cache named ${cacheName}`);
  if (!granted.has(needed)) {
    throw new ForbiddenError(
      `this ${principalNoun(principal)} lacks the ${needed} permission on cache ${cacheName}`,
    );
  }
  return cache;
}
