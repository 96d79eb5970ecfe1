// The `nix-cache-info` file (PROTOCOL.md §5): the first thing every client fetches from a cache. It says
// which store directory the cache is for, whether bulk queries are welcome, and its priority.

import { NixFormatError } from '../errors.js';

export interface CacheInfo {
  readonly storeDir: string;
  readonly wantMassQuery: boolean;
  readonly priority: number;
}

/** What a parsed file says; a field is undefined when its line is absent. */
export interface ParsedCacheInfo {
  readonly storeDir: string | undefined;
  readonly wantMassQuery: boolean | undefined;
  readonly priority: number | undefined;
}

/** `StoreDir`, `WantMassQuery` (1 or 0) and `Priority` lines, each ending in "\n". */
export function formatCacheInfo(info: CacheInfo): string {
  if (!Number.isSafeInteger(info.priority)) {
    throw new NixFormatError('CACHE_INFO_INVALID', `priority must be an integer, got ${info.priority}`);
  }
  if (!info.storeDir.startsWith('/') || /[\n\r]/.test(info.storeDir)) {
    throw new NixFormatError(
      'CACHE_INFO_INVALID',
      `invalid store directory ${JSON.stringify(info.storeDir)}`,
    );
  }
  return `StoreDir: ${info.storeDir}\nWantMassQuery: ${info.wantMassQuery ? 1 : 0}\nPriority: ${info.priority}\n`;
}

/**
 * Reads the file the way Nix does: lines without ":" and unknown keys are skipped, values are trimmed,
 * `WantMassQuery` is true only for "1". A `Priority` that is not an integer is an error (CACHE_INFO_INVALID),
 * where Nix's std::stoi would read a leading number and throw on none.
 */
export function parseCacheInfo(text: string): ParsedCacheInfo {
  let storeDir: string | undefined;
  let wantMassQuery: boolean | undefined;
  let priority: number | undefined;
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const key = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (key === 'StoreDir') {
      storeDir = value;
    } else if (key === 'WantMassQuery') {
      wantMassQuery = value === '1';
    } else if (key === 'Priority') {
      if (!/^[+-]?[0-9]+$/.test(value) || !Number.isSafeInteger(Number(value))) {
        throw new NixFormatError(
          'CACHE_INFO_INVALID',
          `nix-cache-info Priority is not an integer: ${JSON.stringify(value)}`,
        );
      }
      priority = Number(value);
    }
  }
  return { storeDir, wantMassQuery, priority };
}
