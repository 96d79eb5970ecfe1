// `/<cache>/log/<drv>`: build logs (PROTOCOL.md §7.4). PUT from `nix store copy-log --to` (push; any
// Content-Encoding niche decodes), GET and HEAD for `nix log --store` / `nix-store -l` (pull). Logs are
// kept zstd-compressed and sent that way to clients that accept zstd, decompressed to the rest.
import type { FastifyInstance } from 'fastify';
import { NotFoundError } from '../../errors.js';
import { acceptsEncoding } from '../accept-encoding.js';
import { contentLengthOf, requestCoding } from '../body.js';
import { openCache, type HttpContext } from '../context.js';

interface Params {
  readonly cache: string;
  readonly drv: string;
}

export function registerBuildLogRoutes(app: FastifyInstance, context: HttpContext): void {
  app.put<{ Params: Params }>('/:cache/log/:drv', async (request, reply) => {
    const cache = await openCache(context, request, request.params.cache, 'push');
    const coding = requestCoding(request.headers['content-encoding']);
    const abort = new AbortController();
    const onClose = (): void => {
      if (!request.raw.complete) abort.abort(new Error('client went away'));
    };
    request.raw.once('close', onClose);
    let replaced: boolean;
    try {
      ({ replaced } = await context.service.logs.put(cache, request.params.drv, {
        body: request.raw,
        coding,
        contentLength: contentLengthOf(request.headers['content-length']),
        signal: abort.signal,
      }));
    } finally {
      request.raw.off('close', onClose);
    }
    return reply.code(replaced ? 200 : 201).send();
  });

  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: '/:cache/log/:drv',
    handler: async (request, reply) => {
      const cache = await openCache(context, request, request.params.cache, 'pull');
      const log = await context.service.logs.find(cache, request.params.drv);
      const zstd = acceptsEncoding(request.headers['accept-encoding'], 'zstd');
      const opened = log === undefined ? undefined : await context.service.logs.open(cache, log, zstd);
      if (opened === undefined) {
        throw new NotFoundError(
          'NOT_FOUND',
          `no build log for ${request.params.drv.slice(0, 100)} in cache ${cache.name}`,
        );
      }
      reply
        .type('text/plain; charset=utf-8')
        .header('content-length', opened.size)
        .header('vary', 'accept-encoding')
        // A later upload may replace the log.
        .header('cache-control', cache.isPublic ? 'public, no-cache' : 'private, no-cache');
      if (opened.encoding !== undefined) reply.header('content-encoding', opened.encoding);
      if (request.method === 'HEAD') {
        opened.stream.destroy();
        return reply.send();
      }
      return reply.send(opened.stream);
    },
  });
}
