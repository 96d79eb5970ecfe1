// `PUT /<cache>/nar/<filehash>.nar[.ext]`: receives and verifies an uploaded NAR file. GET and HEAD are
// answered by the read path (src/http/read-path.ts).
import type { FastifyInstance } from 'fastify';
import { contentLengthOf } from '../body.js';
import { openCache, type HttpContext } from '../context.js';

interface Params {
  readonly cache: string;
  readonly file: string;
}

export function registerNarRoutes(app: FastifyInstance, context: HttpContext): void {
  app.put<{ Params: Params }>('/:cache/nar/:file', async (request, reply) => {
    const cache = await openCache(context, request, request.params.cache, 'push');
    const abort = new AbortController();
    const onClose = (): void => {
      if (!request.raw.complete) abort.abort(new Error('client went away'));
    };
    request.raw.once('close', onClose);
    try {
      await context.service.uploadNar(cache, request.params.file, request.raw, {
        contentLength: contentLengthOf(request.headers['content-length']),
        signal: abort.signal,
      });
    } finally {
      request.raw.off('close', onClose);
    }
    return reply.code(201).send();
  });
}
