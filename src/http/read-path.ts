// The read path: GET and HEAD of narinfos and NARs, for push caches and the local store, answered on Node's
// own request and response objects in front of fastify. These are nearly all the requests a binary cache
// gets (Nix asks for a narinfo per path, then downloads its NAR), and they need none of what fastify
// offers: no body, no schema, no hooks. Skipping its routing, request and reply objects halves the CPU per
// narinfo, which is what a cache server is judged on (docs/benchmarks.md). Every other request, and every
// request while the server is closing (fastify answers those with 503), goes to fastify unchanged.
//
// The rules stay where they are: access through CacheService.open and authorize, errors mapped by
// error-mapping.ts, local store lookups and NAR checks in src/localstore.
//
// Requests answered here are counted here (src/metrics/server-metrics.ts), when metrics are on: a narinfo
// hit from memory adds to three numbers of its cache's counters, without reading the clock; an answer that
// completes later is timed and counted when it has.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { FastifyBaseLogger } from 'fastify';
import { RouteKind, type RouteKindIndex } from '../metrics/server-metrics.js';
import type { Principal } from '../cache/auth.js';
import type { CacheRecord, NarRecord } from '../db/metadata-store.js';
import { NotFoundError } from '../errors.js';
import type { LocalStore } from '../localstore/local-store.js';
import { parseLocalNarUrl } from '../localstore/nar-url.js';
import { NIX32_CLASS } from '../nix/nix32.js';
import { isStorePathHash, type StorePathHash } from '../nix/store-path.js';
import type { BlobRange, BlobReadResult } from '../storage/blob-store.js';
import type { BufferPool } from '../util/buffer-pool.js';
import { createCompressor } from '../util/compression.js';
import { notePrincipal } from './access-log.js';
import type { HttpContext } from './context.js';
import { sendRawError, sendRawNotFound } from './error-mapping.js';
import { acceptsEncoding } from './accept-encoding.js';
import { parseRange } from './range.js';
import type { LocalStoreMount } from './routes/local-store.js';
import { writeChunks } from './write-chunks.js';
import { writeHead } from './response-head.js';

/** Answers the request and returns true, or returns false to leave it to fastify. */
export type RawHandler = (request: IncomingMessage, response: ServerResponse) => boolean;

export interface ReadPathOptions {
  readonly logger: FastifyBaseLogger;
  /** Buffers for streamed downloads (chunks of large NARs, on-the-fly NARs). */
  readonly pool: BufferPool;
  /** Buffers that small NARs are read into whole. */
  readonly smallPool: BufferPool;
  readonly localStore?: LocalStoreMount | undefined;
  /** Rewrites root-mount URLs to the local store's prefix (routes/local-store.ts). */
  readonly rewriteUrl?: ((request: IncomingMessage) => string) | undefined;
  /** True once the server is closing. */
  readonly closing: () => boolean;
}

/** `/<cache>/<hash>.narinfo` */
const NARINFO_URL = new RegExp(`^/([^/]+)/(${NIX32_CLASS}{32})\\.narinfo$`);
/** `/<cache>/nar/<file>` */
const NAR_URL = /^\/([^/]+)\/nar\/([^/]+)$/;
/** `<mount>/<hash>.narinfo` and `<mount>/nar/<file>` (the mount prefix removed). */
const LOCAL_NARINFO_URL = new RegExp(`^/(${NIX32_CLASS}{32})\\.narinfo$`);
const LOCAL_NAR_URL = /^\/nar\/([^/]+)$/;

const NARINFO_TYPE = 'text/x-nix-narinfo';
const NAR_TYPE = 'application/x-nix-nar';

/** Header names and values in turn (src/http/response-head.ts). */
type Headers = string[];

const PUBLIC_NARINFO = 'public, max-age=3600';
const PRIVATE_NARINFO = 'private, max-age=3600';
const LOCAL_NARINFO = 'public, max-age=300';

