// Builds the HTTP front end: a fastify instance with every route, raw request bodies (routes stream or
// bound them themselves), and the one error handler. Listening and shutdown belong to the caller.
import { createServer, Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { createSecureServer, type Http2Session } from 'node:http2';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { NotFoundError } from '../errors.js';
import type { AccessLog } from './access-log.js';
import type { HttpContext } from './context.js';
import { sendError } from './error-mapping.js';
import {
  checkIntervalMs,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MIN_TRANSFER_RATE,
  watchConnections,
} from './deadlines.js';
import { continueOnRead } from './expect-continue.js';
import { lingerAfterEarlyAnswer } from './linger.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerMetricsRoute, type MetricsAccess } from './routes/metrics.js';
import { requestWatcher } from './request-metrics.js';
import { Readiness } from '../cache/readiness.js';
import { pushUrlRewrite } from './push-url.js';
import { createReadPath } from './read-path.js';
import { registerApiRoutes } from './routes/api/index.js';
import { registerBuildLogRoutes } from './routes/build-log.js';
import { registerCacheInfoRoutes } from './routes/cache-info.js';
import { registerLandingRoute } from './routes/landing.js';
import {
  localStoreRootRewrite,
  registerLocalStoreRoutes,
  type LocalStoreMount,
} from './routes/local-store.js';
import { registerListingRoutes } from './routes/listing.js';
import { registerNarRoutes } from './routes/nar.js';
import { registerNarInfoRoutes } from './routes/narinfo.js';
import { registerRealisationRoutes } from './routes/realisation.js';
import { registerUnsupportedRoutes } from './routes/unsupported.js';
import { chunkPool, smallReadPool } from '../util/buffer-pool.js';
import { requestIdOf } from './response-head.js';

export interface HttpServerOptions {
  readonly logger: Logger;
  /** How long keep-alive connections may idle. */
  readonly keepAliveTimeoutMs?: number | undefined;
  /** Progress deadlines (src/http/deadlines.ts); the request headers must arrive within `idleTimeoutMs`. */
  readonly idleTimeoutMs?: number | undefined;
  readonly minTransferRate?: number | undefined;
  /** Also serve the host's own Nix store (`niche serve --local-store`). */
  readonly localStore?: LocalStoreMount | undefined;
  /** Who may read `GET /metrics` here (when `context.metrics` is set); default admin. */
  readonly metricsAccess?: MetricsAccess | undefined;
  /** One line per request (src/http/access-log.ts); none when undefined. */
  readonly accessLog?: AccessLog | undefined;
  /** Serve HTTPS with this certificate (and chain) and key, PEM: HTTP/2 and HTTP/1.1 (ALPN), TLS 1.2+. */
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer } | undefined;
}

/** TLS versions below this are refused. */
export const MIN_TLS_VERSION = 'TLSv1.2';

/**
 * An HTTPS server for `serve` that speaks HTTP/2 and, for clients that do not offer h2 in ALPN, HTTP/1.1.
 * Its HTTP/1.1 connections are Node's own (the same timeouts and connection tracking as a plain server's);
 * HTTP/2 requests arrive as Node's compatibility request and response objects, which the read path and
 * fastify use as they use HTTP/1.1's. Socket-level rules become session-level rules there:
 * - progress deadlines (deadlines.ts) watch HTTP/1.1 connections only; an HTTP/2 session with no
 *   activity at all (no frame read or written) for the idle timeout is closed (GOAWAY), and destroyed
 *   shortly after if a stalled stream keeps it open; no minimum transfer rate applies to its streams;
 * - lingering after an early answer (linger.ts) is not needed: HTTP/2 ends one stream (RST_STREAM), not
 *   the connection;
 * - `closeIdleConnections` (used while closing) sends GOAWAY to every session, which lets streams in
 *   flight finish, and closes idle HTTP/1.1 connections.
 */
function createHttpsServer(
  tls: { readonly cert: Buffer; readonly key: Buffer },
  serve: (request: IncomingMessage, response: ServerResponse) => void,
  idleTimeoutMs: number,
  connectionsCheckingInterval: number,
): Server {
  const server = createSecureServer(
    {
      cert: tls.cert,
      key: tls.key,
      allowHTTP1: true,
      minVersion: MIN_TLS_VERSION,
      // A client that does not complete its handshake is dropped as one whose headers do not arrive.
      handshakeTimeout: idleTimeoutMs,
    },
    serve as unknown as Parameters<typeof createSecureServer>[1],
  );
  const sessions = new Set<Http2Session>();
  server.on('session', (session: Http2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    session.setTimeout(idleTimeoutMs, () => {
      session.close();
      setTimeout(() => {
        session.destroy();
      }, 1_000).unref();
    });
  });
  // Read by Node's HTTP/1.1 connection tracking when listening starts.
  Object.assign(server, { connectionsCheckingInterval });
  const closeIdle = (): void => {
    for (const session of sessions) if (!session.closed) session.close();
    // HTTP/1.1 connections over TLS are tracked by Node as a plain server's are.
    Server.prototype.closeIdleConnections.call(server);
  };
  return Object.assign(server, { closeIdleConnections: closeIdle }) as unknown as Server;
}

/** Swallows an error that is observed elsewhere. */
function ignoreError(): void {}

