// `/api/v1/tokens`, `/api/v1/ssh-keys` and `/api/v1/whoami`: token and SSH key administration (server-admin
// on `*`) and self-inspection.
import type { FastifyInstance } from 'fastify';
import { addSshKeySchema, API_PREFIX, createTokenSchema, type Whoami } from '../../../api/v1.js';
import { InvalidInputError } from '../../../errors.js';
import { principalOf, type HttpContext } from '../../context.js';
import { wwwAuthenticate } from '../../error-mapping.js';
import { readJson, sshKeyInfo, tokenInfo } from './json.js';

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
    const id = parseId(request.params.id, 'token');
    await context.admin.revokeToken(await principalOf(context, request), id);
    return reply.code(204).send();
  });

  app.get(`${API_PREFIX}/ssh-keys`, async (request, reply) => {
    const keys = await context.admin.sshKeys(await principalOf(context, request));
    return reply.header('cache-control', 'no-store').send({ sshKeys: keys.map(sshKeyInfo) });
  });

  app.post(`${API_PREFIX}/ssh-keys`, async (request, reply) => {
    const principal = await principalOf(context, request);
    const body = await readJson(request, addSshKeySchema);
    const record = await context.admin.addSshKey(principal, {
      publicKey: body.publicKey,
      description: body.description,
      scopes: body.scopes.map((scope) => ({ cachePattern: scope.cache, permissions: scope.permissions })),
      expiresAt: body.expiresAt === undefined ? undefined : new Date(body.expiresAt),
    });
    return reply.code(201).header('cache-control', 'no-store').send(sshKeyInfo(record));
  });

  app.delete<{ Params: { id: string } }>(`${API_PREFIX}/ssh-keys/:id`, async (request, reply) => {
    const id = parseId(request.params.id, 'SSH key');
    await context.admin.removeSshKey(await principalOf(context, request), id);
    return reply.code(204).send();
  });
}

function parseId(text: string, what: string): number {
  if (!/^\d{1,15}$/.test(text)) {
    throw new InvalidInputError('BAD_REQUEST', `invalid ${what} id ${JSON.stringify(text.slice(0, 30))}`);
  }
  return Number(text);
}
