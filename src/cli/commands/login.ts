// `niche login <alias> <server-url> [token]`: checks the token against the server (GET /api/v1/whoami),
// says what it grants, and remembers server and token under the alias in the client config (mode 0600).
// A token the server refuses is an error and nothing is saved.
import type { Command } from 'commander';
import { type TokenInfo, whoamiSchema } from '../../api/v1.js';
import { envToken, loadClientPaths } from '../../config.js';
import { InvalidInputError, UnauthenticatedError } from '../../errors.js';
import {
  isAlias,
  normaliseServerUrl,
  readClientConfig,
  writeClientConfig,
} from '../../client/client-config.js';
import { ApiClient } from '../../client/http.js';
import { pushUrlOf } from '../../api/v1.js';
import { USER_AGENT } from '../../client/session.js';
import { print, type CliIo } from '../io.js';

function describeToken(token: TokenInfo): string[] {
  const lines = [
    `token ${token.id}${token.description === '' ? '' : ` (${token.description})`}, ` +
      (token.expiresAt === null ? 'does not expire' : `expires ${token.expiresAt}`),
  ];
  for (const scope of token.scopes) lines.push(`  ${scope.cache}: ${scope.permissions.join(', ')}`);
  return lines;
}

export function registerLogin(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('login')
    .description('remember a server (and a token for it) under an alias, after checking the token')
    .argument('<alias>', 'short name for the server, used as <alias>/<cache>')
    .argument('<server-url>', 'the server, e.g. http://cache.example.org:5000')
    .argument('[token]', 'access token (default: $NICHE_TOKEN; none: public caches only)')
    .action((alias: string, serverUrl: string, tokenArg: string | undefined) =>
      run(async () => {
        if (!isAlias(alias)) {
          throw new InvalidInputError(
            'BAD_REQUEST',
            `invalid alias ${JSON.stringify(alias)}: use letters, digits, ".", "_" and "-" (no "/" or ":")`,
          );
        }
        const url = normaliseServerUrl(serverUrl);
        const token = tokenArg ?? envToken(io.env);
        const client = new ApiClient({ serverUrl: url, token, userAgent: USER_AGENT });
        const whoami = await client.get('/whoami', whoamiSchema).catch((error: unknown) => {
          if (error instanceof UnauthenticatedError) {
            throw new UnauthenticatedError(
              error.code === 'TOKEN_MISSING' ? 'TOKEN_MISSING' : 'TOKEN_INVALID',
              `${error.message}; nothing was saved`,
            );
          }
          throw error;
        });
        if (client.hasToken && whoami.token === null) {
          throw new UnauthenticatedError(
            'TOKEN_INVALID',
            `${url} does not accept this token; nothing was saved`,
          );
        }
        const paths = loadClientPaths(io.env);
        const config = await readClientConfig(paths.configFile);
        const replaced = Object.hasOwn(config.servers, alias);
        config.servers[alias] = { url, ...(token === undefined || token === '' ? {} : { token }) };
        await writeClientConfig(paths.configFile, config);
        const lines = [
          `${replaced ? 'updated' : 'saved'} ${alias} = ${url} in ${paths.configFile}`,
          ...(whoami.token === null
            ? ['no token: public caches only']
            : describeToken(whoami.token).map((line, index) => (index === 0 ? `the ${line}` : line))),
          `use it as ${alias}/<cache>, e.g. niche use ${alias}/<cache> or niche push ${alias}/<cache> <paths>`,
          `(plain nix copy pushes to the push URL ${pushUrlOf(`${url}/<cache>`)}, not to the substituter URL)`,
        ];
        print(io.stdout, lines.join('\n'));
        return 0;
      }),
    );
}
