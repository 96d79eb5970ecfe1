// `/<cache>/nar/<filehash>.nar[.ext]`: the NAR files. GET streams from the blob store (single ranges
// supported so Nix can resume), HEAD answers from metadata alone, PUT receives and verifies an upload.
import type { FastifyInstance } from 'fastify';
import { NotFoundError } from '../../errors.js';
import { contentLengthOf } from '../body.js';
import { openCache, type HttpContext } from '../context.js';
import { parseRange } from '../range.js';

interface Params {
  readonly cache: string;
  readonly file: string;
}

const NAR_TYPE = 'application/x-nix-nar';

export function registerNarRoutes(app: FastifyInstance, context: HttpContext): void {
  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: '/:cache/nar/:file',
    handler: async (request, reply) => {
      const cache = await openCache(context, request, request.params.cache, 'pull');
      const nar = await context.service.findNar(cache, request.params.file);
      if (nar === undefined) throw new NotFoundError('NOT_FOUND', `no such NAR in cache ${cache.name}`);
      reply
        .type(NAR_TYPE)
        .header('accept-ranges', 'bytes')
        .header('etag', `"${nar.fileHash}"`)
        .header(
          'cache-control',
          cache.isPublic ? 'public, max-age=31536000, immutable' : 'private, max-age=31536000, immutable',
        );
      if (request.method === 'HEAD') {
        return reply.header('content-length', nar.fileSize).send();
      }
      const range = parseRange(request.headers.range, nar.fileSize);
      const opened = await context.service.openNar(cache, nar, range);
      if (opened === undefined) throw new NotFoundError('NOT_FOUND', `no such NAR in cache ${cache.name}`);
      if (opened.range !== undefined) {
        reply
          .code(206)
          .header('content-range', `bytes ${opened.range.start}-${opened.range.end}/${opened.size}`)
          .header('content-length', opened.range.end - opened.range.start + 1);
      } else {
        reply.header('content-length', opened.size);
      }
      if (opened.data !== undefined) {
        opened.stream.destroy();
        return reply.send(opened.data);
      }
      return reply.send(opened.stream);
    },
  });

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
