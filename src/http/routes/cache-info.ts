// `/<cache>/nix-cache-info`: the first thing every Nix client fetches. Nix PUTs it when the GET looks
// absent; niche always serves it, so a PUT is only accepted (with push rights) if it agrees.
import type { FastifyInstance } from 'fastify';
import { InvalidInputError } from '../../errors.js';
import { parseCacheInfo } from '../../nix/cache-info.js';
import { contentLengthOf, readSmallBody } from '../body.js';
import { openCache, type HttpContext } from '../context.js';

interface Params {
  readonly cache: string;
}

export function registerCacheInfoRoutes(app: FastifyInstance, context: HttpContext): void {
  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: '/:cache/nix-cache-info',
    handler: async (request, reply) => {
      const cache = await openCache(context, request, request.params.cache, 'pull');
      const body = context.service.cacheInfo(cache);
      return reply
        .type('text/x-nix-cache-info')
        .header('cache-control', cache.isPublic ? 'public, max-age=300' : 'private, max-age=300')
        .send(body);
    },
  });

  app.put<{ Params: Params }>('/:cache/nix-cache-info', async (request, reply) => {
    const cache = await openCache(context, request, request.params.cache, 'push');
    const body = await readSmallBody(request.raw, 4096, contentLengthOf(request.headers['content-length']));
    const info = parseCacheInfo(body.toString('utf8'));
    if (info.storeDir !== undefined && info.storeDir !== cache.storeDir) {
      throw new InvalidInputError(
        'CACHE_INFO_INVALID',
        `cache ${cache.name} is for store ${cache.storeDir}, not ${info.storeDir}`,
      );
    }
    return reply.code(204).send();
  });
}
