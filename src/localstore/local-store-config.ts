// The settings of the local-store mount (serving the host's own /nix/store), with their defaults and the
// schema that validates them. src/config.ts gathers the raw values from flags and the environment and
// validates them with this schema, so every problem is reported together with the rest of the config.
import { posix } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../errors.js';

export interface LocalStoreConfig {
  /** URL prefix of the mount, e.g. `/local` (no trailing slash). */
  readonly mountPath: string;
  /** Whether the store is also served at `/` (`/nix-cache-info`, `/<hash>.narinfo`, `/nar/…`). */
  readonly mountAtRoot: boolean;
  /** The store directory, as recorded in the Nix database. */
  readonly storeDir: string;
  /** The Nix database (`db.sqlite`), opened read-only. */
  readonly nixDb: string;
  /** Nix's log directory; build logs are in `<logDir>/drvs/<xx>/<rest>[.bz2]`. */
  readonly logDir: string;
  /** Secret key files to sign narinfos with; empty = a key generated into the data directory. */
  readonly keyFiles: readonly string[];
}

export const LOCAL_STORE_DEFAULTS = Object.freeze({
  mountPath: '/local',
  storeDir: '/nix/store',
  nixDb: '/nix/var/nix/db/db.sqlite',
  logDir: '/nix/var/log/nix',
});

/** First path segments that belong to niche's own routes (a mount there would shadow them). */
const TAKEN_FIRST_SEGMENTS = new Set(['api', 'nar', 'log', 'serve', 'nix-cache-info', 'realisations']);

/** Why `path` cannot be a mount path, or undefined if it can. */
export function mountPathProblem(path: string): string | undefined {
  if (!/^(?:\/[a-z0-9][a-z0-9._-]*)+$/.test(path)) {
    return 'expected a URL path such as /local: lower-case letters, digits, ".", "_" and "-", no trailing slash';
  }
  const first = path.split('/')[1] ?? '';
  if (TAKEN_FIRST_SEGMENTS.has(first)) return `/${first} is used by niche itself`;
  return undefined;
}

const booleanish = z.union([z.boolean(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'boolean') return value;
  const text = value.trim().toLowerCase();
  if (['1', 'true', 'yes'].includes(text)) return true;
  if (['', '0', 'false', 'no'].includes(text)) return false;
  ctx.addIssue({ code: 'custom', message: `expected 1 or 0, got ${JSON.stringify(value)}` });
  return z.NEVER;
});

const absoluteDir = z
  .string()
  .refine(
    (dir) => dir.startsWith('/') && dir.length > 1 && posix.normalize(dir) === dir && !dir.endsWith('/'),
    'expected an absolute, normalised directory without a trailing slash, e.g. /nix/store',
  );

/** Raw values as gathered from flags and environment (undefined = not given). */
export const localStoreSchema = z
  .strictObject({
    enabled: booleanish.optional(),
    root: booleanish.optional(),
    mountPath: z
      .string()
      .superRefine((path, ctx) => {
        const problem = mountPathProblem(path);
        if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
      })
      .optional(),
    storeDir: absoluteDir.optional(),
    nixDb: z.string().min(1).optional(),
    logDir: z.string().min(1).optional(),
    keyFiles: z.array(z.string().min(1, 'empty key file name')).optional(),
  })
  .transform((raw, ctx): LocalStoreConfig | undefined => {
    // --local-store-root alone is enough: a root mount implies the mount.
    const enabled = raw.enabled === true || raw.root === true;
    if (!enabled) {
      const given = (['mountPath', 'storeDir', 'nixDb', 'logDir', 'keyFiles'] as const).filter(
        (key) => raw[key] !== undefined,
      );
      for (const key of given) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: 'only applies to the local store: add --local-store (NICHE_LOCAL_STORE=1)',
        });
      }
      return undefined;
    }
    return Object.freeze({
      mountPath: raw.mountPath ?? LOCAL_STORE_DEFAULTS.mountPath,
      mountAtRoot: raw.root === true,
      storeDir: raw.storeDir ?? LOCAL_STORE_DEFAULTS.storeDir,
      nixDb: raw.nixDb ?? LOCAL_STORE_DEFAULTS.nixDb,
      logDir: raw.logDir ?? LOCAL_STORE_DEFAULTS.logDir,
      keyFiles: Object.freeze([...(raw.keyFiles ?? [])]),
    });
  });

/**
 * The mount's first segment must not be a cache's name, or the mount would hide that cache. `local` is a
 * reserved cache name; a custom mount path is checked against the caches that exist at start-up.
 */
export function checkMountPath(config: LocalStoreConfig, cacheNames: readonly string[]): void {
  const first = config.mountPath.split('/')[1] ?? '';
  if (cacheNames.includes(first)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `the local store mount ${config.mountPath} would hide the cache "${first}"; choose another --local-store-path`,
    );
  }
}
