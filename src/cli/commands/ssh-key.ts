// `niche ssh-key add|list|remove`: SSH public keys as principals of the SSH front ends, with the scopes,
// expiry and revocation of tokens (operator side, straight in the data directory's metadata store).
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { registerSshKey } from '../../cache/admin-service.js';
import { InvalidInputError, NotFoundError } from '../../errors.js';
import { CONFIG_OPTION_HELP, DATA_OPTION_HELP, withMetadata } from '../backends.js';
import { print, type CliIo } from '../io.js';
import { describeToken, parseExpiry, permissionsOf, type PermissionFlags } from './token.js';

interface AddOptions extends PermissionFlags {
  readonly data?: string;
  config?: string;
  readonly cache: string[];
  readonly expires?: string;
  readonly description?: string;
}

/** The key itself, or the contents of the .pub file it names (`@~/.ssh/id_ed25519.pub` or a path). */
async function keyText(argument: string): Promise<string> {
  const path = argument.startsWith('@') ? argument.slice(1) : undefined;
  if (path === undefined && !argument.endsWith('.pub')) return argument;
  const file = path ?? argument;
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new InvalidInputError('SSH_KEY_INVALID', `cannot read the public key file ${file}`, {
      cause: error,
    });
  }
}

export function registerSshKeyCommand(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const sshKey = program.command('ssh-key').description('manage the SSH keys that may use caches over SSH');

  sshKey
    .command('add')
    .description('register an SSH public key with permissions on caches; prints its fingerprint')
    .argument('<key>', "the public key line ('ssh-ed25519 AAAA… comment') or its .pub file")
    // One value per --cache (repeat it for more), so that the key after it is not taken for a cache.
    .option(
      '--cache <pattern>',
      'cache name or pattern with * wildcards (repeatable; required)',
      (value: string, previous: string[]) => [...previous, value],
      [],
    )
    .option('--pull', 'may read private caches (always granted)')
    .option('--push', 'may upload paths')
    .option('--delete', 'may delete paths')
    .option('--expires <when>', 'expiry: 30d, 12h, 45m or a date such as 2027-01-31')
    .option('--description <text>', "what the key is for (default: the key's comment)")
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((key: string, options: AddOptions) =>
      run(async () => {
        if (options.cache.length === 0) {
          throw new InvalidInputError('BAD_REQUEST', 'name the cache the key may use: --cache <name>');
        }
        const text = await keyText(key);
        const now = new Date();
        const expiresAt = options.expires === undefined ? undefined : parseExpiry(options.expires, now);
        await withMetadata(io, options, async (db) => {
          for (const pattern of options.cache) {
            if (!pattern.includes('*') && (await db.getCache(pattern)) === undefined) {
              print(io.stderr, `warning: there is no cache named ${pattern} (yet)`);
            }
          }
          const permissions = permissionsOf(options);
          const record = await registerSshKey(
            db,
            {
              publicKey: text,
              description: options.description,
              scopes: options.cache.map((cachePattern) => ({ cachePattern, permissions })),
              expiresAt,
            },
            now,
          );
          print(io.stderr, `registered SSH key ${record.id}`);
          print(io.stdout, record.sshKey?.fingerprint ?? '');
        });
        return 0;
      }),
    );

  sshKey
    .command('list')
    .description('list SSH keys (id, status, scopes, expiry, description, fingerprint)')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: { data?: string; config?: string }) =>
      run(async () => {
        await withMetadata(io, options, async (db) => {
          const now = new Date();
          for (const record of await db.listTokens()) {
            if (record.sshKey === undefined) continue;
            print(io.stdout, `${describeToken(record, now)}\t${record.sshKey.fingerprint}`);
          }
        });
        return 0;
      }),
    );

  sshKey
    .command('remove')
    .description('revoke an SSH key: new sessions are refused at once, open ones end within seconds')
    .argument('<key>', 'its id (ssh-key list) or fingerprint (SHA256:…)')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((key: string, options: { data?: string; config?: string }) =>
      run(async () => {
        if (!/^\d{1,15}$/.test(key) && !key.startsWith('SHA256:')) {
          throw new InvalidInputError(
            'BAD_REQUEST',
            `give an SSH key id or fingerprint, not ${JSON.stringify(key.slice(0, 60))}`,
          );
        }
        await withMetadata(io, options, async (db) => {
          const record = /^\d+$/.test(key)
            ? (await db.listTokens()).find((token) => token.id === Number(key) && token.sshKey !== undefined)
            : await db.findTokenBySshKey(key);
          if (record === undefined || !(await db.revokeToken(record.id, new Date()))) {
            throw new NotFoundError('NOT_FOUND', `no registered SSH key ${key}`);
          }
          print(io.stderr, `removed SSH key ${record.id} (${record.sshKey?.fingerprint ?? ''})`);
        });
        return 0;
      }),
    );
}
