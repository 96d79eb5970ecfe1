// `/api/v1/caches/<name>/keys`: list, add (generate or import) and retire a cache's signing keys.
import type { FastifyInstance } from 'fastify';
import { addKeySchema, API_PREFIX } from '../../../api/v1.js';
import { principalOf, type HttpContext } from '../../context.js';
import { keyInfo, readJson } from './json.js';

export function registerKeyApiRoutes(app: FastifyInstance, context: HttpContext): void {
  app.get<{ Params: { name: string } }>(`${API_PREFIX}/caches/:name/keys`, async (request, reply) => {
    const keys = await context.admin.keys(await principalOf(context, request), request.params.name);
    return reply.header('cache-control', 'no-store').send({ keys: keys.map(keyInfo) });
  });

  app.post<{ Params: { name: string } }>(`${API_PREFIX}/caches/:name/keys`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const body = await readJson(request, addKeySchema);
    const key = await context.admin.addKey(principal, request.params.name, body);
    return reply.code(201).header('cache-control', 'no-store').send(keyInfo(key));
  });

  app.post<{ Params: { name: string; key: string } }>(
    `${API_PREFIX}/caches/:name/keys/:key/retire`,
    async (request, reply) => {
      const principal = await principalOf(context, request);
      const key = await context.admin.retireKey(principal, request.params.name, request.params.key);
      return reply.header('cache-control', 'no-store').send(keyInfo(key));
    },
  );
}
