// `<mount>/nix-cache-info` of the local store: the first file every client fetches. It must always be
// served (a client that sees it absent tries to PUT it, and gives up on the cache when that fails).
import type { FastifyInstance } from 'fastify';
import type { LocalStore } from '../../localstore/local-store.js';

export function registerLocalStoreCacheInfo(app: FastifyInstance, store: LocalStore, prefix: string): void {
  app.route({
    method: ['GET', 'HEAD'],
    url: `${prefix}/nix-cache-info`,
    handler: async (_request, reply) =>
      reply
        .type('text/x-nix-cache-info')
        .header('cache-control', 'public, max-age=300')
        .send(store.cacheInfo()),
  });
}
