// Starts and stops a complete niche server: stores, default cache, cache service, HTTP front end.
// Used by `niche serve` and by tests that want a real server in-process.
import pino, { type Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import { AdminService, defaultKeyName } from '../cache/admin-service.js';
import { Authenticator } from '../cache/auth.js';
import { CacheService, type MemoryChange } from '../cache/cache-service.js';
import type { ServeConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { baseUrlResolver } from '../http/public-url.js';
import { scheduleGc, type GcReport, type GcSchedule } from '../cache/gc.js';
import { startMetricsListener, type MetricsListener } from '../http/metrics-listener.js';
import { buildHttpServer } from '../http/server.js';
import { checkMountPath } from '../localstore/local-store-config.js';
import { LocalStore } from '../localstore/local-store.js';
import { instrumentStore } from '../metrics/instrument-store.js';
import { ServerMetrics } from '../metrics/server-metrics.js';
import type { RunningSshServer } from '../ssh/ssh-server.js';
import { bootstrap, type BootstrapResult } from './bootstrap.js';
import { LogDestination, PIPE_ATOMIC_BYTES } from '../util/log-destination.js';
import { openStores, type Stores } from './data-dir.js';
import { IsolatedGarbageCollector, type RemovedPaths } from './isolated-gc.js';
import { AccessLog } from '../http/access-log.js';
import { listenedUrl, listenFailed, listenHttp, reloadTls } from './http-listeners.js';
import { loadTlsMaterial } from './tls-files.js';

export interface RunningServer {
  /** Where the first listen address answers, e.g. `http://127.0.0.1:5000`. */
  readonly url: string;
  /** The URL clients use: `public-url` if set, else `url`. */
  readonly publicUrl: string;
  readonly port: number;
  readonly stores: Stores;
  readonly service: CacheService;
  readonly http: FastifyInstance;
  readonly bootstrapped: BootstrapResult | undefined;
  /** The host's own Nix store, when served (`--local-store`). */
  readonly localStore: LocalStore | undefined;
  /** The embedded SSH servers (`--ssh-listen`), one per address. */
  readonly ssh: readonly RunningSshServer[];
  /** Where the separate metrics listener (`--metrics-listen`) answers, e.g. `http://127.0.0.1:9100`. */
  readonly metricsUrl: string | undefined;
  /** The server's metrics, when served anywhere. */
  readonly metrics: ServerMetrics | undefined;
  /**
   * Reads the TLS certificate and key again (SIGHUP): new connections get the new pair, open ones keep
   * theirs; a pair that fails its checks is logged and the old one stays. False then, or without TLS.
   */
  reloadTls(): Promise<boolean>;
  /** Stops accepting connections, finishes in-flight requests, closes the stores. */
  close(): Promise<void>;
}

/** How long closing waits for log lines still queued (a stuck or full log must not hold up an exit). */
const LOG_FLUSH_MS = 2_000;

export interface StartOptions {
  readonly logger?: Logger;
  /** How long keep-alive connections may idle (default 65 s); for tests. */
  readonly keepAliveTimeoutMs?: number;
  /** Set when this process is one worker of `niche serve --workers N` (src/app/cluster-worker.ts). */
  readonly worker?: WorkerRole | undefined;
}

/**
 * What changes when the server is one of several worker processes: the primary did what happens once
 * (data directory, migrations, the default cache and keys, expired uploads, stale Unix sockets) and
 * collects garbage and serves `--metrics-listen` itself; the workers share the listeners.
 */
export interface WorkerRole {
  /** The whole server's metrics (every process's, summed by the primary), for `GET /metrics`. */
  readonly clusterMetrics: () => Promise<string>;
  /** Tells the other workers what this one dropped from memory (CacheService's `peers`). */
  readonly peers: (change: MemoryChange) => void;
}

/**
 * The scheduled garbage collection of `niche serve` (none with `gc.interval = off`), in a child process
 * (src/app/isolated-gc.ts), counted in `metrics`; `removed` is told of the paths each batch removed.
 */
export function scheduleServerGc(
  config: ServeConfig,
  removed: RemovedPaths,
  logger: Logger,
  metrics: ServerMetrics | undefined,
): GcSchedule | undefined {
  if (config.gc.intervalMs === undefined) return undefined;
  return scheduleGc(new IsolatedGarbageCollector({ ...config, isolation: 'process' }, removed, logger), {
    intervalMs: config.gc.intervalMs,
    graceMs: config.gc.graceMs,
    logger,
    ...(metrics === undefined
      ? {}
      : {
          onRun: (result: GcReport | 'skipped' | 'failed') => {
            metrics.gcRun(
              typeof result === 'string'
                ? result
                : {
                    paths: result.caches.reduce((sum, cache) => sum + cache.paths, 0),
                    nars: result.nars,
                    bytes: result.narBytes + result.orphanBytes,
                  },
            );
          },
        }),
  });
}

export async function startServer(config: ServeConfig, options: StartOptions = {}): Promise<RunningServer> {
  // Without a logger of the caller's, log to stdout through a destination that never blocks or fails
  // serving (src/util/log-destination.ts); what it still holds at close gets a moment to be written.
  const worker = options.worker;
  const destination =
    options.logger === undefined
      ? new LogDestination(1, worker === undefined ? {} : { maxBatchBytes: PIPE_ATOMIC_BYTES })
      : undefined;
  const logger = options.logger ?? pino({ level: config.logLevel }, destination);
  const stores = await openStores(config);
  const servers: FastifyInstance[] = [];
  const sshServers: RunningSshServer[] = [];
  let metricsListener: MetricsListener | undefined;
  let localStore: LocalStore | undefined;
  let service: CacheService | undefined;
  let gcSchedule: GcSchedule | undefined;
  const closeAll = async (): Promise<void> => {
    await gcSchedule?.stop();
    // Every listener stops accepting at once; each finishes its own in-flight requests (SSH sessions end).
    await Promise.all([
      ...servers.map((server) => server.close()),
      ...sshServers.map((server) => server.close()),
      metricsListener?.close(),
    ]);
    localStore?.close();
    // Writes the accesses still held in memory.
    await service?.close();
    await stores.db.close();
    await stores.blobs.close();
    await destination?.flush(LOG_FLUSH_MS);
  };
  try {
    const bootstrapped = worker === undefined ? await bootstrap(stores.db, config) : undefined;
    // Metrics, when served anywhere: counted by the HTTP front end, the cache service (through its
    // observer interface) and the stores (wrapped); with metrics off, none of them pays anything.
    const metrics =
      config.metrics.access !== 'off' || config.metrics.listen !== undefined
        ? new ServerMetrics({ render: worker?.clusterMetrics })
        : undefined;
    const db = metrics === undefined ? stores.db : instrumentStore(stores.db, 'metadata', metrics);
    const blobs = metrics === undefined ? stores.blobs : instrumentStore(stores.blobs, 'blob', metrics);
    service = new CacheService({
      db,
      blobs,
      logger,
      limits: config.limits,
      observer: metrics,
      peers: worker?.peers,
    });
    metrics?.attachService(service);
    // Rows of uploads whose narinfo never came; they are ignored anyway, this only tidies up.
    if (worker === undefined) await service.expirePendingUploads();
    // Parse every cache's keys now: a corrupt key stops the start instead of failing requests later.
    for (const cache of await stores.db.listCaches()) await service.keys(cache);
    if (worker === undefined) gcSchedule = scheduleServerGc(config, service, logger, metrics);
    const authenticator = new Authenticator(db);
    const baseUrl = baseUrlResolver(config);
    const admin = new AdminService(db, service);
    if (config.localStore !== undefined) {
      checkMountPath(
        config.localStore,
        (await stores.db.listCaches()).map((cache) => cache.name),
      );
      localStore = await LocalStore.open(config.localStore, {
        dataDir: config.dataDir,
        keyName: defaultKeyName('local'),
      });
    }
    const localStoreMount =
      localStore === undefined
        ? undefined
        : {
            store: localStore,
            mountPath: localStore.config.mountPath,
            mountAtRoot: localStore.config.mountAtRoot,
          };
    if (config.ssh !== undefined) {
      // Loaded only when asked for: the SSH library is large.
      const { startSshServer } = await import('../ssh/ssh-server.js');
      for (const address of config.ssh.listen) {
        sshServers.push(
          await startSshServer({
            service,
            authenticator,
            hostKeyFile: config.ssh.hostKeyFile,
            host: address.host,
            port: address.port,
            maxSessions: config.ssh.maxSessions,
            maxSessionsPerKey: config.ssh.maxSessionsPerKey,
            log: logger,
            observer: metrics,
          }),
        );
      }
    }
    // A bad certificate or key stops the start (later, on SIGHUP, it is logged and the old pair stays).
    const tls = config.tls === undefined ? undefined : await loadTlsMaterial(config.tls);
    // Access lines are written whatever the log level, unless the log is silent.
    const accessLog =
      config.accessLog === undefined
        ? undefined
        : new AccessLog({
            logger: logger.child({}, { level: logger.level === 'silent' ? 'silent' : 'info' }),
            sampleRate: config.accessLog.sampleRate,
            localMountPath: localStoreMount?.mountPath,
          });
    // One fastify instance per address (a Node server listens once), all sharing the same services.
    for (const address of config.listen) {
      const http = buildHttpServer(
        { service, admin, authenticator, baseUrl, ssh: sshServers[0], metrics },
        {
          logger,
          metricsAccess: config.metrics.access,
          localStore: localStoreMount,
          keepAliveTimeoutMs: options.keepAliveTimeoutMs,
          idleTimeoutMs: config.connections.idleTimeoutMs,
          minTransferRate: config.connections.minTransferRate,
          accessLog,
          tls,
        },
      );
      servers.push(http);
      // A worker's Unix socket is the primary's (it removed a stale file before forking).
      await listenHttp(http, address, { shared: worker !== undefined });
    }
    if (metrics !== undefined && config.metrics.listen !== undefined && worker === undefined) {
      try {
        metricsListener = await startMetricsListener(metrics, config.metrics.listen, logger);
      } catch (error) {
        throw listenFailed(config.metrics.listen, error);
      }
    }
    const first = servers[0];
    if (first === undefined) throw new ConfigError('CONFIG_INVALID', 'no listen address configured');
    const { url, port } = listenedUrl(first, tls !== undefined);
    let closing: Promise<void> | undefined;
    const tlsConfig = config.tls;
    return {
      url,
      publicUrl: config.publicUrl ?? url,
      port,
      stores,
      service,
      http: first,
      bootstrapped,
      localStore,
      ssh: sshServers,
      metricsUrl: metricsListener?.url,
      metrics,
      reloadTls: () =>
        tlsConfig === undefined ? Promise.resolve(false) : reloadTls(servers, tlsConfig, logger),
      close: () => {
        closing ??= closeAll();
        return closing;
      },
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}
