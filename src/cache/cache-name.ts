// Cache names appear in URLs (`/<cache>/…`), nix.conf and token patterns, so they follow one strict
// grammar: lower-case letters, digits and single dashes, 1-63 characters, starting with a letter or digit.
// Validated once at the edge; a CacheName is never re-checked.
import { InvalidInputError } from '../errors.js';

export type CacheName = string & { readonly __brand: 'CacheName' };

const CACHE_NAME = /^[a-z0-9](?:[a-z0-9]|-(?!-)){0,62}$/;
/** First path segments that belong to niche itself. */
const RESERVED = new Set([
  'api',
  'nar',
  'static',
  'metrics',
  'health',
  'healthz',
  'readyz',
  'ui',
  'favicon.ico',
  'nix-cache-info',
  'local', // the local store's default mount (src/localstore)
]);

export function isCacheName(text: string): text is CacheName {
  return CACHE_NAME.test(text) && !text.endsWith('-') && !RESERVED.has(text);
}

export function parseCacheName(text: string): CacheName {
  if (!isCacheName(text)) {
    throw new InvalidInputError(
      'CACHE_NAME_INVALID',
      `invalid cache name ${JSON.stringify(text.slice(0, 80))}: use 1-63 lower-case letters, digits and single dashes, ` +
        `starting and ending with a letter or digit (not one of: ${[...RESERVED].join(', ')})`,
    );
  }
  return text;
}
