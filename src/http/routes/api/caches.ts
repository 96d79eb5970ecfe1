// `/api/v1/...`: JSON for tools and remote admins. For now: cache information (what `niche use` and
// humans need to trust a cache).
import type { FastifyInstance } from 'fastify';
import { openCache, baseUrlOf, type HttpContext } from '../context.js';

interface Params {
  readonly name: string;
}

export interface CacheInfoResponse {
  readonly name: string;
  readonly public: boolean;
  readonly priority: number;
  readonly storeDir: string;
  readonly url: string;
  readonly publicKeys: readonly string[];
}

export function registerApiRoutes(app: FastifyInstance, context: HttpContext): void {
  app.get<{ Params: Params }>('/api/v1/caches/:name', async (request, reply) => {
    const cache = await openCache(context, request, request.params.name, 'pull');
    const keys = await context.service.keys(cache);
    const body: CacheInfoResponse = {
      name: cache.name,
      public: cache.isPublic,
      priority: cache.priority,
      storeDir: cache.storeDir,
      url: `${baseUrlOf(request)}/${cache.name}`,
      publicKeys: keys.publicKeys,
    };
    return reply.header('cache-control', 'no-store').send(body);
  });
}
