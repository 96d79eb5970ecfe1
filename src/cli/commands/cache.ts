// `niche cache create|list|show`: manage caches directly in the data directory (operator side).
import type { Command } from 'commander';
import { createCacheWithKey, DEFAULT_PRIORITY } from '../../app/bootstrap.js';
import { openMetadata } from '../../app/data-dir.js';
import { parseCacheName } from '../../cache/cache-name.js';
import { loadDataDir } from '../../config.js';
import { InvalidInputError, NotFoundError } from '../../errors.js';
import { print, type CliIo } from '../io.js';

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
    .option('--data <dir>', 'data directory (env NICHE_DATA, default ./niche-data)')
    .action((name: string, options: { private?: boolean; priority: string; data?: string }) =>
      run(async () => {
        const cacheName = parseCacheName(name);
        if (!/^\d{1,4}$/.test(options.priority)) {
          throw new InvalidInputError('BAD_REQUEST', `invalid priority ${JSON.stringify(options.priority)}`);
        }
        const db = await openMetadata(loadDataDir(options.data, io.env));
        try {
          const created = await createCacheWithKey(db, {
            name: cacheName,
            isPublic: options.private !== true,
            priority: Number(options.priority),
          });
          const keys = await db.listSigningKeys(created.id);
          print(io.stdout, keys.map((key) => key.publicKey).join('\n'));
        } finally {
          await db.close();
        }
        return 0;
      }),
    );

  cache
    .command('list')
    .description('list caches')
    .option('--data <dir>', 'data directory (env NICHE_DATA, default ./niche-data)')
    .action((options: { data?: string }) =>
      run(async () => {
        const db = await openMetadata(loadDataDir(options.data, io.env));
        try {
          for (const record of await db.listCaches()) {
            print(
              io.stdout,
              `${record.name}\t${record.isPublic ? 'public' : 'private'}\tpriority ${record.priority}`,
            );
          }
        } finally {
          await db.close();
        }
        return 0;
      }),
    );

  cache
    .command('show')
    .description('show a cache and its public keys')
    .argument('<name>')
    .option('--data <dir>', 'data directory (env NICHE_DATA, default ./niche-data)')
    .action((name: string, options: { data?: string }) =>
      run(async () => {
        const db = await openMetadata(loadDataDir(options.data, io.env));
        try {
          const record = await db.getCache(name);
          if (record === undefined) throw new NotFoundError('CACHE_NOT_FOUND', `no cache named ${name}`);
          const keys = await db.listSigningKeys(record.id);
          print(
            io.stdout,
            [
              `name: ${record.name}`,
              `visibility: ${record.isPublic ? 'public' : 'private'}`,
              `priority: ${record.priority}`,
              `store-dir: ${record.storeDir}`,
              ...keys.map(
                (key) => `public-key: ${key.publicKey}${key.retiredAt === undefined ? '' : ' (retired)'}`,
              ),
            ].join('\n'),
          );
        } finally {
          await db.close();
        }
        return 0;
      }),
    );
}
