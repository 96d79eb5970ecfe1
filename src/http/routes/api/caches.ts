// `/api/v1/caches[/<name>]`: list, create, show, configure and delete caches.
import type { FastifyInstance } from 'fastify';
import {
  API_PREFIX,
  createCacheSchema,
  putPinSchema,
  updateCacheSchema,
  type CacheList,
} from '../../../api/v1.js';
import type { FastifyRequest } from 'fastify';
import type { CacheInfo } from '../../../api/v1.js';
import type { CacheRecord } from '../../../db/metadata-store.js';
import { openCache, principalOf, type HttpContext } from '../../context.js';
import { cacheInfo, pinInfo, readJson } from './json.js';

interface Params {
  readonly name: string;
}

interface PinParams extends Params {
  readonly pin: string;
}

export function registerCacheApiRoutes(app: FastifyInstance, context: HttpContext): void {
  app.get(`${API_PREFIX}/caches`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const caches = await context.admin.visibleCaches(principal);
    const body: CacheList = { caches: [] };
    for (const cache of caches) {
      body.caches.push(await describeCache(context, request, cache));
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
    return reply
      .code(201)
      .header('cache-control', 'no-store')
      .send(await describeCache(context, request, cache));
  });

  app.get<{ Params: Params }>(`${API_PREFIX}/caches/:name`, async (request, reply) => {
    const cache = await openCache(context, request, request.params.name, 'pull');
    return reply.header('cache-control', 'no-store').send(await describeCache(context, request, cache));
  });

  app.patch<{ Params: Params }>(`${API_PREFIX}/caches/:name`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const body = await readJson(request, updateCacheSchema);
    const cache = await context.admin.updateCache(principal, request.params.name, {
      ...(body.public === undefined ? {} : { isPublic: body.public }),
      ...(body.priority === undefined ? {} : { priority: body.priority }),
      ...(body.upstreamKeys === undefined ? {} : { upstreamKeys: body.upstreamKeys }),
      ...(body.retentionSeconds === undefined
        ? {}
        : { retentionMs: body.retentionSeconds === null ? null : body.retentionSeconds * 1000 }),
      ...(body.maxSize === undefined ? {} : { maxSize: body.maxSize }),
    });
    return reply.header('cache-control', 'no-store').send(await describeCache(context, request, cache));
  });

  app.get<{ Params: Params }>(`${API_PREFIX}/caches/:name/pins`, async (request, reply) => {
    const pins = await context.admin.pins(await principalOf(context, request), request.params.name);
    return reply.header('cache-control', 'no-store').send({ pins: pins.map(pinInfo) });
  });

  app.put<{ Params: PinParams }>(`${API_PREFIX}/caches/:name/pins/:pin`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const body = await readJson(request, putPinSchema);
    const pin = await context.admin.putPin(principal, request.params.name, {
      name: request.params.pin,
      storePath: body.storePath,
      expiresAt: body.expiresAt === undefined ? undefined : new Date(body.expiresAt),
    });
    return reply.header('cache-control', 'no-store').send(pinInfo(pin));
  });

  app.delete<{ Params: PinParams }>(`${API_PREFIX}/caches/:name/pins/:pin`, async (request, reply) => {
    const principal = await principalOf(context, request);
    await context.admin.removePin(principal, request.params.name, request.params.pin);
    return reply.code(204).send();
  });

  app.delete<{ Params: Params }>(`${API_PREFIX}/caches/:name`, async (request, reply) => {
    await context.admin.deleteCache(await principalOf(context, request), request.params.name);
    return reply.code(204).send();
  });
}

/** The cache's public description with its keys and usage, as every cache answer of the API gives it. */
async function describeCache(
  context: HttpContext,
  request: FastifyRequest,
  cache: CacheRecord,
): Promise<CacheInfo> {
  const keys = await context.service.keys(cache);
  return cacheInfo(
    context.baseUrl(request.raw),
    cache,
    keys.publicKeys,
    context.ssh,
    await context.admin.usage(cache),
  );
}
