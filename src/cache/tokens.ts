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

/** Longest cache pattern: a cache name's length (patterns name caches). */
export const MAX_PATTERN_LENGTH = 63;
/** Most `*` in a pattern: `team-*`, `*-ci`, `team-*-ci` need one or two; more only costs matching time. */
export const MAX_PATTERN_STARS = 4;
/** What a cache name may contain, plus `*`. */
const PATTERN_CHARS = /^[a-z0-9*-]+$/;

/** Why `pattern` is not an acceptable cache pattern, or undefined if it is. */
function patternProblem(pattern: string): string | undefined {
  if (pattern.length === 0) return 'it is empty';
  if (pattern.length > MAX_PATTERN_LENGTH) return `it is longer than ${MAX_PATTERN_LENGTH} characters`;
  if (!PATTERN_CHARS.test(pattern)) return 'use lower-case letters, digits, dashes and * only';
  if (pattern.startsWith('-')) return 'it starts with a dash';
  let stars = 0;
  for (const char of pattern) if (char === '*') stars += 1;
  if (stars > MAX_PATTERN_STARS) return `it has more than ${MAX_PATTERN_STARS} *`;
  return undefined;
}

/**
 * Checks a cache name or pattern given for a new token scope (API and CLI alike); throws
 * CACHE_NAME_INVALID with the reason.
 */
export function parseCachePattern(pattern: string): string {
  const problem = patternProblem(pattern);
  if (problem !== undefined) {
    throw new InvalidInputError(
      'CACHE_NAME_INVALID',
      `invalid cache name or pattern ${JSON.stringify(pattern.slice(0, 80))}: ${problem}`,
    );
  }
  return pattern;
}

/**
 * Whether a token scope's pattern covers the cache `cacheName`. A stored pattern outside the bounds
 * parseCachePattern enforces (written before they existed, or straight into the database) matches nothing.
 */
export function cachePatternMatches(pattern: string, cacheName: string): boolean {
  if (!pattern.includes('*')) return pattern === cacheName;
  return patternProblem(pattern) === undefined && globMatches(pattern, cacheName);
}

/**
 * `*` matches any run of characters, everything else itself. Linear in the text for a given pattern, with
 * no backtracking: the part before the first `*` must be a prefix and the part after the last a suffix;
 * each part in between is taken at its leftmost place after the previous one, which is never worse than
 * any later place. (A regular expression built from the pattern backtracks exponentially in the number of
 * `*` on a near miss.)
 */
export function globMatches(pattern: string, text: string): boolean {
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === text;
  const head = parts[0] ?? '';
  const tail = parts[parts.length - 1] ?? '';
  if (head.length + tail.length > text.length || !text.startsWith(head) || !text.endsWith(tail)) {
    return false;
  }
  let at = head.length;
  const end = text.length - tail.length;
  for (let index = 1; index < parts.length - 1; index += 1) {
    const part = parts[index] ?? '';
    if (part === '') continue;
    const found = text.indexOf(part, at);
    if (found === -1 || found + part.length > end) return false;
    at = found + part.length;
  }
  return true;
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
