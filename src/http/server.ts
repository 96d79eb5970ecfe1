// Builds the HTTP front end: a fastify instance with every route, raw request bodies (routes stream or
// bound them themselves), and the one error handler. Listening and shutdown belong to the caller.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { NotFoundError } from '../errors.js';
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
import { chunkPool } from '../util/buffer-pool.js';

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
    localStore: options.localStore,
    rewriteUrl,
    closing: () => closing,
  });
  const metrics = context.metrics;
  const watchRequest =
    metrics === undefined ? undefined : requestWatcher(metrics, options.localStore?.mountPath);
  const app = Fastify({
    loggerInstance,
    // Narinfo and NAR reads go to the read path first (src/http/read-path.ts); fastify gets the rest.
    serverFactory: (handler) => {
      const serve = (request: IncomingMessage, response: ServerResponse): void => {
        deadlines.noteRequest(request, response);
        // A body's readers (src/util/read-chunk.ts) listen only while they wait for it, and learn of a
        // failure from `request.errored`; a client that goes away between two reads must not turn the
        // request's 'aborted' error into an uncaught exception.
        request.on('error', ignoreError);
        lingerAfterEarlyAnswer(request, response);
        if (!readPath(request, response)) {
          watchRequest?.(request, response);
          handler(request, response);
        }
      };
      const server = createServer(
        // Node checks headersTimeout on this interval (default 30 s).
        { connectionsCheckingInterval: Math.min(30_000, checkIntervalMs(idleTimeoutMs)) },
        serve,
      );
      continueOnRead(server, serve);
      metrics?.countConnections(server);
      // The timeouts, set here since fastify only sets them on a server of its own. Uploads of many GB
      // may take hours, so no request has a deadline as a whole (requestTimeout and the socket timeout
      // off); a client that stalls or trickles is cut by the progress deadlines instead, one whose headers
      // do not arrive by headersTimeout, and an idle keep-alive connection by keepAliveTimeout.
      const deadlines = watchConnections(server, {
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
    // Per-request logs would be the noisiest thing on the hot path; errors are logged where handled.
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