/** Sets Content-Length (and Content-Range for a range) for `size` bytes; returns the status, 200 or 206. */
function setLength(headers: Headers, size: number, range: BlobRange | undefined): number {
  if (range === undefined) {
    headers.push('content-length', String(size));
    return 200;
  }
  headers.push(
    'content-range',
    `bytes ${range.start}-${range.end}/${size}`,
    'content-length',
    String(range.end - range.start + 1),
  );
  return 206;
}

function sendNarInfo(
  text: string,
  cacheControl: string,
  request: IncomingMessage,
  response: ServerResponse,
): void {
  writeHead(response, 200, [
    'content-type',
    NARINFO_TYPE,
    'cache-control',
    cacheControl,
    'content-length',
    String(Buffer.byteLength(text)),
  ]);
  response.end(request.method === 'HEAD' ? undefined : text);
}

/** The headers of a NAR download, less its length. */
function narHeaders(nar: NarRecord, published: boolean, isPublic: boolean): Headers {
  return [
    'content-type',
    NAR_TYPE,
    'accept-ranges',
    'bytes',
    'etag',
    `"${nar.fileHash}"`,
    // A pending upload, shown to a pusher only, must not be kept by any shared cache on the way.
    'cache-control',
    !published
      ? 'private, no-store'
      : isPublic
        ? 'public, max-age=31536000, immutable'
        : 'private, max-age=31536000, immutable',
  ];
}

/** Swallows a rejection already handled. */
function ignore(): void {}

