// The scheduled garbage collection of `niche serve`, on a worker thread with stores of its own. On the
// event loop that answers requests it held up every request: SQLite statements run synchronously, and
// removing 200 paths of a million-path cache is one transaction of about 100 ms (random deletes in five
// B-trees, then the WAL write and checkpoint); loading and planning the graph are seconds of JavaScript.
// docs/bench-gc.md measured narinfo hits at a tenth of their rate during GC that way. On its own thread the
// collection shares the machine's cores, not the event loop.
//
// The thread runs exactly what `niche gc` runs (src/cache/gc.ts, its own CacheService, accesses not
// recorded), so it behaves like a collector in another process: it takes the GC lease, and the server's
// rendered narinfos of removed paths are dropped when the thread reports each batch (otherwise they would
// expire within narInfoCacheTtlMs anyway). One thread per run: its memory (the graph of the largest cache)
// is returned when the run ends.
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

import type { DatabaseConfig, StorageConfig } from '../config.js';
import { GcBusyError, type GcOptions, type GcReport } from '../cache/gc.js';

/** What the thread needs to open the stores and run (structured-cloned into it). */
export interface GcThreadData {
  readonly storage: StorageConfig;
  readonly database: DatabaseConfig;
  readonly logLevel: string;
  readonly options: Pick<GcOptions, 'cache' | 'dryRun' | 'graceMs'>;
}

/** Messages from the thread. */
export type GcThreadMessage =
  | { readonly kind: 'removed'; readonly cacheId: number; readonly hashParts: readonly string[] }
  | { readonly kind: 'done'; readonly report: GcReport }
  | { readonly kind: 'failed'; readonly code: string | undefined; readonly message: string };

// The thread's module next to this one: .js when compiled; when run from source (tests, under tsx), .ts,
// which a worker thread only loads once tsx's loader is registered in it.
const FROM_SOURCE = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL(FROM_SOURCE ? './gc-thread-worker.ts' : './gc-thread-worker.js', import.meta.url);

function startWorker(data: GcThreadData): Worker {
  if (!FROM_SOURCE) return new Worker(WORKER_URL, { workerData: data });
  const tsx = import.meta.resolve('tsx/esm/api');
  const source = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(WORKER_URL.href)}); })`;
  return new Worker(source, { eval: true, workerData: data });
}

/**
 * Told of each batch of paths a collection removed, to drop their narinfos held in memory: the server's
 * CacheService, or, in the primary of `niche serve --workers N`, what tells every worker's.
 */
export interface RemovedPaths {
  forgetPaths(cacheId: number, hashParts: readonly string[]): void;
}

/** Runs GC like GarbageCollector.run, on a thread of its own (`service`: told of removals). */
export class ThreadedGarbageCollector {
  readonly #config: { readonly storage: StorageConfig; readonly database: DatabaseConfig };
  readonly #logLevel: string;
  readonly #service: RemovedPaths;
  readonly #logger: Logger;

  constructor(
    config: { readonly storage: StorageConfig; readonly database: DatabaseConfig; readonly logLevel: string },
    service: RemovedPaths,
    logger: Logger,
  ) {
    this.#config = { storage: config.storage, database: config.database };
    this.#logLevel = config.logLevel;
    this.#service = service;
    this.#logger = logger;
  }

  async run(options: GcOptions = {}): Promise<GcReport> {
    options.signal?.throwIfAborted();
    if (options.now !== undefined) throw new Error('GC on a thread runs on the real clock');
    const data: GcThreadData = {
      ...this.#config,
      logLevel: this.#logLevel,
      options: {
        ...(options.cache === undefined ? {} : { cache: options.cache }),
        ...(options.dryRun === undefined ? {} : { dryRun: options.dryRun }),
        ...(options.graceMs === undefined ? {} : { graceMs: options.graceMs }),
      },
    };
    const worker = startWorker(data);
    return new Promise<GcReport>((resolve, reject) => {
      let settled = false;
      const abort = (): void => {
        worker.postMessage('abort');
      };
      options.signal?.addEventListener('abort', abort, { once: true });
      const settle = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        options.signal?.removeEventListener('abort', abort);
        outcome();
      };
      worker.on('message', (message: GcThreadMessage) => {
        if (message.kind === 'removed') {
          this.#service.forgetPaths(message.cacheId, message.hashParts);
        } else if (message.kind === 'done') {
          settle(() => {
            resolve(message.report);
          });
        } else {
          settle(() => {
            reject(message.code === 'GC_RUNNING' ? new GcBusyError() : new Error(message.message));
          });
        }
      });
      worker.on('error', (error) => {
        this.#logger.error({ err: error }, 'garbage collection thread failed');
        settle(() => {
          reject(error);
        });
      });
      worker.on('exit', (code) => {
        settle(() => {
          reject(new Error(`the garbage collection thread exited (code ${code}) without a report`));
        });
      });
    });
  }
}
