// `<mount>/<hash>.narinfo` of the local store: path metadata from the Nix database, signed per request.
// A path that is not valid (never built, deleted, or still being built) is a 404 that is never cached.
import type { FastifyReply } from 'fastify';
import { NotFoundError } from '../../errors.js';
import type { LocalStore } from '../../localstore/local-store.js';
import type { StorePathHash } from '../../nix/store-path.js';

export async function sendLocalNarInfo(
  store: LocalStore,
  hash: StorePathHash,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const text = await store.narInfo(hash);
  if (text === undefined)
    throw new NotFoundError('NOT_FOUND', `${hash} is not a valid path in the local store`);
  return reply.type('text/x-nix-narinfo').header('cache-control', 'public, max-age=300').send(text);
}
