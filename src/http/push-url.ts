// A cache's push URL, `/<cache>/push`: the binary cache protocol of `/<cache>` (nix-cache-info, narinfos,
// NARs, and every other file a cache serves or accepts) under a second URL, answered by the same routes
// with the same authentication and checks. It exists for Nix's narinfo disk cache
// (~/.cache/nix/binary-cache-v*.sqlite), which is keyed by the store URL: `nix copy --to` records each
// narinfo it uploads there as the client wrote it, without the cache's signature, for 30 days. Pushing
// to `/<cache>/push` files those entries under the push URL, so substituting from `/<cache>` on the same
// machine asks niche and gets the signed narinfo instead of refusing the client's unsigned copy.
//
// A rewrite applied before routing (the read path and fastify both see the rewritten URL), as the local
// store's root mount is: no route is copied, and routes added later serve both URLs.
import { PUSH_SEGMENT } from '../api/v1.js';
import { isCacheName } from '../cache/cache-name.js';

/**
 * Maps `/<cache>/push` and `/<cache>/push/<rest>` (with any query) to `/<cache>` and `/<cache>/<rest>`;
 * every other URL is returned unchanged. URLs under the local store's mount (read-only, no push URL) and
 * first segments that cannot be a cache's name (`/api/…`) are left alone.
 */
export function pushUrlRewrite(localMountPath: string | undefined): (url: string) => string {
  const localPrefix = localMountPath === undefined ? undefined : `${localMountPath}/`;
  return (url) => {
    const second = url.indexOf('/', 1);
    if (second <= 1 || !url.startsWith(PUSH_SEGMENT, second + 1)) return url;
    const end = second + 1 + PUSH_SEGMENT.length;
    const next = url.charAt(end);
    if (next !== '' && next !== '/' && next !== '?') return url;
    if (!isCacheName(url.slice(1, second))) return url;
    if (localPrefix !== undefined && url.startsWith(localPrefix)) return url;
    return url.slice(0, second) + url.slice(end);
  };
}
