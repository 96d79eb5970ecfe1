// niche behind OpenSSH: sshd does the cryptography and the key check, niche the rest.
//
// `niche ssh-authorized-keys` prints an authorized_keys line for each registered SSH key (or is sshd's
// AuthorizedKeysCommand), each with `restrict` (no pty, no forwarding) and a forced command
// `niche ssh-serve --key <fingerprint> --cache <name>`. sshd runs that command for whatever the client
// asked (`nix-store --serve --write`, `nix-daemon --stdio`), which it passes in SSH_ORIGINAL_COMMAND; the
// session then runs as over the embedded SSH server (src/ssh/session.ts): the key is looked up again (a key
// removed since the line was printed is refused), and re-checked every few seconds.
//
// The cache: sshd's user is a Unix account, not a cache, so each line names its cache. With `--cache NAME`
// (e.g. `AuthorizedKeysCommand … ssh-authorized-keys --cache %u` for one Unix user per cache), the keys with
// a right on NAME; without, each key with its one cache (a key whose scopes name several caches, or a
// pattern, needs --cache, and is left out with a warning).
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { Readable, Writable } from 'node:stream';
import type { Command } from 'commander';
import { principalNoun, type Principal } from '../../cache/auth.js';
import { tokenIsActive, permissionsFor } from '../../cache/tokens.js';
import type { MetadataStore, TokenRecord } from '../../db/metadata-store.js';
import { InvalidInputError, UnauthenticatedError } from '../../errors.js';
import {
  CONFIG_OPTION_HELP,
  DATA_OPTION_HELP,
  openStoresFor,
  withMetadata,
  type BackendOptions,
} from '../backends.js';
import { print, type CliIo } from '../io.js';

interface ServeOptions extends BackendOptions {
  readonly key: string;
  readonly cache?: string;
}

interface AuthorizedKeysOptions extends BackendOptions {
  readonly cache?: string;
  readonly command?: string;
}

/** The one cache a key's scopes name without a pattern, or undefined when there is not exactly one. */
export function singleCacheOf(token: TokenRecord): string | undefined {
  const names = new Set(token.scopes.map((scope) => scope.cachePattern));
  const [only] = names;
  return names.size === 1 && only !== undefined && !only.includes('*') ? only : undefined;
}

/** A word for a POSIX shell (sshd runs forced commands with the user's shell). */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
}

/** How sshd should start this niche: the node running now and this entry script, by absolute path. */
function selfCommand(): string {
  const script = process.argv[1];
  if (script === undefined) return 'niche';
  return `${shellWord(process.execPath)} ${shellWord(realpathSync(script))}`;
}

async function keyPrincipal(db: MetadataStore, fingerprint: string): Promise<Principal> {
  const record = await db.findTokenBySshKey(fingerprint);
  if (record === undefined) return { kind: 'invalid', reason: 'unknown SSH key (removed?)' };
  if (!tokenIsActive(record, new Date())) return { kind: 'invalid', reason: 'SSH key expired' };
  return { kind: 'token', token: record };
}

export function registerSshServe(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('ssh-serve')
    .description(
      "serve one SSH session on stdin/stdout (sshd's forced command; see ssh-authorized-keys): " +
        'the command comes from SSH_ORIGINAL_COMMAND',
    )
    .requiredOption('--key <fingerprint>', 'the SSH key sshd authenticated (SHA256:…)')
    .option('--cache <name>', "the cache of the session (default: the key's one cache)")
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: ServeOptions) =>
      run(async () => {
        const { stdin: input, stdout: output, stderr } = io;
        if (!(input instanceof Readable) || !(output instanceof Writable) || !(stderr instanceof Writable)) {
          throw new InvalidInputError(
            'BAD_REQUEST',
            'ssh-serve needs standard input, output and error streams',
          );
        }
        const stores = await openStoresFor(io, options);
        const [{ CacheService }, { runSshSession }, { pino }] = await Promise.all([
          import('../../cache/cache-service.js'),
          import('../../ssh/session.js'),
          import('pino'),
        ]);
        try {
          const logger = pino({ level: 'silent' });
          const principal = await keyPrincipal(stores.db, options.key);
          if (principal.kind !== 'token') {
            throw new UnauthenticatedError(
              'TOKEN_INVALID',
              principal.kind === 'invalid' ? principal.reason : 'no SSH key',
            );
          }
          const cacheName = options.cache ?? singleCacheOf(principal.token);
          if (cacheName === undefined) {
            throw new InvalidInputError(
              'BAD_REQUEST',
              `this ${principalNoun(principal)} may use several caches; its authorized_keys line must name one (--cache)`,
            );
          }
          const service = new CacheService({ db: stores.db, blobs: stores.blobs, logger });
          const result = await runSshSession({
            service,
            principal,
            refreshPrincipal: () => keyPrincipal(stores.db, options.key),
            cacheName,
            command: io.env.SSH_ORIGINAL_COMMAND,
            input,
            output,
            stderr,
            log: logger,
          });
          return result.exitCode;
        } finally {
          // The session is over, whatever the client still sends: stop reading, so the process exits and
          // sshd closes the connection (a client waiting for more, as Nix 2.26 does after an error, would
          // otherwise wait forever).
          input.destroy();
          await stores.db.close();
          await stores.blobs.close();
        }
      }),
    );

  program
    .command('ssh-authorized-keys')
    .description(
      "print an authorized_keys line for every registered SSH key, forcing `niche ssh-serve` (sshd's " +
        'AuthorizedKeysCommand, or its AuthorizedKeysFile)',
    )
    .option('--cache <name>', 'only the keys with a right on this cache, each serving it (e.g. %u)')
    .option('--command <cmd>', 'how sshd starts niche (default: this node and niche, by absolute path)')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: AuthorizedKeysOptions) =>
      run(async () => {
        const base = options.command ?? selfCommand();
        const backend: string[] = [];
        if (options.config !== undefined) backend.push('--config', shellWord(resolve(options.config)));
        if (options.data !== undefined) backend.push('--data', shellWord(resolve(options.data)));
        await withMetadata(io, options, async (db) => {
          const now = new Date();
          for (const record of await db.listTokens()) {
            if (record.sshKey === undefined || !tokenIsActive(record, now)) continue;
            let cache = options.cache;
            if (cache !== undefined) {
              if (permissionsFor(record.scopes, cache).size === 0) continue;
            } else {
              cache = singleCacheOf(record);
              if (cache === undefined) {
                print(
                  io.stderr,
                  `warning: SSH key ${record.id} (${record.sshKey.fingerprint}) may use several caches; ` +
                    'left out (use --cache)',
                );
                continue;
              }
            }
            const command = [
              base,
              'ssh-serve',
              '--key',
              record.sshKey.fingerprint,
              '--cache',
              shellWord(cache),
              ...backend,
            ];
            // Inside command="…", sshd takes \" for a quote; our words never contain one unescaped.
            const forced = command.join(' ').replace(/\\/g, '\\\\').replace(/"/g, '\\"');
            print(
              io.stdout,
              `restrict,command="${forced}" ${record.sshKey.publicKey} niche-ssh-key-${record.id}`,
            );
          }
        });
        return 0;
      }),
    );
}
