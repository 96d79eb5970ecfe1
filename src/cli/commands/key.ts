// `niche key list|generate|import|retire`: manage a cache's signing keys directly in the data directory.
// Several keys may sign at once (rotation: add the new key, let clients trust it, then retire the old).
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  CONFIG_OPTION_HELP,
  DATA_OPTION_HELP,
  requireCache,
  withMetadata,
  type BackendOptions,
} from '../backends.js';
import { addCacheKey, retireCacheKey } from '../../cache/admin-service.js';
import type { CacheRecord, MetadataStore } from '../../db/metadata-store.js';
import { InvalidInputError } from '../../errors.js';
import { print, type CliIo } from '../io.js';

async function withCache<T>(
  io: CliIo,
  backend: BackendOptions,
  name: string,
  action: (db: MetadataStore, cache: CacheRecord) => Promise<T>,
): Promise<T> {
  return withMetadata(io, backend, async (db) => action(db, await requireCache(db, name)));
}

export function registerKey(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const key = program.command('key').description("manage a cache's signing keys");

  key
    .command('list')
    .description('list the keys of a cache: name, status, public key')
    .requiredOption('--cache <name>', 'the cache')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: { cache: string; data?: string; config?: string }) =>
      run(async () => {
        await withCache(io, options, options.cache, async (db, cache) => {
          for (const record of await db.listSigningKeys(cache.id)) {
            const status =
              record.retiredAt === undefined ? 'active' : `retired ${record.retiredAt.toISOString()}`;
            print(io.stdout, `${record.name}\t${status}\t${record.publicKey}`);
          }
        });
        return 0;
      }),
    );

  key
    .command('generate')
    .description('add a new signing key to a cache and print its public key')
    .requiredOption('--cache <name>', 'the cache')
    .option('--name <key-name>', 'key name (default <host>-<cache>-<n>)')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: { cache: string; name?: string; data?: string; config?: string }) =>
      run(async () => {
        const record = await withCache(io, options, options.cache, (db, cache) =>
          addCacheKey(db, cache, { generate: true, name: options.name }),
        );
        print(io.stdout, record.publicKey);
        return 0;
      }),
    );

  key
    .command('import')
    .description('add a key made by nix-store --generate-binary-cache-key (the secret key file) to a cache')
    .argument('<secret-key-file>')
    .requiredOption('--cache <name>', 'the cache')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((file: string, options: { cache: string; data?: string; config?: string }) =>
      run(async () => {
        let text: string;
        try {
          text = await readFile(file, 'utf8');
        } catch (error) {
          throw new InvalidInputError('KEY_INVALID', `cannot read ${file}: ${(error as Error).message}`);
        }
        const record = await withCache(io, options, options.cache, (db, cache) =>
          addCacheKey(db, cache, { secretKey: text }),
        );
        print(io.stdout, record.publicKey);
        return 0;
      }),
    );

  key
    .command('retire')
    .description('stop signing with a key (clients may keep trusting it for paths it signed)')
    .argument('<key-name>')
    .requiredOption('--cache <name>', 'the cache')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((keyName: string, options: { cache: string; data?: string; config?: string }) =>
      run(async () => {
        await withCache(io, options, options.cache, (db, cache) => retireCacheKey(db, cache, keyName));
        print(io.stderr, `retired ${keyName}; running servers notice within 30 seconds`);
        return 0;
      }),
    );
}
