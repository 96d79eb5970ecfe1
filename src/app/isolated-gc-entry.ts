// The collection of src/app/isolated-gc.ts, as a worker thread or a child process: opens the stores, runs
// one garbage collection as `niche gc` would, reports the paths it removes, closes the stores, then reports
// the result. Errors are reported, never thrown out.
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';

import { CacheService } from '../cache/cache-service.js';
import { GarbageCollector } from '../cache/gc.js';
import type { PathRecord } from '../db/metadata-store.js';
import { isNicheError } from '../errors.js';
import { lowerThreadPriority } from '../util/thread-priority.js';
import { openStores } from './data-dir.js';
import {
  GC_NICENESS,
  type IsolatedGcCommand,
  type IsolatedGcData,
  type IsolatedGcMessage,
} from './isolated-gc.js';

/** The runner, from here. */
interface Runner {
  readonly data: IsolatedGcData;
  /** Resolves once the message is on its way (a process's last one must be before it exits). */
  send(message: IsolatedGcMessage): Promise<void>;
}

const abort = new AbortController();
let finished = false;

function threadRunner(): Runner | undefined {
  const port = parentPort;
  if (port === null) return undefined;
  port.on('message', (command: IsolatedGcCommand) => {
    if (command === 'abort') abort.abort();
  });
  // The thread lives as long as the collection, not as long as the port.
  port.unref();
  return {
    data: workerData as IsolatedGcData,
    send: (message) => {
      port.postMessage(message);
      return Promise.resolve();
    },
  };
}

async function processRunner(): Promise<Runner | undefined> {
  if (process.send === undefined) return undefined;
  // The server is gone (killed, or its channel closed): stop at once, as if killed with it. Every step of
  // a collection is safe to stop at; left running, this one would hold the GC lease of a dead server.
  process.on('disconnect', () => {
    if (!finished) process.exit(1);
  });
  const data = await new Promise<IsolatedGcData>((resolve) => {
    process.on('message', (command: IsolatedGcCommand) => {
      if (command === 'abort') abort.abort();
      else resolve(command.data);
    });
  });
  // Like the thread: the process lives as long as the collection, not as long as the channel.
  process.channel?.unref();
  return {
    data,
    send: (message) =>
      new Promise((resolve, reject) => {
        process.send?.(message, undefined, {}, (error: Error | null) => {
          if (error === null) resolve();
          else reject(error);
        });
      }),
  };
}

const runner = threadRunner() ?? (await processRunner());
if (runner === undefined) throw new Error('isolated-gc-entry.ts runs as a worker thread or a child process');
const { data } = runner;
// A child's lines name the server it collects for.
const logger = pino({ level: data.logLevel }, pino.destination({ fd: data.logFd, sync: true })).child(
  parentPort === null ? { ppid: process.ppid } : {},
);
// Collection is background work: when the cores are busy, the threads answering requests go first.
if (lowerThreadPriority(GC_NICENESS) === undefined) {
  logger.debug('garbage collection: could not lower the thread priority');
}
let outcome: IsolatedGcMessage;
try {
  const stores = await openStores(data);
  try {
    const service = new CacheService({ db: stores.db, blobs: stores.blobs, logger, trackAccesses: false });
    const afterPathsRemoved = service.afterPathsRemoved.bind(service);
    service.afterPathsRemoved = async (cache, paths: readonly PathRecord[]): Promise<void> => {
      await runner.send({
        kind: 'removed',
        cacheId: cache.id,
        hashParts: paths.map((path) => path.hashPart),
      });
      await afterPathsRemoved(cache, paths);
    };
    try {
      const report = await new GarbageCollector(service, logger).run({
        ...data.options,
        signal: abort.signal,
      });
      outcome = { kind: 'done', report };
    } finally {
      await service.close();
    }
  } finally {
    await stores.db.close();
    await stores.blobs.close();
  }
} catch (error) {
  outcome = {
    kind: 'failed',
    error: isNicheError(error) ? { kind: error.kind, code: error.code } : undefined,
    message: error instanceof Error ? error.message : String(error),
  };
}
if (parentPort === null) {
  // In a process of its own, what the collection cost is known: the server's log keeps it.
  logger.info(
    { peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) },
    'garbage collection process ended',
  );
}
finished = true;
await runner.send(outcome);
