// `/<cache>/<hash>.narinfo`: path metadata. GET/HEAD answer from the metadata store; PUT is the second
// half of an upload (after the NAR) and is checked against the uploaded NAR and the cache.
import type { FastifyInstance } from 'fastify';
import { NotFoundError } from '../../errors.js';
import { contentLengthOf, readSmallBody } from '../body.js';
import { openCache, type HttpContext } from '../context.js';
import { sendNotFound } from '../error-mapping.js';
import { unsupportedListing } from './unsupported.js';

interface Params {
  readonly cache: string;
  readonly file: string;
}

const NARINFO_SUFFIX = '.narinfo';

function hashPartOf(file: string): string {
  if (!file.endsWith(NARINFO_SUFFIX))
    throw new NotFoundError('NOT_FOUND', `no such file: ${file.slice(0, 100)}`);
  return file.slice(0, -NARINFO_SUFFIX.length);
}

export function registerNarInfoRoutes(app: FastifyInstance, context: HttpContext): void {
  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: '/:cache/:file',
    handler: async (request, reply) => {
      const hashPart = hashPartOf(request.params.file);
      const cache = await openCache(context, request, request.params.cache, 'pull');
      const text = await context.service.getNarInfo(cache, hashPart);
      if (text === undefined)
        return sendNotFound(request, reply, `${hashPart} is not in cache ${cache.name}`);
      return reply
        .type('text/x-nix-narinfo')
        .header('cache-control', cache.isPublic ? 'public, max-age=3600' : 'private, max-age=3600')
        .send(text);
    },
  });

  app.put<{ Params: Params }>('/:cache/:file', async (request, reply) => {
    const cache = await openCache(context, request, request.params.cache, 'push');
    if (request.params.file.endsWith('.ls')) throw unsupportedListing();
    const hashPart = hashPartOf(request.params.file);
    const body = await readSmallBody(
      request.raw,
      context.service.limits.maxNarInfoSize,
      contentLengthOf(request.headers['content-length']),
    );
    const result = await context.service.putNarInfo(cache, hashPart, body.toString('utf8'));
    return reply.code(result.status === 'added' ? 201 : 200).send();
  });
}
