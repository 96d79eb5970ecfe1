// Writes to the local store mount (`nix copy --to`, `nix store copy-log --to`, a PUT of nix-cache-info) are
// refused with 403 and a reason: the host's store is filled by its own Nix, never over HTTP. 403 is also
// what Nix treats as "absent", so a client probing the mount is not disturbed by it.
import type { FastifyInstance } from 'fastify';
import { ForbiddenError } from '../../errors.js';

export function registerLocalStoreReadOnly(app: FastifyInstance, prefix: string): void {
  const refusal = `${prefix} serves this host's Nix store read-only; push to a cache (/<cache>) instead`;
  app.route({
    method: ['PUT', 'POST', 'DELETE', 'PATCH'],
    url: `${prefix}/*`,
    handler: () => Promise.reject(new ForbiddenError(refusal)),
  });
}
