// `niche serve --workers N` (N > 1): this process becomes a node:cluster primary that serves nothing
// itself. It does once what must happen once, forks N workers (src/app/cluster-worker.ts) that each run the
// whole HTTP (and SSH) server on the shared listeners, and looks after them:
//
// - Before forking: the data directory, schema migrations and the default cache with its key (opening
//   the stores, src/app/data-dir.ts and bootstrap.ts), expired pending uploads, every cache's keys parsed,
//   the SSH host key and the local store's key made if missing, the TLS pair checked, stale Unix socket
//   files removed. Each fails the start with the error and exit code one process would have had; so does a
//   worker that cannot start (say, the address is in use), whose error the primary reports as its own.
// - Scheduling: SCHED_RR, the primary accepts each connection and hands it to the workers in turn. With
//   SCHED_NONE every worker accepts on the shared socket and the kernel wakes whichever it likes, which
//   on Linux piles most connections onto a few processes (Node's documentation reports 70% on two of
//   eight); Nix keeps its connections open for many requests, so an unlucky placement lasts. Round robin
//   costs the primary one accept and one descriptor passed per connection, not per request. Node 20 has
//   no `reusePort`, which would let the kernel balance by hash instead.
// - Garbage collection is started here, in a child process (src/app/isolated-gc.ts), as in a single process: the
//   primary lives as long as the server, while a worker may be killed and restarted at any time (and a
//   worker's collection would stop with it). Each removed batch is sent to every worker, which drops those
//   narinfos from memory. The GC lease still keeps other collectors (`niche gc`, replicas) out.
// - Memory changes (a path or cache deleted, keys changed through one worker's API) are passed on to the
//   other workers at once; changes made elsewhere (the CLI, replicas) are seen within the caches' TTLs, as
//   by a single process.
// - Metrics: a scrape of `--metrics-listen` (served here) or of `GET /metrics` on the main port (a worker
//   asks here) gets every process's metrics summed (src/metrics/cluster-metrics.ts).
// - Signals: SIGTERM and SIGINT become SIGTERM to every worker (each finishes its in-flight requests), and
//   the primary exits once they all have, or kills the rest after SHUTDOWN_GRACE_MS. SIGHUP (TLS reload)
//   is forwarded.
// - A worker that dies is forked again after a delay that doubles with each recent death; after
//   MAX_RECENT_DEATHS within DEATH_WINDOW_MS the primary stops everything and exits with WORKERS_FAILING
//   rather than fork a broken worker forever.
import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import pino from 'pino';
import { CacheService } from '../cache/cache-service.js';
import type { GcSchedule } from '../cache/gc.js';
import type { ServeConfig } from '../config.js';
import { WorkerError } from '../errors.js';
import { startMetricsListener, type MetricsListener } from '../http/metrics-listener.js';
import { checkMountPath } from '../localstore/local-store-config.js';
import { LocalStore } from '../localstore/local-store.js';
import { defaultKeyName } from '../cache/admin-service.js';
import { aggregateMetrics } from '../metrics/cluster-metrics.js';
import { ServerMetrics, type MetricsSnapshot } from '../metrics/server-metrics.js';
import { LogDestination, PIPE_ATOMIC_BYTES } from '../util/log-destination.js';
import { bootstrap, type BootstrapResult } from './bootstrap.js';
import { isFromWorker, type ToWorker, type WorkerListening } from './cluster-messages.js';
import { openStores } from './data-dir.js';
import { listenFailed, removeStaleSocket } from './http-listeners.js';
import { scheduleServerGc } from './server.js';
import { loadTlsMaterial } from './tls-files.js';

/** How long workers get to start listening, and to finish their requests at shutdown. */
export const WORKER_START_MS = 60_000;
export const SHUTDOWN_GRACE_MS = 60_000;
/** How long a worker gets to send its metrics for a scrape (a stuck one is left out). */
const SNAPSHOT_WAIT_MS = 2_000;
/** Crash-loop guard: more deaths than this within the window and the primary gives up. */
const MAX_RECENT_DEATHS = 5;
const DEATH_WINDOW_MS = 60_000;
const FIRST_RESTART_DELAY_MS = 100;
const MAX_RESTART_DELAY_MS = 10_000;
/** How long queued log lines get at exit. */
const LOG_FLUSH_MS = 2_000;

