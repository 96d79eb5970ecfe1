// What `niche use|push|watch-store` act on: a cache on a server, named `<alias>/<cache>` (an alias from
// `niche login`) or by its URL `http(s)://host[:port][/prefix]/<cache>`. The token is `NICHE_TOKEN` if set
// (CI needs no login), else the one remembered for that server.
import { type CacheName, parseCacheName } from '../cache/cache-name.js';
import { NicheError } from '../errors.js';
import { type ClientConfig, normaliseServerUrl } from './client-config.js';

export interface CacheTarget {
  /** The server's base URL, without a trailing slash. */
  readonly serverUrl: string;
  readonly cache: CacheName;
  readonly token: string | undefined;
  /** How the user named it, for messages. */
  readonly label: string;
}

export class ServerUnknownError extends NicheError {
  constructor(message: string) {
    super('config', 'SERVER_UNKNOWN', message);
  }
}

export function resolveTarget(spec: string, config: ClientConfig, envToken: string | undefined): CacheTarget {
  const token = envToken === '' ? undefined : envToken;
  if (/^https?:\/\//i.test(spec)) {
    const url = normaliseServerUrl(spec);
    const slash = url.lastIndexOf('/');
    const origin = new URL(url).origin;
    if (slash < origin.length) {
      throw new ServerUnknownError(`${spec} names no cache: expected http(s)://host[:port]/<cache>`);
    }
    const serverUrl = url.slice(0, slash);
    const cache = parseCacheName(url.slice(slash + 1));
    const remembered = Object.values(config.servers).find((server) => server.url === serverUrl);
    return { serverUrl, cache, token: token ?? remembered?.token, label: `${serverUrl}/${cache}` };
  }
  const slash = spec.indexOf('/');
  if (slash <= 0) {
    throw new ServerUnknownError(
      `expected <alias>/<cache> or http(s)://host[:port]/<cache>, got ${JSON.stringify(spec)}`,
    );
  }
  const alias = spec.slice(0, slash);
  const server = Object.hasOwn(config.servers, alias) ? config.servers[alias] : undefined;
  if (server === undefined) {
    const known = Object.keys(config.servers);
    throw new ServerUnknownError(
      `no server is known as ${JSON.stringify(alias)}: run \`niche login ${alias} <server-url> [token]\`` +
        (known.length > 0 ? ` (known: ${known.join(', ')})` : ''),
    );
  }
  const cache = parseCacheName(spec.slice(slash + 1));
  return { serverUrl: server.url, cache, token: token ?? server.token, label: `${alias}/${cache}` };
}
