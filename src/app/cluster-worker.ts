// One worker process of `niche serve --workers N`, forked by the primary (src/app/cluster-primary.ts) with
// this module as its program. It waits for the configuration the primary loaded, then runs the same
// server as a single process (src/app/server.ts) in its worker role: the listeners are shared through
// node:cluster, the primary did what happens once, and the metrics it serves are the whole server's.
//
// Signals: SIGTERM closes as a single server does (stop accepting, finish in-flight requests), then the
// process exits. SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and the primary,
// which gets it too, decides alone (it sends each worker SIGTERM). SIGHUP reloads the TLS certificate (the
// primary forwards its own). A worker whose primary is gone (its IPC channel closed) closes too.
import cluster from 'node:cluster';
import type { MemoryChange } from '../cache/cache-service.js';
import type { ServeConfig } from '../config.js';
import { isNicheError } from '../errors.js';
import { isToWorker, type FromWorker } from './cluster-messages.js';
import { boundHeapGrowth } from './heap-growth.js';
import { startServer, type RunningServer } from './server.js';

/** How long a worker waits for its configuration, and for the whole server's metrics. */
const CONFIG_WAIT_MS = 30_000;
const METRICS_WAIT_MS = 5_000;
/** After closing, how long anything left (a timer, a thread) may keep the process before it exits. */
const EXIT_AFTER_CLOSE_MS = 2_000;

function send(message: FromWorker): void {
  if (process.connected) process.send?.(message);
}

function ignore(): void {
  // SIGINT: the primary decides (see above); a failed write to a closed stdout: nothing to do
}

/** Pending `GET /metrics` answers by request id. */
const pendingMetrics = new Map<
  number,
  { resolve: (text: string) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }
>();
let nextMetricsId = 1;

function clusterMetrics(): Promise<string> {
  const id = nextMetricsId++;
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      pendingMetrics.delete(id);
      reject(new Error(`the primary did not send the metrics within ${METRICS_WAIT_MS} ms`));
    }, METRICS_WAIT_MS);
    pendingMetrics.set(id, { resolve, reject, timer });
    send({ niche: 'metrics', id });
  });
}

function waitForConfig(): Promise<ServeConfig> {
  return new Promise<ServeConfig>((resolve, reject) => {
    const timer = setTimeout(() => {
      process.off('message', onMessage);
      reject(new Error(`no configuration from the primary within ${CONFIG_WAIT_MS} ms`));
    }, CONFIG_WAIT_MS);
    const onMessage = (message: unknown): void => {
      if (!isToWorker(message) || message.niche !== 'start') return;
      clearTimeout(timer);
      process.off('message', onMessage);
      resolve(message.config);
    };
    process.on('message', onMessage);
    send({ niche: 'ready' });
  });
}

async function run(): Promise<void> {
  if (!cluster.isWorker) throw new Error('src/app/cluster-worker.ts runs only as a cluster worker');
  for (const stream of [process.stdout, process.stderr]) stream.on('error', ignore);
  process.on('SIGINT', ignore);
  // A message to a primary that just went away: the 'disconnect' below closes the worker.
  process.on('error', ignore);
  let server: RunningServer | undefined;
  let closing: Promise<void> | undefined;
  const close = (): void => {
    closing ??= (async () => {
      try {
        await server?.close();
      } finally {
        process.exitCode = 0;
        if (process.connected) process.disconnect();
        setTimeout(() => process.exit(0), EXIT_AFTER_CLOSE_MS).unref();
      }
    })();
  };
  // Until the server runs, a stop request ends the worker at once (nothing is in flight).
  process.on('SIGTERM', close);
  process.on('disconnect', close);
  const config = await waitForConfig();
  const memory: MemoryChange[] = [];
  process.on('message', (message: unknown) => {
    if (!isToWorker(message)) return;
    if (message.niche === 'snapshot') {
      const metrics = server?.metrics;
      if (metrics === undefined) return;
      metrics.snapshot().then(
        (snapshot) => {
          send({ niche: 'snapshot', id: message.id, metrics: snapshot });
        },
        () => {
          // the primary's wait is bounded: it renders without this worker
        },
      );
    } else if (message.niche === 'metrics') {
      const pending = pendingMetrics.get(message.id);
      if (pending === undefined) return;
      pendingMetrics.delete(message.id);
      clearTimeout(pending.timer);
      if (message.text !== undefined) pending.resolve(message.text);
      else pending.reject(new Error(message.error ?? 'no metrics from the primary'));
    } else if (message.niche === 'memory') {
      if (server === undefined) memory.push(message.change);
      else server.service.applyMemoryChange(message.change);
    }
  });
  boundHeapGrowth();
  try {
    server = await startServer(config, {
      worker: {
        clusterMetrics,
        peers: (change) => {
          send({ niche: 'memory', change });
        },
      },
    });
  } catch (error) {
    send({
      niche: 'failed',
      error: isNicheError(error)
        ? { kind: error.kind, code: error.code, message: error.message }
        : { message: error instanceof Error ? error.message : String(error) },
    });
    process.exitCode = 1;
    if (process.connected) process.disconnect();
    return;
  }
  for (const change of memory.splice(0)) server.service.applyMemoryChange(change);
  if (closing !== undefined) {
    // Stopped while starting: close what just started.
    await server.close();
    return;
  }
  const running = server;
  if (config.tls !== undefined) {
    process.on('SIGHUP', () => {
      void running.reloadTls();
    });
  }
  const local = running.localStore;
  send({
    niche: 'listening',
    info: {
      url: running.url,
      publicUrl: running.publicUrl,
      ssh: running.ssh.map((ssh) => ({ port: ssh.port, hostKey: ssh.hostKey })),
      localStore:
        local === undefined
          ? undefined
          : {
              storeDir: local.storeDir,
              mountPath: local.config.mountPath,
              mountAtRoot: local.config.mountAtRoot,
              publicKeys: local.publicKeys,
            },
    },
  });
}

await run();
