// `PUT /<cache>/<hash>.narinfo`: the second half of an upload (after the NAR), checked against the uploaded
// NAR and the cache. GET and HEAD are answered by the read path (src/http/read-path.ts). `PUT <hash>.ls`
// shares the URL shape and is handed to listing.ts.
import type { FastifyInstance } from 'fastify';
import { NotFoundError } from '../../errors.js';
import { readSmallUpload } from '../body.js';
import { openCache, type HttpContext } from '../context.js';
import { isListingFile, putListing } from './listing.js';

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
  app.put<{ Params: Params }>('/:cache/:file', async (request, reply) => {
    if (isListingFile(request.params.file)) return putListing(context, request, reply);
    const cache = await openCache(context, request, request.params.cache, 'push');
    const hashPart = hashPartOf(request.params.file);
    const body = await readSmallUpload(request.raw, context.service.limits.maxNarInfoSize);
    const result = await context.service.putNarInfo(cache, hashPart, body.toString('utf8'));
    return reply.code(result.status === 'added' ? 201 : 200).send();
  });
}
