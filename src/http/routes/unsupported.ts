// Uploads Nix can be asked to make that niche does not store: debug-info links (`index-debug-info`).
// They are refused with 501 and a reason that tells the user which Nix option to drop, instead of a
// confusing 404 or a silent discard. Reads of these files are simply 404 (Nix treats that as absent).
import type { FastifyInstance } from 'fastify';
import { UnsupportedError } from '../../errors.js';
import { openCache, type HttpContext } from '../context.js';

const KINDS: readonly { url: string; what: string }[] = [
  { url: '/:cache/debuginfo/*', what: 'debug info links (index-debug-info=true)' },
];

export function registerUnsupportedRoutes(app: FastifyInstance, context: HttpContext): void {
  for (const { url, what } of KINDS) {
    app.put<{ Params: { cache: string } }>(url, async (request) => {
      await openCache(context, request, request.params.cache, 'push');
      throw new UnsupportedError(`niche does not store ${what}`);
    });
  }
}
