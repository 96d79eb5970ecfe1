// Counts the requests fastify answers (everything but the read path's narinfo and NAR reads, which count
// themselves in src/http/read-path.ts): which cache and route kind a URL is for, decided from the URL
// alone when the response has closed (by then the cache service has looked the cache up, so a cache that
// exists gets its own label and any other name the shared `_unknown`).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { API_PREFIX } from '../api/v1.js';
import { isCacheName } from '../cache/cache-name.js';
import {
  RouteKind,
  type CacheCounters,
  type RouteKindIndex,
  type ServerMetrics,
} from '../metrics/server-metrics.js';

const CACHES_PREFIX = `${API_PREFIX}/caches/`;
/** `<name>/paths/<hash>` after CACHES_PREFIX: the one-request upload (PUT or POST). */
const PATH_UPLOAD = /^[^/]+\/paths\/[^/]+$/;
const WRITES: ReadonlySet<string> = new Set(['PUT', 'POST']);

export type RequestWatcher = (request: IncomingMessage, response: ServerResponse) => void;

/** Where a request belongs: the cache named by its URL (`local` for the local store), and its route kind. */
export interface RequestRoute {
  /** The first segment when it is a valid cache name (the cache may not exist); undefined for none. */
  readonly cache: string | undefined;
  readonly local: boolean;
  readonly kind: RouteKindIndex;
}

/** What a request was about, decided from its method and URL alone (also used by the access log). */
export function classifyRoute(method: string, url: string, localPrefix: string | undefined): RequestRoute {
  const queryAt = url.indexOf('?');
  const path = queryAt === -1 ? url : url.slice(0, queryAt);
  if (path.startsWith(`${API_PREFIX}/`)) {
    const rest = path.startsWith(CACHES_PREFIX) ? path.slice(CACHES_PREFIX.length) : undefined;
    const name = rest?.split('/')[0];
    return {
      cache: name !== undefined && isCacheName(name) ? name : undefined,
      local: false,
      kind:
        rest !== undefined && WRITES.has(method) && PATH_UPLOAD.test(rest) ? RouteKind.upload : RouteKind.api,
    };
  }
  const local = localPrefix !== undefined && (path.startsWith(localPrefix) || `${path}/` === localPrefix);
  const second = path.indexOf('/', 1);
  const name = path.slice(1, second === -1 ? undefined : second);
  let kind: RouteKindIndex = RouteKind.other;
  if (WRITES.has(method)) kind = RouteKind.upload;
  else if (method === 'GET' || method === 'HEAD') {
    if (path.endsWith('.narinfo')) kind = RouteKind.narinfo;
    else if (path.includes('/nar/')) kind = RouteKind.nar;
  }
  return { cache: !local && isCacheName(name) ? name : undefined, local, kind };
}

/** What a request was about: its cache's counters and its route kind. */
export function classifyRequest(
  metrics: ServerMetrics,
  method: string,
  url: string,
  localPrefix: string | undefined,
): { readonly counters: CacheCounters; readonly kind: RouteKindIndex } {
  const route = classifyRoute(method, url, localPrefix);
  const counters = route.local
    ? metrics.local
    : route.cache === undefined
      ? metrics.none
      : metrics.forCache(route.cache);
  return { counters, kind: route.kind };
}

/** Counts each request it is given when its response closes. */
export function requestWatcher(metrics: ServerMetrics, localMountPath: string | undefined): RequestWatcher {
  const localPrefix = localMountPath === undefined ? undefined : `${localMountPath}/`;
  return (request, response) => {
    const startedAt = performance.now();
    // Before fastify's rewrites: push URLs keep the cache as their first segment anyway.
    const method = request.method ?? 'GET';
    const url = request.url ?? '/';
    response.once('close', () => {
      const { counters, kind } = classifyRequest(metrics, method, url, localPrefix);
      metrics.request(counters, kind, response.headersSent ? response.statusCode : 0, startedAt);
    });
  };
}
