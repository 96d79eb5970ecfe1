// Mounts the local store (the host's own /nix/store, src/localstore) at its URL prefix, `/local` by default,
// and optionally at `/` too, where nix-serve and harmonia serve it. The root mount is a URL rewrite of the
// few shapes a binary cache client asks for, applied before routing, rather than root routes: the cache
// routes (`/<cache>/…`, two segments and more) and `/`, `/api/…` never match those shapes, so nothing of
// niche's own is shadowed, and no parametric root route can clash with routes added later.
import type { FastifyInstance } from 'fastify';
import { NotFoundError } from '../../errors.js';
import type { LocalStore } from '../../localstore/local-store.js';
import { NIX32_CLASS } from '../../nix/nix32.js';
import { isStorePathHash } from '../../nix/store-path.js';
import { registerLocalStoreCacheInfo } from './local-store-cache-info.js';
import { sendLocalListing } from './local-store-listing.js';
import { sendLocalLog, type LocalLogRoute } from './local-store-log.js';
import { registerLocalStoreReadOnly } from './local-store-read-only.js';
import { redirectToDirectory, sendLocalServe, type LocalServeRoute } from './local-store-serve.js';

export interface LocalStoreMount {
  readonly store: LocalStore;
  /** `/local`, say: no trailing slash. */
  readonly mountPath: string;
  readonly mountAtRoot: boolean;
}

export function registerLocalStoreRoutes(app: FastifyInstance, mount: LocalStoreMount): void {
  const { store, mountPath: prefix } = mount;
  registerLocalStoreCacheInfo(app, store, prefix);

  app.route<{ Params: { file: string } }>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/:file`,
    handler: async (request, reply) => {
      const { file } = request.params;
      const dot = file.indexOf('.');
      const hash = file.slice(0, dot);
      // `<hash>.narinfo` and `nar/…` are answered by the read path (src/http/read-path.ts).
      if (dot === 32 && isStorePathHash(hash) && file.slice(dot) === '.ls') {
        return sendLocalListing(store, hash, reply);
      }
      throw new NotFoundError('NOT_FOUND', `no such file in the local store: ${file.slice(0, 100)}`);
    },
  });

  app.route<LocalLogRoute>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/log/:drv`,
    handler: (request, reply) => sendLocalLog(store, request, reply),
  });

  app.route<LocalServeRoute>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/serve/:hash`,
    handler: async (request, reply) => redirectToDirectory(request, reply),
  });
  app.route<LocalServeRoute>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/serve/:hash/*`,
    handler: (request, reply) => sendLocalServe(store, request, reply),
  });

  registerLocalStoreReadOnly(app, prefix);
}

/** The URL paths (before any query) the root mount answers; everything else is left alone. */
const ROOT_SHAPES = new RegExp(
  `^/(?:nix-cache-info|${NIX32_CLASS}{32}\\.(?:narinfo|ls)|nar/[^/]+|log/${NIX32_CLASS}{32}-[^/]+\\.drv|serve/${NIX32_CLASS}{32}(?:/.*)?)$`,
);

/**
 * fastify's `rewriteUrl` for the root mount: `/nix-cache-info`, `/<hash>.narinfo`, `/<hash>.ls`,
 * `/nar/…`, `/log/<drv>` and `/serve/<hash>…` go to the local store mount. None of these is a URL of a
 * cache (cache files are `/<cache>/<file>`, and `nar` is a reserved cache name).
 */
export function localStoreRootRewrite(mountPath: string): (url: string) => string {
  return (url) => {
    const query = url.indexOf('?');
    const path = query < 0 ? url : url.slice(0, query);
    return path.length > 1 && ROOT_SHAPES.test(path) ? `${mountPath}${url}` : url;
  };
}
