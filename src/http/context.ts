// What every route needs: the cache service, the authenticator, and the per-request principal (resolved
// at most once per request, and only by routes that need it).
import type { FastifyRequest } from 'fastify';
import type { Authenticator, Principal } from '../cache/auth.js';
import type { AdminService } from '../cache/admin-service.js';
import type { CacheService } from '../cache/cache-service.js';
import type { CacheRecord, Permission } from '../db/metadata-store.js';
import type { ServerMetrics } from '../metrics/server-metrics.js';
import { notePrincipal } from './access-log.js';
import type { BaseUrlOf } from './public-url.js';

export interface HttpContext {
  readonly service: CacheService;
  readonly admin: AdminService;
  readonly authenticator: Authenticator;
  /** The URL clients should use for this server, as seen by a request (src/http/public-url.ts). */
  readonly baseUrl: BaseUrlOf;
  /** The embedded SSH server, if it runs: its port and host key (`ssh-ed25519 AAAA…`). */
  readonly ssh?: { readonly port: number; readonly hostKey: string } | undefined;
  /** The server's metrics; undefined when they are off (nothing is counted then). */
  readonly metrics?: ServerMetrics | undefined;
}

const principals = new WeakMap<FastifyRequest, Promise<Principal>>();

export function principalOf(context: HttpContext, request: FastifyRequest): Promise<Principal> {
  let principal = principals.get(request);
  if (principal === undefined) {
    principal = context.authenticator.authenticate(request.headers.authorization).then((resolved) => {
      notePrincipal(request.raw, resolved);
      return resolved;
    });
    principals.set(request, principal);
  }
  return principal;
}

export async function openCache(
  context: HttpContext,
  request: FastifyRequest,
  name: string,
  needed: Permission,
): Promise<CacheRecord> {
  return context.service.open(name, () => principalOf(context, request), needed);
}
