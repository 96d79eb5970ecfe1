// `niche pin add|list|remove`: named roots that keep a path and its whole closure from retention and
// quotas (operator side, straight in the metadata store; the API has the same under
// /api/v1/caches/<cache>/pins).
import type { Command } from 'commander';

import { pinPath, unpin } from '../../cache/pins.js';
import { InvalidInputError } from '../../errors.js';
import { CONFIG_OPTION_HELP, DATA_OPTION_HELP, requireCache, withMetadata } from '../backends.js';
import { print, type CliIo } from '../io.js';

interface BackendFlags {
  readonly data?: string;
  readonly config?: string;
}

const DAY_MS = 86_400_000;

export function registerPin(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const pin = program
    .command('pin')
    .description("keep a path's closure in a cache whatever its retention or quota");

  pin
    .command('add')
    .description('pin a path of the cache under a name (pinning an existing name moves it)')
    .argument('<cache>')
    .argument('<name>', 'the pin, e.g. prod')
    .argument('<store-path>', 'a path the cache holds: /nix/store/<hash>-<name> or <hash>-<name>')
    .option('--keep-days <n>', 'the pin expires after this many days (default: never)')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action(
      (cacheName: string, name: string, storePath: string, options: BackendFlags & { keepDays?: string }) =>
        run(async () => {
          let expiresAt: Date | undefined;
          if (options.keepDays !== undefined) {
            if (!/^\d{1,5}(\.\d+)?$/.test(options.keepDays) || Number(options.keepDays) <= 0) {
              throw new InvalidInputError(
                'BAD_REQUEST',
                `--keep-days: expected a positive number of days, got ${JSON.stringify(options.keepDays)}`,
              );
            }
            expiresAt = new Date(Date.now() + Number(options.keepDays) * DAY_MS);
          }
          await withMetadata(io, options, async (db) => {
            const cache = await requireCache(db, cacheName);
            const pinned = await pinPath(db, cache, { name, storePath, expiresAt }, new Date());
            print(io.stdout, describePin(pinned));
          });
          return 0;
        }),
    );

  pin
    .command('list')
    .description("list a cache's pins")
    .argument('<cache>')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((cacheName: string, options: BackendFlags) =>
      run(async () => {
        await withMetadata(io, options, async (db) => {
          const cache = await requireCache(db, cacheName);
          for (const record of await db.listPins(cache.id)) print(io.stdout, describePin(record));
        });
        return 0;
      }),
    );

  pin
    .command('remove')
    .description('remove a pin (its closure is then kept or collected by the usual rules)')
    .argument('<cache>')
    .argument('<name>')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((cacheName: string, name: string, options: BackendFlags) =>
      run(async () => {
        await withMetadata(io, options, async (db) => {
          await unpin(db, await requireCache(db, cacheName), name);
        });
        return 0;
      }),
    );
}

function describePin(pin: { name: string; storePath: string; expiresAt: Date | undefined }): string {
  const expiry = pin.expiresAt === undefined ? 'never expires' : `expires ${pin.expiresAt.toISOString()}`;
  return `${pin.name}\t${pin.storePath}\t${expiry}`;
}