// The worker's module next to this one: .js when compiled; .ts when run from source (tests, under tsx,
// whose loader the workers get through the primary's execArgv).
const WORKER_FILE = new URL(
  import.meta.url.endsWith('.ts') ? './cluster-worker.ts' : './cluster-worker.js',
  import.meta.url,
);

/** What `niche serve` prints at start (src/cli/commands/serve.ts), known once every worker listens. */
export interface ClusterStarted {
  readonly bootstrapped: BootstrapResult | undefined;
  /** The default cache's public keys, when it was bootstrapped. */
  readonly publicKeys: readonly string[];
  /** What the first worker reported. */
  readonly listening: WorkerListening;
  readonly localStoreGeneratedKeyFile: string | undefined;
  readonly metricsUrl: string | undefined;
}

export interface RunningCluster {
  readonly started: ClusterStarted;
  readonly workers: number;
  /** Rejects (WorkerError WORKERS_FAILING) if the workers die in a loop; everything is stopped then. */
  readonly failure: Promise<never>;
  /** Forwards SIGHUP: every worker reads the TLS certificate and key again. */
  reloadTls(): void;
  /**
   * SIGTERM to every worker, then waits for them (at most SHUTDOWN_GRACE_MS, then kills the rest).
   * Resolves with whether every worker finished in time.
   */
  close(): Promise<boolean>;
}

/** What happens once, before forking (see the top of this file). */
async function prepare(
  config: ServeConfig,
  logger: Logger,
): Promise<{
  bootstrapped: BootstrapResult | undefined;
  publicKeys: readonly string[];
  generatedKeyFile: string | undefined;
}> {
  const stores = await openStores(config);
  let bootstrapped: BootstrapResult | undefined;
  let publicKeys: readonly string[] = [];
  let cacheNames: string[];
  try {
    bootstrapped = await bootstrap(stores.db, config);
    const service = new CacheService({ db: stores.db, blobs: stores.blobs, logger, trackAccesses: false });
    await service.expirePendingUploads();
    const caches = await stores.db.listCaches();
    for (const cache of caches) await service.keys(cache);
    if (bootstrapped !== undefined) publicKeys = (await service.keys(bootstrapped.cache)).publicKeys;
    cacheNames = caches.map((cache) => cache.name);
    await service.close();
  } finally {
    await stores.db.close();
    await stores.blobs.close();
  }
  if (config.ssh !== undefined) {
    const { loadOrCreateHostKey } = await import('../ssh/ssh-server.js');
    await loadOrCreateHostKey(config.ssh.hostKeyFile);
  }
  let generatedKeyFile: string | undefined;
  if (config.localStore !== undefined) {
    checkMountPath(config.localStore, cacheNames);
    const local = await LocalStore.open(config.localStore, {
      dataDir: config.dataDir,
      keyName: defaultKeyName('local'),
    });
    generatedKeyFile = local.generatedKeyFile;
    local.close();
  }
  if (config.tls !== undefined) await loadTlsMaterial(config.tls);
  for (const address of config.listen) {
    if (!('socketPath' in address)) continue;
    try {
      await removeStaleSocket(address.socketPath);
    } catch (error) {
      throw listenFailed(address, error);
    }
  }
  return { bootstrapped, publicKeys, generatedKeyFile };
}

interface WorkerState {
  readonly worker: Worker;
  listening: boolean;
}

