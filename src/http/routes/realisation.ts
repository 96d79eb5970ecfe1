// Realisations of content-addressed derivations (PROTOCOL.md §7.2), in both forms: `/<cache>/realisations/
// <id>.doi` (Nix 2.8 - 2.34 and Lix) and `/<cache>/build-trace-v2/<drv>/<output>.doi` (Nix 2.35+). PUT
// from `nix copy` with `ca-derivations` (push; checked and signed, src/cache/realisations.ts), GET and
// HEAD for substitution (pull).
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { CacheRecord } from '../../db/metadata-store.js';
import { NotFoundError } from '../../errors.js';
import { readSmallUpload } from '../body.js';
import { openCache, type HttpContext } from '../context.js';

interface Params {
  readonly cache: string;
  readonly file: string;
}

interface TraceParams extends Params {
  readonly drv: string;
}

function sendJson(reply: FastifyReply, cache: CacheRecord, text: string | undefined): FastifyReply {
  if (text === undefined) throw new NotFoundError('NOT_FOUND', `no such realisation in cache ${cache.name}`);
  return reply
    .type('application/json')
    .header('cache-control', cache.isPublic ? 'public, max-age=3600' : 'private, max-age=3600')
    .send(text);
}

export function registerRealisationRoutes(app: FastifyInstance, context: HttpContext): void {
  const { realisations } = context.service;
  const uploadText = async (request: { raw: Parameters<typeof readSmallUpload>[0] }): Promise<string> =>
    (await readSmallUpload(request.raw, context.service.limits.maxNarInfoSize)).toString('utf8');

  app.put<{ Params: Params }>('/:cache/realisations/:file', async (request, reply) => {
    const cache = await openCache(context, request, request.params.cache, 'push');
    const result = await realisations.put(cache, request.params.file, await uploadText(request));
    return reply.code(result.status === 'added' ? 201 : 200).send();
  });

  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: '/:cache/realisations/:file',
    handler: async (request, reply) => {
      const cache = await openCache(context, request, request.params.cache, 'pull');
      return sendJson(reply, cache, await realisations.get(cache, request.params.file));
    },
  });

  app.put<{ Params: TraceParams }>('/:cache/build-trace-v2/:drv/:file', async (request, reply) => {
    const { cache: name, drv, file } = request.params;
    const cache = await openCache(context, request, name, 'push');
    const result = await realisations.putBuildTrace(cache, drv, file, await uploadText(request));
    return reply.code(result.status === 'added' ? 201 : 200).send();
  });

  app.route<{ Params: TraceParams }>({
    method: ['GET', 'HEAD'],
    url: '/:cache/build-trace-v2/:drv/:file',
    handler: async (request, reply) => {
      const { cache: name, drv, file } = request.params;
      const cache = await openCache(context, request, name, 'pull');
      return sendJson(reply, cache, await realisations.getBuildTrace(cache, drv, file));
    },
  });
}
