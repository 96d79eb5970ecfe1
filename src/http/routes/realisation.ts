// `/<cache>/realisations/<id>.doi`: realisations of content-addressed derivations (PROTOCOL.md §7.2, the
// form Nix 2.8 - 2.34 and Lix use). PUT from `nix copy` with `ca-derivations` (push; checked and signed,
// src/cache/realisations.ts), GET and HEAD for substitution (pull).
import type { FastifyInstance } from 'fastify';
import { NotFoundError } from '../../errors.js';
import { readSmallUpload } from '../body.js';
import { openCache, type HttpContext } from '../context.js';

interface Params {
  readonly cache: string;
  readonly file: string;
}

export function registerRealisationRoutes(app: FastifyInstance, context: HttpContext): void {
  app.put<{ Params: Params }>('/:cache/realisations/:file', async (request, reply) => {
    const cache = await openCache(context, request, request.params.cache, 'push');
    const body = await readSmallUpload(request.raw, context.service.limits.maxNarInfoSize);
    const result = await context.service.realisations.put(cache, request.params.file, body.toString('utf8'));
    return reply.code(result.status === 'added' ? 201 : 200).send();
  });

  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: '/:cache/realisations/:file',
    handler: async (request, reply) => {
      const cache = await openCache(context, request, request.params.cache, 'pull');
      const text = await context.service.realisations.get(cache, request.params.file);
      if (text === undefined) {
        throw new NotFoundError('NOT_FOUND', `no such realisation in cache ${cache.name}`);
      }
      return reply
        .type('application/json')
        .header('cache-control', cache.isPublic ? 'public, max-age=3600' : 'private, max-age=3600')
        .send(text);
    },
  });
}
