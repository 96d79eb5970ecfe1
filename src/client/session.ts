// The set-up every client command shares: find the files (src/config.ts reads the environment), read the
// client config, resolve `<alias>/<cache>` or a URL to a server, a cache and a token, and make the HTTP
// client for it.
import { type CacheInfo, cacheInfoSchema } from '../api/v1.js';
import { type ClientPaths, envToken, loadClientPaths } from '../config.js';
import { UnauthenticatedError } from '../errors.js';
import { type ClientConfig, readClientConfig } from './client-config.js';
import { ApiClient, type FetchFunction } from './http.js';
import { type CacheTarget, resolveTarget } from './target.js';

export const USER_AGENT = 'niche-client/0.1';

export interface ClientSession {
  readonly paths: ClientPaths;
  readonly config: ClientConfig;
  readonly envToken: string | undefined;
}

export async function openSession(env: NodeJS.ProcessEnv): Promise<ClientSession> {
  const paths = loadClientPaths(env);
  return { paths, config: await readClientConfig(paths.configFile), envToken: envToken(env) };
}

export interface TargetClient {
  readonly target: CacheTarget;
  readonly client: ApiClient;
}

export function connect(
  session: ClientSession,
  spec: string,
  options: { fetch?: FetchFunction } = {},
): TargetClient {
  const target = resolveTarget(spec, session.config, session.envToken);
  const client = new ApiClient({
    serverUrl: target.serverUrl,
    token: target.token,
    userAgent: USER_AGENT,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  return { target, client };
}

/** For commands that write: a token is required. */
export function requireToken(target: CacheTarget, what: string): void {
  if (target.token === undefined) {
    throw new UnauthenticatedError(
      'TOKEN_MISSING',
      `${what} needs a token: run \`niche login <alias> <server-url> <token>\` or set NICHE_TOKEN`,
    );
  }
}

export function fetchCacheInfo(client: ApiClient, cache: string): Promise<CacheInfo> {
  return client.get(`/caches/${encodeURIComponent(cache)}`, cacheInfoSchema);
}
