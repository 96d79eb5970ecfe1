// The worker thread of src/app/gc-thread.ts: opens the stores, runs one garbage collection as `niche gc`
// would, reports the paths it removes and then the result, and closes the stores. Errors are reported,
// never thrown out of the thread.
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';

import { CacheService } from '../cache/cache-service.js';
import { GarbageCollector } from '../cache/gc.js';
import type { PathRecord } from '../db/metadata-store.js';
import { isNicheError } from '../errors.js';
import { lowerThreadPriority } from '../util/thread-priority.js';
import { openStores } from './data-dir.js';
import { GC_THREAD_NICENESS, type GcThreadData, type GcThreadMessage } from './gc-thread.js';

const port = parentPort;
if (port === null) throw new Error('gc-thread-worker.ts runs as a worker thread');
const data = workerData as GcThreadData;
const send = (message: GcThreadMessage): void => {
  port.postMessage(message);
};
const abort = new AbortController();
port.on('message', (message: unknown) => {
  if (message === 'abort') abort.abort();
});
// The thread lives as long as the collection, not as long as the port.
port.unref();

const logger = pino({ level: data.logLevel }, pino.destination({ fd: data.logFd, sync: true }));
// Collection is background work: when the cores are busy, the threads answering requests go first.
if (lowerThreadPriority(GC_THREAD_NICENESS) === undefined) {
  logger.debug('garbage collection: could not lower the thread priority');
}
try {
  const stores = await openStores(data);
  const service = new CacheService({
    db: stores.db,
    blobs: stores.blobs,
    logger,
    trackAccesses: false,
  });
  const afterPathsRemoved = service.afterPathsRemoved.bind(service);
  service.afterPathsRemoved = async (cache, paths: readonly PathRecord[]): Promise<void> => {
    send({ kind: 'removed', cacheId: cache.id, hashParts: paths.map((path) => path.hashPart) });
    await afterPathsRemoved(cache, paths);
  };
  try {
    const report = await new GarbageCollector(service, logger).run({ ...data.options, signal: abort.signal });
    send({ kind: 'done', report });
  } finally {
    await service.close();
    await stores.db.close();
    await stores.blobs.close();
  }
} catch (error) {
  send({
    kind: 'failed',
    error: isNicheError(error) ? { kind: error.kind, code: error.code } : undefined,
    message: error instanceof Error ? error.message : String(error),
  });
}
