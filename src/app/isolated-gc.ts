// Garbage collection away from the event loop that answers requests, with stores of its own. On that event
// loop it held up every request: SQLite statements run synchronously, and removing 200 paths of a
// million-path cache is one transaction of about 100 ms (random deletes in five B-trees, then the WAL write
// and checkpoint); loading and planning the graph are seconds of JavaScript. docs/bench-gc.md measured
// narinfo hits at a tenth of their rate during GC that way.
//
// The collection runs exactly what `niche gc` runs (src/cache/gc.ts, its own CacheService, accesses not
// recorded), in src/app/isolated-gc-entry.ts, so it behaves like a collector in another process: it takes
// the GC lease, and the server's rendered narinfos of removed paths are dropped when the collection reports
// each batch (otherwise they would expire within narInfoCacheTtlMs anyway). It runs in one of two places:
// - `process` (the schedule of `niche serve`): a child process per run. The graph of a million-path cache
//   is about 100 MiB of typed arrays, and the collection has its own database connection and page cache;
//   in the server's process they came on top of its own memory (docs/bench-gc.md: 262 MiB under load, 426
//   MiB while collecting). In a child they are the child's, returned whole when it exits, and a collection
//   that runs out of memory cannot take the server down. The child exits as soon as the server does (the
//   IPC channel closes): every step of a collection is safe to stop at, as after kill -9.
// - `thread` (`niche gc`, which is already a process of its own): a worker thread per run.
//
// Either way the JavaScript heap is bounded (GC_HEAP_LIMITS). The graph and the plan are typed arrays,
// outside that heap; what is in it is per page or per batch, so a million-path cache needs about 20 MiB
// live. Unbounded, V8 let garbage from the pages and batches pile up to over 100 MiB before collecting it
// (docs/bench-gc.md); bounded, it collects sooner. A collection that really needs more fails with
// GC_OUT_OF_MEMORY, having deleted only what it had checked, like any interrupted collection.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

import type { DatabaseConfig, StorageConfig } from '../config.js';
import { GcBusyError, type GcOptions, type GcReport } from '../cache/gc.js';
import { IsolatedGcError, type ErrorCode, type ErrorKind } from '../errors.js';

/**
 * The collection's nice value (src/util/thread-priority.ts). Its database statements, and on PostgreSQL the
 * server process running them, keep their priority; its own CPU (paging, planning, SQLite's work) yields.
 */
export const GC_NICENESS = 10;

/**
 * The bounds of the collection's JavaScript heap, in MiB (typed arrays are outside them). Far above what it
 * needs to start: a thread started below what V8 needs to load its snapshot takes the whole process down
 * on Node 24, not only the thread.
 */
export const GC_HEAP_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 } as const;

/** Where a collection runs: a child process (the server's schedule) or a worker thread (`niche gc`). */
export type GcIsolation = 'process' | 'thread';

function outOfMemory(): IsolatedGcError {
  return new IsolatedGcError(
    'internal',
    'GC_OUT_OF_MEMORY',
    `garbage collection needed more than the ${GC_HEAP_LIMITS.maxOldGenerationSizeMb} MiB of heap ` +
      'it may use, and stopped; what it deleted before stays deleted',
  );
}

/** What the collection needs to open the stores and run (structured-cloned to it). */
export interface IsolatedGcData {
  readonly storage: StorageConfig;
  readonly database: DatabaseConfig;
  readonly logLevel: string;
  /** Where its log lines go: 1 (the server's log), or 2 (`niche gc`, whose report is on stdout). */
  readonly logFd: 1 | 2;
  readonly options: Pick<GcOptions, 'cache' | 'dryRun' | 'graceMs'>;
}

/** Messages to a collection running in a child process: first its data, then perhaps `abort`. */
export type IsolatedGcCommand = { readonly kind: 'start'; readonly data: IsolatedGcData } | 'abort';

/** Messages from the collection. */
export type IsolatedGcMessage =
  | { readonly kind: 'removed'; readonly cacheId: number; readonly hashParts: readonly string[] }
  | { readonly kind: 'done'; readonly report: GcReport }
  | {
      readonly kind: 'failed';
      /** The NicheError's kind and code, if it was one. */
      readonly error: { readonly kind: ErrorKind; readonly code: ErrorCode } | undefined;
      readonly message: string;
    };

// The collection's module next to this one: .js when compiled; when run from source (tests, under tsx),
// .ts, which a thread or a child only loads once tsx's loader is registered in it.
const FROM_SOURCE = import.meta.url.endsWith('.ts');
const ENTRY_URL = new URL(FROM_SOURCE ? './isolated-gc-entry.ts' : './isolated-gc-entry.js', import.meta.url);

/** What a running collection, in a thread or a process, tells its runner. */
interface CollectionEvents {
  readonly message: (message: IsolatedGcMessage) => void;
  readonly error: (error: Error) => void;
  /** It ended (without a report, if none came before). */
  readonly exit: (code: number | null, signal: NodeJS.Signals | null) => void;
}

