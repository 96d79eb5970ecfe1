// `niche token create|list|revoke`: manage access tokens directly in the data directory (operator side).
import type { Command } from 'commander';
import { CONFIG_OPTION_HELP, DATA_OPTION_HELP, withMetadata } from '../backends.js';
import type { Permission, TokenRecord } from '../../db/metadata-store.js';
import { InvalidInputError, NotFoundError } from '../../errors.js';
import { checkNewTokenExpiry, generateToken, hashToken, parseCachePattern } from '../../cache/tokens.js';
import { print, type CliIo } from '../io.js';

export interface PermissionFlags {
  readonly pull?: boolean;
  readonly push?: boolean;
  readonly delete?: boolean;
  readonly cacheAdmin?: boolean;
  readonly serverAdmin?: boolean;
}

interface CreateOptions {
  readonly data?: string;
  config?: string;
  readonly cache: string[];
  readonly pull?: boolean;
  readonly push?: boolean;
  readonly delete?: boolean;
  readonly cacheAdmin?: boolean;
  readonly serverAdmin?: boolean;
  readonly expires?: string;
  readonly description?: string;
}

/** `30d`, `12h`, `45m`, or an ISO date. */
export function parseExpiry(text: string, now: Date): Date {
  const relative = /^(\d+)([dhm])$/.exec(text);
  if (relative !== null) {
    const unit = { d: 86_400_000, h: 3_600_000, m: 60_000 }[relative[2] as 'd' | 'h' | 'm'];
    return new Date(now.getTime() + Number(relative[1]) * unit);
  }
  const date = new Date(text);
  if (Number.isNaN(date.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(text)) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `invalid expiry ${JSON.stringify(text)}: use e.g. 30d, 12h or 2027-01-31`,
    );
  }
  return date;
}

/** The permissions the --pull/--push/… flags grant (pull always). */
export function permissionsOf(options: PermissionFlags): Permission[] {
  const permissions: Permission[] = ['pull'];
  if (options.push === true) permissions.push('push');
  if (options.delete === true) permissions.push('delete');
  if (options.cacheAdmin === true) permissions.push('cache-admin');
  if (options.serverAdmin === true) permissions.push('server-admin');
  return permissions;
}

/** One line of `token list` / `ssh-key list`: id, status, scopes, expiry, description. */
export function describeToken(token: TokenRecord, now: Date): string {
  const status =
    token.revokedAt !== undefined
      ? 'revoked'
      : token.expiresAt !== undefined && token.expiresAt <= now
        ? 'expired'
        : 'active';
  const scopes = token.scopes
    .map((scope) => `${scope.cachePattern}:${scope.permissions.join('+')}`)
    .join(' ');
  const expires = token.expiresAt === undefined ? 'never' : token.expiresAt.toISOString();
  return `${token.id}\t${status}\t${scopes}\texpires ${expires}\t${token.description}`;
}

export function registerToken(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const token = program.command('token').description('manage access tokens');

  token
    .command('create')
    .description('create a token and print it (shown only once)')
    .requiredOption('--cache <pattern...>', 'cache name or pattern with * wildcards (repeatable)')
    .option('--pull', 'may read private caches (always granted)')
    .option('--push', 'may upload paths')
    .option('--delete', 'may delete paths')
    .option('--cache-admin', 'may configure the cache')
    .option('--server-admin', 'may manage caches and tokens')
    .option('--expires <when>', 'expiry: 30d, 12h, 45m or a date such as 2027-01-31')
    .option('--description <text>', 'what the token is for', '')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: CreateOptions) =>
      run(async () => {
        for (const pattern of options.cache) parseCachePattern(pattern);
        const now = new Date();
        const expiresAt = options.expires === undefined ? undefined : parseExpiry(options.expires, now);
        checkNewTokenExpiry(expiresAt, now);
        await withMetadata(io, options, async (db) => {
          for (const pattern of options.cache) {
            if (!pattern.includes('*') && (await db.getCache(pattern)) === undefined) {
              print(io.stderr, `warning: there is no cache named ${pattern} (yet)`);
            }
          }
          const secret = generateToken();
          const permissions = permissionsOf(options);
          await db.createToken({
            description: options.description ?? '',
            tokenHash: hashToken(secret),
            scopes: options.cache.map((cachePattern) => ({ cachePattern, permissions })),
            expiresAt,
          });
          print(io.stdout, secret);
        });
        return 0;
      }),
    );

  token
    .command('list')
    .description('list tokens (id, status, scopes, expiry, description); secrets are never shown')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: { data?: string; config?: string }) =>
      run(async () => {
        await withMetadata(io, options, async (db) => {
          const now = new Date();
          for (const record of await db.listTokens()) {
            if (record.sshKey === undefined) print(io.stdout, describeToken(record, now));
          }
        });
        return 0;
      }),
    );

  token
    .command('revoke')
    .description('revoke a token by id; effective immediately')
    .argument('<id>', 'token id, as shown by `niche token list`')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((id: string, options: { data?: string; config?: string }) =>
      run(async () => {
        if (!/^\d+$/.test(id))
          throw new InvalidInputError('BAD_REQUEST', `invalid token id ${JSON.stringify(id)}`);
        await withMetadata(io, options, async (db) => {
          const record = (await db.listTokens()).find((token) => token.id === Number(id));
          if (record?.sshKey !== undefined || !(await db.revokeToken(Number(id), new Date()))) {
            throw new NotFoundError('NOT_FOUND', `no active token with id ${id}`);
          }
          print(io.stderr, `revoked token ${id}`);
        });
        return 0;
      }),
    );
}
