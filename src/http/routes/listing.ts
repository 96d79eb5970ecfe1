// `/<cache>/<hash>.ls`: NAR listings (PROTOCOL.md §7.1). GET and HEAD serve the listing of a published
// path, made from its NAR (src/cache/nar-listings.ts); PUT (`nix copy --to …?write-nar-listing=true`)
// checks a client's listing and stores nothing (CacheService.putListing says why).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { NotFoundError } from '../../errors.js';
import { readSmallUpload } from '../body.js';
import { openCache, type HttpContext } from '../context.js';

interface Params {
  readonly cache: string;
  readonly file: string;
}

const LISTING_SUFFIX = '.ls';

export function isListingFile(file: string): boolean {
  return file.endsWith(LISTING_SUFFIX);
}

function hashPartOf(file: string): string {
  return file.slice(0, -LISTING_SUFFIX.length);
}

export async function putListing(
  context: HttpContext,
  request: FastifyRequest<{ Params: Params }>,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const cache = await openCache(context, request, request.params.cache, 'push');
  const body = await readSmallUpload(request.raw, context.service.limits.maxListingSize);
  await context.service.putListing(cache, hashPartOf(request.params.file), body.toString('utf8'));
  return reply.code(204).send();
}

export function registerListingRoutes(app: FastifyInstance, context: HttpContext): void {
  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: '/:cache/:file',
    handler: async (request, reply) => {
      const { file } = request.params;
      // `<hash>.narinfo` is answered by the read path (src/http/read-path.ts).
      if (!isListingFile(file)) throw new NotFoundError('NOT_FOUND', `no such file: ${file.slice(0, 100)}`);
      const cache = await openCache(context, request, request.params.cache, 'pull');
      const listing = await context.service.getListing(cache, hashPartOf(file));
      if (listing === undefined) {
        throw new NotFoundError(
          'NOT_FOUND',
          `${hashPartOf(file).slice(0, 32)} is not in cache ${cache.name}`,
        );
      }
      return reply
        .type('application/json')
        .header('cache-control', cache.isPublic ? 'public, max-age=3600' : 'private, max-age=3600')
        .send(listing);
    },
  });
}