export async function startCluster(config: ServeConfig): Promise<RunningCluster> {
  if (!cluster.isPrimary) throw new Error('startCluster runs in the primary only');
  const destination = new LogDestination(1, { maxBatchBytes: PIPE_ATOMIC_BYTES });
  const logger = pino({ level: config.logLevel }, destination);
  let prepared: Awaited<ReturnType<typeof prepare>>;
  try {
    prepared = await prepare(config, logger);
  } catch (error) {
    await destination.flush(LOG_FLUSH_MS);
    throw error;
  }

  const states = new Map<number, WorkerState>();
  let stopping = false;
  let failed: ((error: Error) => void) | undefined;
  const failure = new Promise<never>((_resolve, reject) => {
    failed = reject;
  });
  // Whoever awaits it handles it; until then (or after), a rejection is not an unhandled one.
  failure.catch(() => undefined);

  const sendTo = (worker: Worker, message: ToWorker): void => {
    if (worker.isConnected()) worker.send(message);
  };

  // Metrics: the primary's own (process metrics, garbage collections) plus every worker's.
  let nextSnapshotId = 1;
  const pendingSnapshots = new Map<number, (snapshot: MetricsSnapshot) => void>();
  const snapshotOf = (worker: Worker): Promise<MetricsSnapshot | undefined> => {
    const id = nextSnapshotId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        pendingSnapshots.delete(id);
        logger.warn({ worker: worker.process.pid }, 'a worker sent no metrics in time; scraped without it');
        resolve(undefined);
      }, SNAPSHOT_WAIT_MS);
      pendingSnapshots.set(id, (snapshot) => {
        clearTimeout(timer);
        resolve(snapshot);
      });
      sendTo(worker, { niche: 'snapshot', id });
    });
  };
  const metricsOn = config.metrics.access !== 'off' || config.metrics.listen !== undefined;
  const own = metricsOn ? new ServerMetrics({ render: () => renderAll() }) : undefined;
  const renderAll = async (): Promise<string> => {
    const live = [...states.values()].filter((state) => state.listening && state.worker.isConnected());
    const snapshots = await Promise.all([own?.snapshot(), ...live.map((state) => snapshotOf(state.worker))]);
    return aggregateMetrics(snapshots.filter((snapshot) => snapshot !== undefined));
  };

  const broadcast = (message: ToWorker, except?: Worker): void => {
    for (const { worker } of states.values()) if (worker !== except) sendTo(worker, message);
  };

  let firstListening: WorkerListening | undefined;
  let startupError: Error | undefined;
  const onListening = new Set<() => void>();
  const deaths: number[] = [];

  const fork = (): void => {
    const worker = cluster.fork();
    const state: WorkerState = { worker, listening: false };
    states.set(worker.id, state);
    // A message to a worker whose channel just closed (it is dying) fails here, not in the primary.
    worker.on('error', (error: Error) => {
      logger.warn({ err: error, worker: worker.process.pid }, 'cannot reach a worker');
    });
    worker.on('message', (message: unknown) => {
      if (!isFromWorker(message)) return;
      switch (message.niche) {
        case 'ready':
          sendTo(worker, { niche: 'start', config });
          return;
        case 'listening':
          state.listening = true;
          firstListening ??= message.info;
          if (started) logger.info({ worker: worker.process.pid }, 'worker listening');
          for (const notify of onListening) notify();
          return;
        case 'failed': {
          const error =
            'code' in message.error
              ? new WorkerError(message.error.kind, message.error.code, message.error.message)
              : new Error(message.error.message);
          if (!started) startupError ??= error;
          else logger.error({ err: error, worker: worker.process.pid }, 'a worker failed to start');
          for (const notify of onListening) notify();
          return;
        }
        case 'snapshot':
          pendingSnapshots.get(message.id)?.(message.metrics);
          pendingSnapshots.delete(message.id);
          return;
        case 'metrics':
          renderAll().then(
            (text) => {
              sendTo(worker, { niche: 'metrics', id: message.id, text });
            },
            (error: unknown) => {
              sendTo(worker, { niche: 'metrics', id: message.id, error: String(error) });
            },
          );
          return;
        case 'memory':
          broadcast({ niche: 'memory', change: message.change }, worker);
          return;
      }
    });
  };

  let started = false;
  let restartTimer: NodeJS.Timeout | undefined;
  /** Set once every worker listens. */
  const gc: { schedule?: GcSchedule | undefined } = {};
  let metricsListener: MetricsListener | undefined;
  let closing: Promise<boolean> | undefined;

  const onExit = (worker: Worker, code: number | null, signal: NodeJS.Signals | null): void => {
    const state = states.get(worker.id);
    states.delete(worker.id);
    for (const notify of onListening) notify();
    if (stopping || !started) return;
    const now = Date.now();
    deaths.push(now);
    while (deaths.length > 0 && (deaths[0] ?? now) < now - DEATH_WINDOW_MS) deaths.shift();
    if (deaths.length > MAX_RECENT_DEATHS) {
      logger.fatal(
        { worker: worker.process.pid, code, signal },
        `${deaths.length} workers died within ${DEATH_WINDOW_MS / 1000} s; stopping`,
      );
      failed?.(
        new WorkerError(
          'internal',
          'WORKERS_FAILING',
          `${deaths.length} worker processes died within ${DEATH_WINDOW_MS / 1000} s (the last: ${signal ?? `exit code ${code}`}); see the log`,
        ),
      );
      void close();
      return;
    }
    const delay = Math.min(FIRST_RESTART_DELAY_MS * 2 ** (deaths.length - 1), MAX_RESTART_DELAY_MS);
    logger.error(
      { worker: worker.process.pid, code, signal, listening: state?.listening ?? false, restartInMs: delay },
      'worker exited unexpectedly; starting another',
    );
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      if (!stopping) fork();
    }, delay);
  };

  const stopWorkers = async (): Promise<boolean> => {
    for (const { worker } of states.values()) worker.process.kill('SIGTERM');
    const allGone = new Promise<boolean>((resolve) => {
      const check = (): void => {
        if (states.size === 0) {
          onListening.delete(check);
          resolve(true);
        }
      };
      onListening.add(check);
      check();
    });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        resolve(false);
      }, SHUTDOWN_GRACE_MS);
    });
    const clean = await Promise.race([allGone, late]);
    clearTimeout(timer);
    if (!clean) {
      logger.error(
        { workers: [...states.values()].map((state) => state.worker.process.pid) },
        `workers still busy after ${SHUTDOWN_GRACE_MS / 1000} s; killed`,
      );
      for (const { worker } of states.values()) worker.process.kill('SIGKILL');
      await allGone;
    }
    return clean;
  };

  const close = (): Promise<boolean> => {
    closing ??= (async () => {
      stopping = true;
      clearTimeout(restartTimer);
      cluster.off('exit', onExit);
      cluster.on('exit', (worker) => {
        states.delete(worker.id);
        for (const notify of onListening) notify();
      });
      await gc.schedule?.stop();
      const clean = await stopWorkers();
      await metricsListener?.close();
      await destination.flush(LOG_FLUSH_MS);
      return clean;
    })();
    return closing;
  };

  cluster.schedulingPolicy = cluster.SCHED_RR;
  cluster.setupPrimary({
    exec: fileURLToPath(WORKER_FILE),
    args: [],
    execArgv: process.execArgv,
    serialization: 'advanced',
  });
  cluster.on('exit', onExit);
  for (let i = 0; i < config.workers; i++) fork();

  // Every worker listening, or the first failure, within WORKER_START_MS.
  const outcome = await new Promise<'ok' | 'failed' | 'timeout'>((resolve) => {
    const timer = setTimeout(() => {
      onListening.delete(check);
      resolve('timeout');
    }, WORKER_START_MS);
    const check = (): void => {
      const listening = [...states.values()].filter((state) => state.listening).length;
      const result =
        startupError !== undefined || states.size < config.workers
          ? 'failed'
          : listening === config.workers
            ? 'ok'
            : undefined;
      if (result === undefined) return;
      clearTimeout(timer);
      onListening.delete(check);
      resolve(result);
    };
    onListening.add(check);
  });
  if (outcome !== 'ok' || firstListening === undefined) {
    await close();
    throw (
      startupError ??
      new WorkerError(
        'internal',
        'WORKERS_FAILING',
        outcome === 'timeout'
          ? `the workers did not all listen within ${WORKER_START_MS / 1000} s`
          : 'a worker process exited while starting; see the log',
      )
    );
  }
  started = true;

  gc.schedule = scheduleServerGc(
    config,
    {
      forgetPaths: (cacheId, hashParts) => {
        broadcast({ niche: 'memory', change: { kind: 'narinfos', cacheId, hashParts: [...hashParts] } });
      },
    },
    logger,
    own,
  );
  if (own !== undefined && config.metrics.listen !== undefined) {
    try {
      metricsListener = await startMetricsListener(own, config.metrics.listen, logger);
    } catch (error) {
      await close();
      throw listenFailed(config.metrics.listen, error);
    }
  }
  logger.info({ workers: config.workers }, 'workers listening');

  return {
    started: {
      bootstrapped: prepared.bootstrapped,
      publicKeys: prepared.publicKeys,
      listening: firstListening,
      localStoreGeneratedKeyFile: prepared.generatedKeyFile,
      metricsUrl: metricsListener?.url,
    },
    workers: config.workers,
    failure,
    reloadTls: () => {
      for (const { worker } of states.values()) worker.process.kill('SIGHUP');
    },
    close,
  };
}
