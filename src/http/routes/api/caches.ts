// `/api/v1/caches[/<name>]`: list, create, show, configure and delete caches.
import type { FastifyInstance } from 'fastify';
import { API_PREFIX, createCacheSchema, updateCacheSchema, type CacheList } from '../../../api/v1.js';
import { openCache, principalOf, type HttpContext } from '../../context.js';
import { cacheInfo, readJson } from './json.js';

interface Params {
  readonly name: string;
}

export function registerCacheApiRoutes(app: FastifyInstance, context: HttpContext): void {
  app.get(`${API_PREFIX}/caches`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const caches = await context.admin.visibleCaches(principal);
    const body: CacheList = { caches: [] };
    for (const cache of caches) {
      body.caches.push(
        cacheInfo(
          context.baseUrl(request.raw),
          cache,
          (await context.service.keys(cache)).publicKeys,
          context.ssh,
        ),
      );
    }
    return reply.header('cache-control', 'no-store').send(body);
  });

  app.post(`${API_PREFIX}/caches`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const body = await readJson(request, createCacheSchema);
    const cache = await context.admin.createCache(principal, {
      name: body.name,
      isPublic: body.public,
      priority: body.priority,
      upstreamKeys: body.upstreamKeys,
    });
    const keys = await context.service.keys(cache);
    return reply
      .code(201)
      .header('cache-control', 'no-store')
      .send(cacheInfo(context.baseUrl(request.raw), cache, keys.publicKeys, context.ssh));
  });

  app.get<{ Params: Params }>(`${API_PREFIX}/caches/:name`, async (request, reply) => {
    const cache = await openCache(context, request, request.params.name, 'pull');
    const keys = await context.service.keys(cache);
    return reply
      .header('cache-control', 'no-store')
      .send(cacheInfo(context.baseUrl(request.raw), cache, keys.publicKeys, context.ssh));
  });

  app.patch<{ Params: Params }>(`${API_PREFIX}/caches/:name`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const body = await readJson(request, updateCacheSchema);
    const cache = await context.admin.updateCache(principal, request.params.name, {
      ...(body.public === undefined ? {} : { isPublic: body.public }),
      ...(body.priority === undefined ? {} : { priority: body.priority }),
      ...(body.upstreamKeys === undefined ? {} : { upstreamKeys: body.upstreamKeys }),
    });
    const keys = await context.service.keys(cache);
    return reply
      .header('cache-control', 'no-store')
      .send(cacheInfo(context.baseUrl(request.raw), cache, keys.publicKeys, context.ssh));
  });

  app.delete<{ Params: Params }>(`${API_PREFIX}/caches/:name`, async (request, reply) => {
    await context.admin.deleteCache(await principalOf(context, request), request.params.name);
    return reply.code(204).send();
  });
}