export function buildHttpServer(context: HttpContext, options: HttpServerOptions): FastifyInstance {
  const loggerInstance: FastifyBaseLogger = options.logger;
  // Push URLs (`/<cache>/push/…`, src/http/push-url.ts) first, then the local store's root mount.
  const pushRewrite = pushUrlRewrite(options.localStore?.mountPath);
  const rootRewrite =
    options.localStore?.mountAtRoot === true
      ? localStoreRootRewrite(options.localStore.mountPath)
      : undefined;
  const rewriteUrl = (request: IncomingMessage): string => {
    const url = pushRewrite(request.url ?? '/');
    return rootRewrite === undefined ? url : rootRewrite(url);
  };
  let closing = false;
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const readPath = createReadPath(context, {
    logger: loggerInstance,
    pool: chunkPool,
    smallPool: smallReadPool,
    localStore: options.localStore,
    rewriteUrl,
    closing: () => closing,
  });
  const metrics = context.metrics;
  const accessLog = options.accessLog;
  const watchRequest =
    metrics === undefined ? undefined : requestWatcher(metrics, options.localStore?.mountPath);
  const app = Fastify({
    loggerInstance,
    // Narinfo and NAR reads go to the read path first (src/http/read-path.ts); fastify gets the rest.
    serverFactory: (handler) => {
      const serve = (request: IncomingMessage, response: ServerResponse): void => {
        const logged = accessLog?.begin(request, response);
        deadlines.noteRequest(request, response);
        // A body's readers (src/util/read-chunk.ts) listen only while they wait for it, and learn of a
        // failure from `request.errored`; a client that goes away between two reads must not turn the
        // request's 'aborted' error into an uncaught exception.
        request.on('error', ignoreError);
        lingerAfterEarlyAnswer(request, response);
        if (!readPath(request, response)) {
          // fastify merges the head from setHeader's map anyway; the read path sends the id with its head.
          const id = requestIdOf(response);
          if (id !== undefined) response.setHeader('x-request-id', id);
          watchRequest?.(request, response);
          handler(request, response);
        }
        if (logged !== undefined) accessLog?.end(logged);
      };
      // Node checks headersTimeout on this interval (default 30 s).
      const connectionsCheckingInterval = Math.min(30_000, checkIntervalMs(idleTimeoutMs));
      let server: Server;
      if (options.tls === undefined) server = createServer({ connectionsCheckingInterval }, serve);
      else server = createHttpsServer(options.tls, serve, idleTimeoutMs, connectionsCheckingInterval);
      continueOnRead(server, serve);
      metrics?.countConnections(server);
      // The timeouts, set here since fastify only sets them on a server of its own. Uploads of many GB
      // may take hours, so no request has a deadline as a whole (requestTimeout and the socket timeout
      // off); a client that stalls or trickles is cut by the progress deadlines instead, one whose headers
      // do not arrive by headersTimeout, and an idle keep-alive connection by keepAliveTimeout.
      const deadlines = watchConnections(server, {
        secure: options.tls !== undefined,
        idleTimeoutMs,
        minBytesPerSecond: options.minTransferRate ?? DEFAULT_MIN_TRANSFER_RATE,
        onCut: (reason, socket) => {
          loggerInstance.info(
            { reason, remoteAddress: socket.remoteAddress, idleTimeoutMs },
            reason === 'idle' ? 'connection cut: no progress' : 'connection cut: transfer too slow',
          );
        },
      });
      server.keepAliveTimeout = options.keepAliveTimeoutMs ?? 65_000;
      server.headersTimeout = idleTimeoutMs;
      server.requestTimeout = 0;
      server.setTimeout(0);
      return server;
    },
    // fastify's own request logging stays off: requests are logged once, by the access log (access-log.ts,
    // which the read path's requests never pass through fastify to reach); errors are logged where handled.
    logController: new LogController({ disableRequestLogging: true }),
    // No per-request child logger (a measurable cost at tens of thousands of requests per second);
    // the error handler logs the method and URL itself.
    childLoggerFactory: (logger) => logger,
    exposeHeadRoutes: false,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { maxParamLength: 200 },
    trustProxy: false,
    // Push URLs, and the local store's root mount (/nix-cache-info, /<hash>.narinfo, /nar/…), are rewrites.
    rewriteUrl,
  });

  // Bodies are never parsed by fastify: NAR uploads stream, small bodies are read with a limit.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => {
    done(null, undefined);
  });

  // Connections busy when closing began become idle later (their response already promised keep-alive,
  // and Nix's curl keeps connections open): close them as they do, instead of waiting for the keep-alive
  // timeout to let the process exit.
  app.addHook('preClose', (done) => {
    closing = true;
    const sweep = setInterval(() => {
      app.server.closeIdleConnections();
    }, 100);
    sweep.unref();
    app.server.once('close', () => {
      clearInterval(sweep);
    });
    done();
  });

  app.setErrorHandler((error, request, reply) => {
    sendError(error, request, reply);
  });
  app.setNotFoundHandler((request, reply) => {
    sendError(
      new NotFoundError('NOT_FOUND', `no route for ${request.method} ${request.url.slice(0, 200)}`),
      request,
      reply,
    );
  });

  registerHealthRoutes(app, {
    readiness: new Readiness(context.service.db, context.service.blobs, {
      onFailure: (component, error) => {
        loggerInstance.warn({ err: error, component }, 'readiness check failed');
      },
    }),
    closing: () => closing,
  });
  if (metrics !== undefined && options.metricsAccess !== 'off') {
    registerMetricsRoute(app, context, metrics, options.metricsAccess ?? 'admin');
  }
  registerLandingRoute(app, context);
  registerApiRoutes(app, context);
  registerCacheInfoRoutes(app, context);
  registerNarRoutes(app, context);
  registerNarInfoRoutes(app, context);
  registerListingRoutes(app, context);
  registerBuildLogRoutes(app, context);
  registerRealisationRoutes(app, context);
  registerUnsupportedRoutes(app, context);
  if (options.localStore !== undefined) registerLocalStoreRoutes(app, options.localStore);
  return app;
}