/** Starts a collection; the result stops it early (cooperatively: between pages and batches). */
type StartCollection = (data: IsolatedGcData, events: CollectionEvents) => { abort(): void };

const startThread: StartCollection = (data, events) => {
  const options = { workerData: data, resourceLimits: GC_HEAP_LIMITS };
  let worker: Worker;
  if (FROM_SOURCE) {
    const tsx = import.meta.resolve('tsx/esm/api');
    const source = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(ENTRY_URL.href)}); })`;
    worker = new Worker(source, { ...options, eval: true });
  } else {
    worker = new Worker(ENTRY_URL, options);
  }
  worker.on('message', events.message);
  worker.on('error', events.error);
  worker.on('exit', (code) => {
    events.exit(code, null);
  });
  return {
    abort: () => {
      worker.postMessage('abort');
    },
  };
};

const startProcess: StartCollection = (data, events) => {
  const child = fork(fileURLToPath(ENTRY_URL), [], {
    execArgv: [
      ...(FROM_SOURCE ? ['--import', import.meta.resolve('tsx')] : []),
      `--max-old-space-size=${GC_HEAP_LIMITS.maxOldGenerationSizeMb}`,
      // V8's young generation is three semi-spaces.
      `--max-semi-space-size=${Math.ceil(GC_HEAP_LIMITS.maxYoungGenerationSizeMb / 3)}`,
    ],
    serialization: 'advanced',
    // Its log lines go where the server's go; it reads nothing.
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  child.on('message', events.message);
  child.on('error', events.error);
  child.on('exit', events.exit);
  const send = (command: IsolatedGcCommand): void => {
    if (child.connected) child.send(command);
  };
  send({ kind: 'start', data });
  return {
    abort: () => {
      send('abort');
    },
  };
};

/**
 * Told of each batch of paths a collection removed, to drop their narinfos held in memory: the server's
 * CacheService, or, in the primary of `niche serve --workers N`, what tells every worker's.
 */
export interface RemovedPaths {
  forgetPaths(cacheId: number, hashParts: readonly string[]): void;
}

/** Runs GC like GarbageCollector.run, in a thread or a process of its own (`service`: told of removals). */
export class IsolatedGarbageCollector {
  readonly #config: { readonly storage: StorageConfig; readonly database: DatabaseConfig };
  readonly #logLevel: string;
  readonly #logFd: 1 | 2;
  readonly #isolation: GcIsolation;
  readonly #service: RemovedPaths;
  readonly #logger: Logger;

  constructor(
    config: {
      readonly storage: StorageConfig;
      readonly database: DatabaseConfig;
      readonly logLevel: string;
      readonly logFd?: 1 | 2;
      readonly isolation: GcIsolation;
    },
    service: RemovedPaths,
    logger: Logger,
  ) {
    this.#config = { storage: config.storage, database: config.database };
    this.#logLevel = config.logLevel;
    this.#logFd = config.logFd ?? 1;
    this.#isolation = config.isolation;
    this.#service = service;
    this.#logger = logger;
  }

  async run(options: GcOptions = {}): Promise<GcReport> {
    options.signal?.throwIfAborted();
    if (options.now !== undefined) throw new Error('an isolated GC runs on the real clock');
    const data: IsolatedGcData = {
      ...this.#config,
      logLevel: this.#logLevel,
      logFd: this.#logFd,
      options: {
        ...(options.cache === undefined ? {} : { cache: options.cache }),
        ...(options.dryRun === undefined ? {} : { dryRun: options.dryRun }),
        ...(options.graceMs === undefined ? {} : { graceMs: options.graceMs }),
      },
    };
    const where = this.#isolation;
    return new Promise<GcReport>((resolve, reject) => {
      let settled = false;
      const settle = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        options.signal?.removeEventListener('abort', abort);
        outcome();
      };
      const collection = (where === 'process' ? startProcess : startThread)(data, {
        message: (message) => {
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
                    : new IsolatedGcError(error.kind, error.code, message.message),
              );
            });
          }
        },
        error: (error) => {
          const exhausted = (error as { code?: unknown }).code === 'ERR_WORKER_OUT_OF_MEMORY';
          this.#logger.error({ err: error }, `garbage collection ${where} failed`);
          settle(() => {
            reject(exhausted ? outOfMemory() : error);
          });
        },
        exit: (code, signal) => {
          settle(() => {
            // V8 aborts a process whose heap is exhausted (a thread's is ERR_WORKER_OUT_OF_MEMORY).
            if (signal === 'SIGABRT') reject(outOfMemory());
            else {
              const how = signal === null ? `code ${code}` : signal;
              reject(new Error(`the garbage collection ${where} exited (${how}) without a report`));
            }
          });
        },
      });
      function abort(): void {
        collection.abort();
      }
      options.signal?.addEventListener('abort', abort, { once: true });
    });
  }
}
