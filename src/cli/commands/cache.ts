// `niche cache create|update|delete|list|show|paths`: manage caches directly in the data directory (operator side).
import type { Command } from 'commander';
import { openStores } from '../../app/data-dir.js';
import { createCacheWithKey, DEFAULT_PRIORITY, parseUpstreamKeys } from '../../cache/admin-service.js';
import { CONFIG_OPTION_HELP, DATA_OPTION_HELP, requireCache, withMetadata } from '../backends.js';
import { parseCacheName } from '../../cache/cache-name.js';
import { MAX_PATH_PAGE, pathPage } from '../../cache/path-pages.js';
import { loadServeConfig, parseDuration, parseSize } from '../../config.js';
import { InvalidInputError } from '../../errors.js';
import { print, type CliIo } from '../io.js';
import { formatBytes } from './gc.js';

export function registerCache(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const cache = program.command('cache').description('manage caches');

  cache
    .command('create')
    .description('create a cache with a new signing key and print its public key')
    .argument('<name>', 'cache name: lower-case letters, digits and dashes')
    .option('--private', 'reads need a token with pull permission')
    .option(
      '--priority <n>',
      'substituter priority advertised to Nix (lower is tried first)',
      String(DEFAULT_PRIORITY),
    )
    .option('--upstream-key <key...>', 'public keys of upstream caches (default: cache.nixos.org-1)')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action(
      (
        name: string,
        options: {
          private?: boolean;
          priority: string;
          upstreamKey?: string[];
          data?: string;
          config?: string;
        },
      ) =>
        run(async () => {
          const cacheName = parseCacheName(name);
          if (!/^\d{1,4}$/.test(options.priority)) {
            throw new InvalidInputError(
              'BAD_REQUEST',
              `invalid priority ${JSON.stringify(options.priority)}`,
            );
          }
          await withMetadata(io, options, async (db) => {
            const created = await createCacheWithKey(db, {
              name: cacheName,
              isPublic: options.private !== true,
              priority: Number(options.priority),
              ...(options.upstreamKey === undefined ? {} : { upstreamKeys: options.upstreamKey }),
            });
            const keys = await db.listSigningKeys(created.id);
            print(io.stdout, keys.map((key) => key.publicKey).join('\n'));
          });
          return 0;
        }),
    );

  cache
    .command('update')
    .description('change the visibility, priority or upstream keys of a cache')
    .argument('<name>')
    .option('--public', 'anyone may read')
    .option('--private', 'reads need a token with pull permission')
    .option('--priority <n>', 'substituter priority advertised to Nix (lower is tried first)')
    .option(
      '--upstream-key <key...>',
      'public keys of upstream caches whose paths need not be pushed (replaces the list)',
    )
    .option('--no-upstream-keys', 'clear the upstream keys')
    .option(
      '--retention <duration>',
      "collect paths not downloaded or pushed for this long (30d, 12h, …; 'none': keep them)",
    )
    .option('--max-size <size>', "collect least recently used paths above this size (200G, …; 'none')")
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action(
      (
        name: string,
        options: {
          public?: boolean;
          private?: boolean;
          priority?: string;
          upstreamKey?: string[];
          upstreamKeys?: boolean;
          retention?: string;
          maxSize?: string;
          data?: string;
          config?: string;
        },
      ) =>
        run(async () => {
          const retentionMs = parsePolicy(options.retention, '--retention', parseDuration, 60_000);
          const maxSize = parsePolicy(options.maxSize, '--max-size', parseSize, 1);
          if (options.public === true && options.private === true) {
            throw new InvalidInputError('BAD_REQUEST', '--public and --private contradict each other');
          }
          if (options.priority !== undefined && !/^\d{1,4}$/.test(options.priority)) {
            throw new InvalidInputError(
              'BAD_REQUEST',
              `invalid priority ${JSON.stringify(options.priority)}`,
            );
          }
          const upstreamKeys =
            options.upstreamKeys === false
              ? []
              : options.upstreamKey === undefined
                ? undefined
                : parseUpstreamKeys(options.upstreamKey);
          await withMetadata(io, options, async (db) => {
            const record = await requireCache(db, name);
            const updated = await db.updateCache(record.id, {
              ...(options.public === true
                ? { isPublic: true }
                : options.private === true
                  ? { isPublic: false }
                  : {}),
              ...(options.priority === undefined ? {} : { priority: Number(options.priority) }),
              ...(upstreamKeys === undefined ? {} : { upstreamKeys }),
              ...(retentionMs === undefined ? {} : { retentionMs }),
              ...(maxSize === undefined ? {} : { maxSize }),
            });
            print(
              io.stdout,
              `${updated.name}\t${updated.isPublic ? 'public' : 'private'}\tpriority ${updated.priority}` +
                `\tretention ${describeRetention(updated.retentionMs)}\tmax-size ${describeMaxSize(updated.maxSize)}`,
            );
          });
          return 0;
        }),
    );

  cache
    .command('delete')
    .description('delete a cache with all its paths and keys (reports only, unless --yes)')
    .argument('<name>')
    .option('--yes', 'really delete')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((name: string, options: { yes?: boolean; data?: string; config?: string }) =>
      run(async () => {
        // The blob store too: the cache's build logs are deleted with it.
        const config = loadServeConfig({ data: options.data, config: options.config }, io.env);
        const stores = await openStores(config);
        try {
          const { db } = stores;
          const record = await requireCache(db, name);
          const { paths } = await db.getCacheUsage(record.id);
          if (options.yes !== true) {
            print(io.stderr, `would delete cache ${name} with ${paths} paths; run again with --yes to do it`);
            return 0;
          }
          // Loaded only here: the service and logger are not needed by the other cache commands.
          const [{ CacheService }, { pino }] = await Promise.all([
            import('../../cache/cache-service.js'),
            import('pino'),
          ]);
          const service = new CacheService({
            db,
            blobs: stores.blobs,
            logger: pino({ level: 'warn' }, io.stderr),
            limits: config.limits,
          });
          await service.deleteCache(record);
          print(
            io.stderr,
            `deleted cache ${name} (${paths} paths, and its build logs); unreferenced NAR files are removed by GC`,
          );
        } finally {
          await stores.db.close();
          await stores.blobs.close();
        }
        return 0;
      }),
    );

  cache
    .command('list')
    .description('list caches')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: { data?: string; config?: string }) =>
      run(async () => {
        await withMetadata(io, options, async (db) => {
          for (const record of await db.listCaches()) {
            const usage = await db.getCacheUsage(record.id);
            print(
              io.stdout,
              `${record.name}\t${record.isPublic ? 'public' : 'private'}\tpriority ${record.priority}` +
                `\t${usage.paths} paths\t${formatBytes(usage.storedBytes)}`,
            );
          }
        });
        return 0;
      }),
    );

  cache
    .command('show')
    .description('show a cache and its public keys')
    .argument('<name>')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((name: string, options: { data?: string; config?: string }) =>
      run(async () => {
        await withMetadata(io, options, async (db) => {
          const record = await requireCache(db, name);
          const keys = await db.listSigningKeys(record.id);
          const usage = await db.getCacheUsage(record.id);
          print(
            io.stdout,
            [
              `name: ${record.name}`,
              `visibility: ${record.isPublic ? 'public' : 'private'}`,
              `priority: ${record.priority}`,
              `store-dir: ${record.storeDir}`,
              `paths: ${usage.paths}`,
              `nar-bytes: ${usage.narBytes} (${formatBytes(usage.narBytes)})`,
              `stored-bytes: ${usage.storedBytes} (${formatBytes(usage.storedBytes)})`,
              `last-push: ${usage.lastPushAt?.toISOString() ?? 'never'}`,
              `retention: ${describeRetention(record.retentionMs)}`,
              `max-size: ${describeMaxSize(record.maxSize)}`,
              ...record.upstreamKeys.map((key) => `upstream-key: ${key}`),
              ...keys.map(
                (key) => `public-key: ${key.publicKey}${key.retiredAt === undefined ? '' : ' (retired)'}`,
              ),
            ].join('\n'),
          );
        });
        return 0;
      }),
    );

  cache
    .command('paths')
    .description("list a cache's store paths, by hash or by name, one per line")
    .argument('<name>')
    .option('--name <prefix>', 'only paths whose name (after <hash>-) starts with this; sorts by name')
    .option('--hash <prefix>', 'only paths whose hash part starts with this')
    .option('--limit <n>', 'print at most this many (default: all)')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action(
      (
        name: string,
        options: { name?: string; hash?: string; limit?: string; data?: string; config?: string },
      ) =>
        run(async () => {
          const limit = options.limit === undefined ? Infinity : parseCount(options.limit, '--limit');
          await withMetadata(io, options, async (db) => {
            const record = await requireCache(db, name);
            let printed = 0;
            let after: string | undefined;
            while (printed < limit) {
              const page = await pathPage(db, record, {
                name: options.name,
                hash: options.hash,
                after,
                limit: Math.min(MAX_PATH_PAGE, limit - printed),
              });
              if (page.paths.length > 0) {
                print(io.stdout, page.paths.map((entry) => entry.path.storePath).join('\n'));
              }
              printed += page.paths.length;
              if (page.next === undefined) break;
              after = page.next;
            }
          });
          return 0;
        }),
    );
}

