// Push/pull tokens: random secrets shown once, stored only as SHA-256 hashes, and the scope rules that
// turn a token into permissions on a cache. A token may carry several scopes (cache-name patterns with
// `*` wildcards); when several match a cache, the permissions are the union.
import { createHash, randomBytes } from 'node:crypto';
import type { Permission, TokenRecord, TokenScope } from '../db/metadata-store.js';
import { InvalidInputError } from '../errors.js';

const TOKEN_PREFIX = 'nch_';

/** 256 bits of randomness; plain SHA-256 is enough to store it (no password-style stretching needed). */
export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Cheap shape check so garbage never reaches the database. */
export function looksLikeToken(text: string): boolean {
  return text.length > TOKEN_PREFIX.length && text.length <= 128 && /^[A-Za-z0-9_-]+$/.test(text);
}

const patternCache = new Map<string, RegExp>();

export function cachePatternMatches(pattern: string, cacheName: string): boolean {
  if (!pattern.includes('*')) return pattern === cacheName;
  let regex = patternCache.get(pattern);
  if (regex === undefined) {
    const source = pattern
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*');
    regex = new RegExp(`^${source}$`);
    if (patternCache.size > 1000) patternCache.clear();
    patternCache.set(pattern, regex);
  }
  return regex.test(cacheName);
}

export function permissionsFor(scopes: readonly TokenScope[], cacheName: string): Set<Permission> {
  const granted = new Set<Permission>();
  for (const scope of scopes) {
    if (cachePatternMatches(scope.cachePattern, cacheName)) {
      for (const permission of scope.permissions) granted.add(permission);
    }
  }
  return granted;
}

export function tokenIsActive(token: TokenRecord, now: Date): boolean {
  if (token.revokedAt !== undefined) return false;
  return token.expiresAt === undefined || token.expiresAt.getTime() > now.getTime();
}

/**
 * Refuses an expiry that is not in the future: such a token would be refused everywhere from the start,
 * which is never what the operator meant (a typo in the year, a date read as past).
 */
export function checkNewTokenExpiry(expiresAt: Date | undefined, now: Date): void {
  if (expiresAt !== undefined && expiresAt.getTime() <= now.getTime()) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `the expiry ${expiresAt.toISOString()} is not in the future (it is now ${now.toISOString()}): ` +
        'the token would never work',
    );
  }
}