export function createReadPath(context: HttpContext, options: ReadPathOptions): RawHandler {
  const { service, authenticator, metrics } = context;
  const { logger, pool, smallPool, localStore } = options;
  const localPrefix = `${localStore?.mountPath ?? ''}/`;

  const fail = (request: IncomingMessage, response: ServerResponse) => (error: unknown) => {
    sendRawError(error, request, response, logger);
  };

  /**
   * Answers with `work`, errors mapped; with metrics on, counts the request under `cache` (a name, or
   * undefined for the local store) once the answer is complete.
   */
  function answer(
    work: () => Promise<void>,
    request: IncomingMessage,
    response: ServerResponse,
    cache: string | undefined,
    kind: RouteKindIndex,
  ): void {
    if (metrics === undefined) {
      work().catch(fail(request, response));
      return;
    }
    const startedAt = performance.now();
    work()
      .catch(fail(request, response))
      .then(() => {
        const counters = cache === undefined ? metrics.local : metrics.forCache(cache);
        metrics.request(counters, kind, response.headersSent ? response.statusCode : 0, startedAt);
      }, ignore);
  }

  /** The request's principal, resolved on first use (at most once): a token lookup per call otherwise. */
  function principalOf(request: IncomingMessage): () => Promise<Principal> {
    let principal: Promise<Principal> | undefined;
    return () =>
      (principal ??= authenticator.authenticate(request.headers.authorization).then((resolved) => {
        notePrincipal(request, resolved);
        return resolved;
      }));
  }

  /** The cache, if the request may pull from it (credentials are only looked at for private caches). */
  function openForPull(cacheName: string, request: IncomingMessage): Promise<CacheRecord> {
    return service.open(cacheName, principalOf(request), 'pull');
  }

  async function cacheNarInfo(
    cacheName: string,
    hash: string,
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    const cache = await openForPull(cacheName, request);
    const text = await service.getNarInfo(cache, hash);
    if (metrics !== undefined) {
      const counters = metrics.forCache(cache.name, true);
      if (text === undefined) metrics.narinfoMiss(counters);
      else metrics.narinfoHit(counters);
    }
    if (text === undefined) {
      sendRawNotFound(request, response, `${hash} is not in cache ${cache.name}`);
      return;
    }
    sendNarInfo(text, cache.isPublic ? PUBLIC_NARINFO : PRIVATE_NARINFO, request, response);
  }

  async function cacheNar(
    cacheName: string,
    file: string,
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    const principal = principalOf(request);
    const cache = await service.open(cacheName, principal, 'pull');
    const found = await service.findNar(cache, file, principal);
    if (found === undefined) {
      sendRawNotFound(request, response, `no such NAR in cache ${cache.name}`);
      return;
    }
    const { nar } = found;
    const headers = narHeaders(nar, found.published, cache.isPublic);
    if (request.method === 'HEAD') {
      headers.push('content-length', String(nar.fileSize));
      writeHead(response, 200, headers);
      response.end();
      return;
    }
    const range = parseRange(request.headers.range, nar.fileSize);
    const opened = await service.openNar(cache, nar, range, smallPool);
    if (opened === undefined) {
      sendRawNotFound(request, response, `no such NAR in cache ${cache.name}`);
      return;
    }
    await sendBlob(opened, headers, response);
  }

  /** Sends a blob (or the range of it) read whole into a buffer of the small-read pool. */
  function sendSmall(
    data: Buffer,
    headers: Headers,
    size: number,
    range: BlobRange | undefined,
    response: ServerResponse,
  ): void {
    writeHead(response, setLength(headers, size, range), headers);
    // The buffer goes back to the pool once the kernel has the bytes.
    response.end(data, () => {
      smallPool.give(data);
    });
  }

  async function sendBlob(opened: BlobReadResult, headers: Headers, response: ServerResponse): Promise<void> {
    if (opened.data !== undefined) {
      sendSmall(opened.data, headers, opened.size, opened.range, response);
      return;
    }
    const status = setLength(headers, opened.size, opened.range);
    if (opened.chunks === undefined) {
      writeHead(response, status, headers);
      await pipeline(opened.stream, response);
      return;
    }
    const chunks = opened.chunks(pool);
    writeHead(response, status, headers);
    await writeChunks(chunks, response, pool);
    response.end();
  }

  async function localNarInfo(
    store: LocalStore,
    hash: StorePathHash,
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    const text = await store.narInfo(hash);
    if (metrics !== undefined) {
      if (text === undefined) metrics.narinfoMiss(metrics.local);
      else metrics.narinfoHit(metrics.local);
    }
    if (text === undefined) {
      sendRawNotFound(request, response, `${hash} is not a valid path in the local store`);
      return;
    }
    sendNarInfo(text, LOCAL_NARINFO, request, response);
  }

  // A NAR generated from the filesystem and checked while it streams (src/localstore/verified-nar.ts). The
  // plain NAR goes out with its exact Content-Length; a client that lists zstd in Accept-Encoding gets it
  // compressed on the fly (no length then, and never for ranges: Nix resumes only downloads without
  // Content-Encoding, at offsets of the plain NAR).
  async function localNar(
    store: LocalStore,
    file: string,
    query: string,
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    const target = parseLocalNarUrl(file, hashParameter(query));
    if (target === undefined) throw new NotFoundError('NOT_FOUND', 'not a NAR URL of the local store');
    const info = await store.findNar(target);
    const rangeHeader = request.headers.range;
    const zstd = rangeHeader === undefined && acceptsEncoding(request.headers['accept-encoding'], 'zstd');
    const headers: Headers = [
      'content-type',
      NAR_TYPE,
      'accept-ranges',
      'bytes',
      'vary',
      'accept-encoding',
      // A URL with the NAR hash in it always means the same bytes; the legacy form does not.
      'cache-control',
      target.narHash === undefined ? 'no-cache' : 'public, max-age=31536000, immutable',
    ];
    if (zstd) headers.push('content-encoding', 'zstd');
    if (request.method === 'HEAD') {
      if (!zstd) headers.push('content-length', String(info.narSize));
      writeHead(response, 200, headers);
      response.end();
      return;
    }
    const range = parseRange(rangeHeader, info.narSize);
    // Opening makes the first chunk: a path gone from disk is still a clean 404 here.
    const opened = zstd
      ? { stream: await store.openNar(info) }
      : { chunks: await store.openNarChunks(info, range, pool) };
    // A zstd stream's length is not known in advance (and zstd is never used for ranges).
    const status = zstd ? 200 : setLength(headers, info.narSize, range);
    writeHead(response, status, headers);
    try {
      if (opened.stream !== undefined) {
        await pipeline(opened.stream, createCompressor('zstd'), response);
      } else {
        await writeChunks(opened.chunks, response, pool);
        response.end();
      }
    } catch (error) {
      // Headers are out: the only signal left is a broken connection. A NAR that failed its check is
      // logged with the path, so the operator can find it; a client going away is routine.
      if ((error as { code?: unknown }).code !== 'ERR_STREAM_PREMATURE_CLOSE') {
        const storePath = info.storePath.toString(store.storeDir);
        logger.error({ err: error, storePath }, 'local store NAR aborted mid-stream');
      }
      response.destroy();
    }
  }

  return (request, response) => {
    const method = request.method;
    if ((method !== 'GET' && method !== 'HEAD') || options.closing()) return false;
    const url = options.rewriteUrl === undefined ? (request.url ?? '/') : options.rewriteUrl(request);
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);

    if (localStore !== undefined && path.startsWith(localPrefix)) {
      const rest = path.slice(localPrefix.length - 1);
      const [, hash] = LOCAL_NARINFO_URL.exec(rest) ?? [];
      if (hash !== undefined && isStorePathHash(hash)) {
        const cached = localStore.store.cachedNarInfo(hash);
        if (cached !== undefined) {
          sendNarInfo(cached, LOCAL_NARINFO, request, response);
          metrics?.narinfoFromMemory(metrics.local);
          return true;
        }
        const work = (): Promise<void> => localNarInfo(localStore.store, hash, request, response);
        answer(work, request, response, undefined, RouteKind.narinfo);
        return true;
      }
      const [, file] = LOCAL_NAR_URL.exec(rest) ?? [];
      if (file !== undefined) {
        const query = queryAt === -1 ? '' : url.slice(queryAt + 1);
        const work = (): Promise<void> => localNar(localStore.store, file, query, request, response);
        answer(work, request, response, undefined, RouteKind.nar);
        return true;
      }
      return false;
    }

    const [, narInfoCache, hash] = NARINFO_URL.exec(path) ?? [];
    if (narInfoCache !== undefined && hash !== undefined) {
      // A hit in memory is answered at once; anything else (credentials, a lookup) goes the async way.
      const cached = service.cachedPublicNarInfo(narInfoCache, hash);
      if (cached !== undefined) {
        sendNarInfo(cached.text, PUBLIC_NARINFO, request, response);
        metrics?.narinfoFromMemory(metrics.forCache(cached.cache.name, true));
        return true;
      }
      const work = (): Promise<void> => cacheNarInfo(narInfoCache, hash, request, response);
      answer(work, request, response, narInfoCache, RouteKind.narinfo);
      return true;
    }
    const [, narCache, file] = NAR_URL.exec(path) ?? [];
    if (narCache !== undefined && file !== undefined) {
      // A whole small NAR held in memory, with its lookup, is sent at once (no promise, no file).
      const held =
        method === 'GET' && request.headers.range === undefined
          ? service.heldPublicNar(narCache, file)
          : undefined;
      if (held !== undefined) {
        const headers = narHeaders(held.nar, true, true);
        writeHead(response, setLength(headers, held.data.length, undefined), headers);
        // The held bytes themselves: sent, never given to the pool.
        response.end(held.data);
        metrics?.narFromMemory(metrics.forCache(held.cache.name, true));
        return true;
      }
      const work = (): Promise<void> => cacheNar(narCache, file, request, response);
      answer(work, request, response, narCache, RouteKind.nar);
      return true;
    }
    return false;
  };
}

/** The `hash` query parameter (harmonia's NAR URLs): a string, or undefined when absent or repeated. */
function hashParameter(query: string): string | undefined {
  if (query === '') return undefined;
  const values = new URLSearchParams(query).getAll('hash');
  return values.length === 1 ? values[0] : undefined;
}
