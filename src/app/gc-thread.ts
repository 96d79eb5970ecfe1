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
// is returned when the run ends. `niche gc` runs its collection the same way.
//
// The thread's JavaScript heap is bounded (GC_THREAD_HEAP_LIMITS). The graph and the plan are typed arrays,
// outside that heap; what is in it is per page or per batch, so a million-path cache needs about 20 MiB
// live. Unbounded, V8 let garbage from the pages and batches pile up to over 100 MiB before collecting it
// (docs/bench-gc.md); bounded, it collects sooner. A collection that really needs more fails with
// GC_OUT_OF_MEMORY, having deleted only what it had checked, like any interrupted collection.
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

import type { DatabaseConfig, StorageConfig } from '../config.js';
import { GcBusyError, type GcOptions, type GcReport } from '../cache/gc.js';
import { GcThreadError, type ErrorCode, type ErrorKind } from '../errors.js';

/**
 * The GC thread's nice value (src/util/thread-priority.ts). Its database statements, and on PostgreSQL the
 * server process running them, keep their priority; its own CPU (paging, planning, SQLite's work) yields.
 */
export const GC_THREAD_NICENESS = 10;

/**
 * The bounds of the GC thread's JavaScript heap, in MiB (typed arrays are outside them). Far above what a
 * thread needs to start: one started below what V8 needs to load its snapshot takes the whole process down
 * on Node 24, not only the thread.
 */
export const GC_THREAD_HEAP_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 } as const;

function outOfMemory(): GcThreadError {
  return new GcThreadError(
    'internal',
    'GC_OUT_OF_MEMORY',
    `garbage collection needed more than the ${GC_THREAD_HEAP_LIMITS.maxOldGenerationSizeMb} MiB of heap ` +
      'its thread may use, and stopped; what it deleted before stays deleted',
  );
}

/** What the thread needs to open the stores and run (structured-cloned into it). */
export interface GcThreadData {
  readonly storage: StorageConfig;
  readonly database: DatabaseConfig;
  readonly logLevel: string;
  /** Where the thread's log lines go: 1 (the server's log), or 2 (`niche gc`, whose report is on stdout). */
  readonly logFd: 1 | 2;
  readonly options: Pick<GcOptions, 'cache' | 'dryRun' | 'graceMs'>;
}

/** Messages from the thread. */
export type GcThreadMessage =
  | { readonly kind: 'removed'; readonly cacheId: number; readonly hashParts: readonly string[] }
  | { readonly kind: 'done'; readonly report: GcReport }
  | {
      readonly kind: 'failed';
      /** The NicheError's kind and code, if it was one. */
      readonly error: { readonly kind: ErrorKind; readonly code: ErrorCode } | undefined;
      readonly message: string;
    };

// The thread's module next to this one: .js when compiled; when run from source (tests, under tsx), .ts,
// which a worker thread only loads once tsx's loader is registered in it.
const FROM_SOURCE = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL(FROM_SOURCE ? './gc-thread-worker.ts' : './gc-thread-worker.js', import.meta.url);

function startWorker(data: GcThreadData): Worker {
  const options = { workerData: data, resourceLimits: GC_THREAD_HEAP_LIMITS };
  if (!FROM_SOURCE) return new Worker(WORKER_URL, options);
  const tsx = import.meta.resolve('tsx/esm/api');
  const source = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(WORKER_URL.href)}); })`;
  return new Worker(source, { ...options, eval: true });
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
  readonly #logFd: 1 | 2;
  readonly #service: RemovedPaths;
  readonly #logger: Logger;

  constructor(
    config: {
      readonly storage: StorageConfig;
      readonly database: DatabaseConfig;
      readonly logLevel: string;
      readonly logFd?: 1 | 2;
    },
    service: RemovedPaths,
    logger: Logger,
  ) {
    this.#config = { storage: config.storage, database: config.database };
    this.#logLevel = config.logLevel;
    this.#logFd = config.logFd ?? 1;
    this.#service = service;
    this.#logger = logger;
  }

  async run(options: GcOptions = {}): Promise<GcReport> {
    options.signal?.throwIfAborted();
    if (options.now !== undefined) throw new Error('GC on a thread runs on the real clock');
    const data: GcThreadData = {
      ...this.#config,
      logLevel: this.#logLevel,
      logFd: this.#logFd,
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
            const { error } = message;
            reject(
              error === undefined
                ? new Error(message.message)
                : error.code === 'GC_RUNNING'
                  ? new GcBusyError()
                  : new GcThreadError(error.kind, error.code, message.message),
            );
          });
        }
      });
      worker.on('error', (error) => {
        const exhausted = (error as { code?: unknown }).code === 'ERR_WORKER_OUT_OF_MEMORY';
        this.#logger.error({ err: error }, 'garbage collection thread failed');
        settle(() => {
          reject(exhausted ? outOfMemory() : error);
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