function parseCount(text: string, flag: string): number {
  const value = /^[0-9]{1,15}$/.test(text) ? Number(text) : NaN;
  if (!(value >= 1)) throw new InvalidInputError('BAD_REQUEST', `${flag}: expected a positive integer`);
  return value;
}

/** A policy flag: 'none' clears it (null), anything else is parsed; undefined when not given. */
function parsePolicy(
  text: string | undefined,
  flag: string,
  parse: (text: string) => number,
  minimum: number,
): number | null | undefined {
  if (text === undefined) return undefined;
  if (text === 'none') return null;
  let value: number;
  try {
    value = parse(text);
  } catch (error) {
    throw new InvalidInputError('BAD_REQUEST', `${flag}: ${(error as Error).message}`);
  }
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new InvalidInputError('BAD_REQUEST', `${flag}: ${JSON.stringify(text)} is too small`);
  }
  return value;
}

function describeRetention(ms: number | undefined): string {
  if (ms === undefined) return 'none';
  const days = ms / 86_400_000;
  return Number.isInteger(days) ? `${days}d` : `${Math.round(ms / 1000)}s`;
}

function describeMaxSize(bytes: number | undefined): string {
  return bytes === undefined ? 'none' : `${bytes} (${formatBytes(bytes)})`;
}
