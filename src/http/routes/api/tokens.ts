// `/api/v1/tokens` and `/api/v1/whoami`: token administration (server-admin on `*`) and self-inspection.
import type { FastifyInstance } from 'fastify';
import { API_PREFIX, createTokenSchema, type Whoami } from '../../../api/v1.js';
import { InvalidInputError } from '../../../errors.js';
import { principalOf, type HttpContext } from '../../context.js';
import { wwwAuthenticate } from '../../error-mapping.js';
import { readJson, tokenInfo } from './json.js';

export function registerTokenApiRoutes(app: FastifyInstance, context: HttpContext): void {
  app.get(`${API_PREFIX}/whoami`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const body: Whoami = { token: principal.kind === 'token' ? tokenInfo(principal.token) : null };
    if (principal.kind === 'invalid') {
      // Say why, so `niche login` can tell a revoked token from a mistyped one.
      return reply
        .code(401)
        .header('cache-control', 'no-store')
        .header('www-authenticate', wwwAuthenticate(request.url))
        .send({
          error: { code: 'TOKEN_INVALID', message: `invalid credentials: ${principal.reason}` },
        });
    }
    return reply.header('cache-control', 'no-store').send(body);
  });

  app.get(`${API_PREFIX}/tokens`, async (request, reply) => {
    const tokens = await context.admin.tokens(await principalOf(context, request));
    return reply.header('cache-control', 'no-store').send({ tokens: tokens.map(tokenInfo) });
  });

  app.post(`${API_PREFIX}/tokens`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const body = await readJson(request, createTokenSchema);
    const { secret, record } = await context.admin.createToken(principal, {
      description: body.description,
      scopes: body.scopes.map((scope) => ({ cachePattern: scope.cache, permissions: scope.permissions })),
      expiresAt: body.expiresAt === undefined ? undefined : new Date(body.expiresAt),
    });
    return reply
      .code(201)
      .header('cache-control', 'no-store')
      .send({ token: secret, info: tokenInfo(record) });
  });

  app.delete<{ Params: { id: string } }>(`${API_PREFIX}/tokens/:id`, async (request, reply) => {
    if (!/^\d{1,15}$/.test(request.params.id)) {
      throw new InvalidInputError(
        'BAD_REQUEST',
        `invalid token id ${JSON.stringify(request.params.id.slice(0, 30))}`,
      );
    }
    await context.admin.revokeToken(await principalOf(context, request), Number(request.params.id));
    return reply.code(204).send();
  });
}
