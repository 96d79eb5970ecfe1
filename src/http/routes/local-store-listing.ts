// `<mount>/<hash>.ls`: the JSON listing of a local store path, as `nix copy --to file://…?write-nar-listing=1`
// writes it, for tools such as nix-index that read listings instead of downloading NARs.
import type { FastifyReply } from 'fastify';
import { NotFoundError } from '../../errors.js';
import type { LocalStore } from '../../localstore/local-store.js';
import type { StorePathHash } from '../../nix/store-path.js';

export async function sendLocalListing(
  store: LocalStore,
  hash: StorePathHash,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const listing = await store.listing(hash);
  if (listing === undefined)
    throw new NotFoundError('NOT_FOUND', `${hash} is not a valid path in the local store`);
  return reply.type('application/json').header('cache-control', 'public, max-age=300').send(listing);
}
