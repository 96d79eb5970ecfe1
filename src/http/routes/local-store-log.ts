// `<mount>/log/<drv base name>`: build logs the host's Nix kept, for `nix log` / `nix-store -l` against
// the local store. Compressed logs are decompressed on the way out (build-log.ts says why).
import type { FastifyReply, FastifyRequest } from 'fastify';
import { NotFoundError } from '../../errors.js';
import type { LocalStore } from '../../localstore/local-store.js';
import { StorePath } from '../../nix/store-path.js';

export interface LocalLogRoute {
  Params: { readonly drv: string };
}

function drvBaseName(text: string): string | undefined {
  try {
    const path = StorePath.parseBaseName(text);
    return path.name.endsWith('.drv') ? path.baseName : undefined;
  } catch {
    return undefined;
  }
}

export async function sendLocalLog(
  store: LocalStore,
  request: FastifyRequest<LocalLogRoute>,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const drv = drvBaseName(request.params.drv);
  if (drv === undefined) throw new NotFoundError('NOT_FOUND', 'expected log/<hash>-<name>.drv');
  const log = await store.openLog(drv);
  if (log === undefined) throw new NotFoundError('NOT_FOUND', `no build log for ${drv}`);
  reply.type('text/plain; charset=utf-8').header('cache-control', 'no-cache');
  if (log.size !== undefined) reply.header('content-length', log.size);
  if (request.method === 'HEAD') {
    log.stream.destroy();
    return reply.send();
  }
  return reply.send(log.stream);
}
