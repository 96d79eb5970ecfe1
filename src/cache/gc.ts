// Garbage collection (`niche gc`, and on a schedule in `niche serve`):
// 1. per cache with a retention or a quota, the paths that go (src/cache/gc-plan.ts), removed in bounded
//    batches, each removal checked again atomically by the store (a path accessed, pinned or newly
//    referenced since the plan stays), with their realisations and no-longer-needed build logs;
// 2. pending uploads that expired;
// 3. NAR records that no path of any cache and no upload uses: marked with the time they were first seen
//    unused, and removed with their blobs once unused for the grace period (downloads that started before
//    can finish). Every upload writes its own blob key, so removing a record's blob never removes the
//    blob of an upload of the same file that came meanwhile (that upload records its own);
// 4. blobs under nar/ and log/ that no record names and that are older than the grace period: leftovers
//    of crashes between a blob write and its record, or between a record's removal and its blob's.
// Memory is bounded by the graph of one cache (typed arrays, about 100 bytes per path), every store call
// by a page size; the loop yields between pages, and rests so that it works half the time (DEFAULT_GC_DUTY),
// so the server and its database keep answering. One collector at a time:
// a lease in the metadata store (across processes and replicas), renewed as it goes; a collector that
// loses it stops. A crash at any point leaves nothing a second run does not finish.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep, setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Logger } from 'pino';

import type { CacheRecord, GcRefRow, MetadataStore } from '../db/metadata-store.js';
import { ConflictError, NotFoundError } from '../errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { CacheService } from './cache-service.js';
import { planCacheGc, type GcGraph } from './gc-plan.js';
import { HashPartTable } from './hash-part-table.js';

export const GC_LEASE = 'gc';
/**
 * How long the lease lasts without renewal; it is renewed at every page. A collector of the same host that
 * died is replaced at once; one of another replica, once its lease has run out.
 */
const LEASE_MS = 60_000;
/** Unused NAR records and unnamed blobs are left alone this long (default of `niche gc --grace`). */
export const DEFAULT_GC_GRACE_MS = 24 * 3_600_000;
/**
 * A blob without a record is at least this old before it goes, whatever the grace period: an upload writes
 * its blob before its record, and S3 dates an object written in parts by the start of the upload, so a
 * large upload's blob can look this old in the moment before its record is written.
 */
export const ORPHAN_MIN_AGE_MS = 6 * 3_600_000;
const PAGE = 1_000;
const DELETE_BATCH = 200;
const BLOB_DELETES_AT_ONCE = 8;
/**
 * The share of its run GC spends working: after each page or batch it rests, up to MAX_REST_MS, so that
 * the work took this fraction of the time. Collection is background work; flat out, its statements took
 * a core of PostgreSQL's from the server's queries on a two-core machine, and narinfo p99 during GC rose
 * to 5.6 times idle (docs/bench-gc.md).
 */
export const DEFAULT_GC_DUTY = 0.5;
const MAX_REST_MS = 1_000;

/** Rests between pieces of work so that they take `duty` of the time. */
class Pacer {
  readonly #duty: number;
  #since = performance.now();

  constructor(duty: number) {
    if (!(duty > 0 && duty <= 1)) throw new RangeError(`GC duty ${duty} is not in (0, 1]`);
    this.#duty = duty;
  }

  async rest(signal: AbortSignal | undefined): Promise<void> {
    const worked = performance.now() - this.#since;
    const rest = Math.min(MAX_REST_MS, (worked * (1 - this.#duty)) / this.#duty);
    if (rest >= 1) await sleep(rest, undefined, signal === undefined ? {} : { signal });
    this.#since = performance.now();
  }
}

export interface GcOptions {
  /** Only this cache's paths (the NAR and blob collection, which is global, is skipped). */
  readonly cache?: string | undefined;
  /** Report what would go; change nothing. */
  readonly dryRun?: boolean;
  readonly graceMs?: number;
  readonly now?: () => Date;
  readonly signal?: AbortSignal;
  /** The share of the time GC works, resting the rest (DEFAULT_GC_DUTY; 1: never rests). */
  readonly duty?: number;
}

export interface CacheGcReport {
  readonly cache: string;
  readonly paths: number;
  readonly byRetention: number;
  readonly byQuota: number;
  /** Planned removals the store refused because the path was accessed, pinned or referenced meanwhile. */
  readonly kept: number;
  /** Stored bytes freed (planned, for a dry run). */
  readonly bytes: number;
}

export interface GcReport {
  readonly dryRun: boolean;
  readonly caches: CacheGcReport[];
  readonly expiredUploads: number;
  /** NAR files removed (or, dry run: unused now, removed once unused for the grace period). */
  readonly nars: number;
  readonly narBytes: number;
  readonly orphanBlobs: number;
  readonly orphanBytes: number;
}

export class GcBusyError extends ConflictError {
  constructor() {
    super('GC_RUNNING', 'another garbage collection is running (niche serve or niche gc); try again later');
  }
}

export class GarbageCollector {
  readonly #service: CacheService;
  readonly #db: MetadataStore;
  readonly #blobs: BlobStore;
  readonly #logger: Logger;
  readonly #holder = `${hostname()} ${process.pid} ${randomUUID().slice(0, 8)}`;

  constructor(service: CacheService, logger: Logger) {
    this.#service = service;
    this.#db = service.db;
    this.#blobs = service.blobs;
    this.#logger = logger;
  }

  async run(options: GcOptions = {}): Promise<GcReport> {
    const now = options.now ?? (() => new Date());
    const dryRun = options.dryRun === true;
    const pacer = new Pacer(options.duty ?? DEFAULT_GC_DUTY);
    // Called before every page and batch: rests (pacing), then renews the lease.
    const renew = async (replacing?: string): Promise<void> => {
      options.signal?.throwIfAborted();
      await pacer.rest(options.signal);
      if (dryRun) return;
      const at = now();
      const until = new Date(at.getTime() + LEASE_MS);
      if (!(await this.#db.acquireLease(GC_LEASE, this.#holder, at, until, replacing))) {
        throw new GcBusyError();
      }
    };
    try {
      await renew();
    } catch (error) {
      // A collector of this host that died (kill -9, a crash) would hold the lease until it expires.
      const holder =
        dryRun || !(error instanceof GcBusyError) ? undefined : await this.#db.leaseHolder(GC_LEASE);
      if (holder === undefined || !deadHereAndNow(holder)) throw error;
      this.#logger.info({ holder }, 'garbage collection: taking over the lease of a collector that died');
      await renew(holder);
    }
    try {
      return await this.#collect(options, dryRun, now, renew);
    } finally {
      if (!dryRun) await this.#db.releaseLease(GC_LEASE, this.#holder);
    }
  }

  async #collect(
    options: GcOptions,
    dryRun: boolean,
    now: () => Date,
    renew: () => Promise<void>,
  ): Promise<GcReport> {
    const graceMs = options.graceMs ?? DEFAULT_GC_GRACE_MS;
    const caches = (await this.#db.listCaches()).filter(
      (cache) => options.cache === undefined || cache.name === options.cache,
    );
    if (options.cache !== undefined && caches.length === 0) {
      throw new NotFoundError('CACHE_NOT_FOUND', `no cache named ${options.cache}`);
    }
    const reports: CacheGcReport[] = [];
    for (const cache of caches) {
      if (cache.retentionMs === undefined && cache.maxSize === undefined) continue;
      reports.push(await this.#collectCache(cache, dryRun, now, renew));
    }
    let expiredUploads = 0;
    let nars = { count: 0, bytes: 0 };
    let orphans = { count: 0, bytes: 0 };
    if (options.cache === undefined) {
      if (!dryRun) expiredUploads = await this.#service.expirePendingUploads();
      nars = await this.#collectNars(dryRun, now, graceMs, renew);
      orphans = await this.#collectOrphanBlobs(dryRun, now, graceMs, renew);
    }
    const report: GcReport = {
      dryRun,
      caches: reports,
      expiredUploads,
      nars: nars.count,
      narBytes: nars.bytes,
      orphanBlobs: orphans.count,
      orphanBytes: orphans.bytes,
    };
    this.#logger.info({ gc: report }, dryRun ? 'garbage collection (dry run)' : 'garbage collection done');
    return report;
  }

  async #collectCache(
    cache: CacheRecord,
    dryRun: boolean,
    now: () => Date,
    renew: () => Promise<void>,
  ): Promise<CacheGcReport> {
    const graph = await this.#loadGraph(cache, renew);
    const at = now();
    const pins = (await this.#db.listPins(cache.id)).filter(
      (pin) => pin.expiresAt === undefined || pin.expiresAt > at,
    );
    const usage = await this.#db.getCacheUsage(cache.id);
    const pinned: number[] = [];
    for (const pin of pins) {
      const index = graph.hashParts.indexOf(pin.hashPart);
      if (index !== undefined) pinned.push(index);
    }
    const plan = planCacheGc(graph, {
      now: at.getTime(),
      retentionMs: cache.retentionMs,
      maxSize: cache.maxSize,
      storedBytes: usage.storedBytes,
      pinned,
    });
    if (plan.cyclic > 0) {
      this.#logger.warn({ cache: cache.name, paths: plan.cyclic }, 'paths on a reference cycle are kept');
    }
    const planned = plan.victims.length;
    if (dryRun || planned === 0) {
      return {
        cache: cache.name,
        paths: planned,
        byRetention: plan.byRetention,
        byQuota: planned - plan.byRetention,
        kept: 0,
        bytes: plan.freedBytes,
      };
    }
    let removed = 0;
    let removedByRetention = 0;
    let bytes = 0;
    for (let start = 0; start < planned; start += DELETE_BATCH) {
      await renew();
      const batch = Array.from(plan.victims.subarray(start, start + DELETE_BATCH), (index) => ({
        hashPart: graph.hashParts.at(index),
        accessedAtMost: graph.access[index] as number,
        index,
      }));
      const gone = await this.#db.deletePathsIfUnused(cache.id, batch, now());
      const goneSet = new Set(gone.map((path) => path.hashPart));
      for (const candidate of batch) {
        if (!goneSet.has(candidate.hashPart)) continue;
        removed += 1;
        if (start + batch.indexOf(candidate) < plan.byRetention) removedByRetention += 1;
        if (!graph.sharedFiles.has(candidate.index)) bytes += graph.fileSize[candidate.index] as number;
      }
      await this.#service.afterPathsRemoved(cache, gone);
      await yieldToEventLoop();
    }
    const report: CacheGcReport = {
      cache: cache.name,
      paths: removed,
      byRetention: removedByRetention,
      byQuota: removed - removedByRetention,
      kept: planned - removed,
      bytes,
    };
    this.#logger.info({ gc: report }, 'paths collected');
    return report;
  }

  async #loadGraph(
    cache: CacheRecord,
    renew: () => Promise<void>,
  ): Promise<GcGraph & { readonly hashParts: HashPartTable }> {
    const hashParts = new HashPartTable();
    let access = new Float64Array(1024);
    let fileSize = new Float64Array(1024);
    const sharedFiles = new Map<number, string>();
    let after = '';
    for (;;) {
      await renew();
      const page = await this.#db.scanGcPaths(cache.id, after, PAGE);
      for (const row of page) {
        const index = hashParts.length;
        if (index === access.length) {
          access = grow(access);
          fileSize = grow(fileSize);
        }
        hashParts.push(row.hashPart);
        access[index] = row.lastAccess;
        fileSize[index] = row.fileSize;
        if (row.sharesFile) sharedFiles.set(index, row.fileHash);
      }
      const last = page.at(-1);
      if (last === undefined || page.length < PAGE) break;
      after = last.hashPart;
      await yieldToEventLoop();
    }
    const outOfOrder = hashParts.firstOutOfOrder();
    if (outOfOrder !== undefined) {
      throw new Error(`the metadata store returned paths out of order at ${hashParts.at(outOfOrder)}`);
    }
    // Edges arrive grouped by the referenced path; kept as (referrer, target) pairs, then by referrer.
    let from = new Int32Array(4096);
    let to = new Int32Array(4096);
    let edges = 0;
    let cursor: GcRefRow | undefined;
    for (;;) {
      await renew();
      const page = await this.#db.scanGcRefs(cache.id, cursor, PAGE);
      for (const row of page) {
        const target = hashParts.indexOf(row.hashPart);
        const referrer = hashParts.indexOf(row.referrer);
        // A reference to a path outside the cache (an upstream's): nothing to keep here.
        if (target === undefined || referrer === undefined) continue;
        if (edges === from.length) {
          from = growInt(from);
          to = growInt(to);
        }
        from[edges] = referrer;
        to[edges] = target;
        edges += 1;
      }
      cursor = page.at(-1);
      if (cursor === undefined || page.length < PAGE) break;
      await yieldToEventLoop();
    }
    const count = hashParts.length;
    const refStart = new Int32Array(count + 1);
    for (let edge = 0; edge < edges; edge += 1) {
      const referrer = from[edge] as number;
      refStart[referrer + 1] = (refStart[referrer + 1] as number) + 1;
    }
    for (let index = 0; index < count; index += 1) {
      refStart[index + 1] = (refStart[index + 1] as number) + (refStart[index] as number);
    }
    const fill = refStart.slice(0, count);
    const refs = new Int32Array(edges);
    for (let edge = 0; edge < edges; edge += 1) {
      const referrer = from[edge] as number;
      const slot = fill[referrer] as number;
      refs[slot] = to[edge] as number;
      fill[referrer] = slot + 1;
    }
    return {
      hashParts,
      access: access.subarray(0, count),
      fileSize: fileSize.subarray(0, count),
      sharedFiles,
      refStart,
      refs,
    };
  }

  async #collectNars(
    dryRun: boolean,
    now: () => Date,
    graceMs: number,
    renew: () => Promise<void>,
  ): Promise<{ count: number; bytes: number }> {
    if (dryRun) {
      // Nothing is marked in a dry run: report every NAR file no path or upload uses now.
      let count = 0;
      let bytes = 0;
      let after = '';
      for (;;) {
        const page = await this.#db.listNars(after, PAGE);
        const unused = await this.#db.findUnusedNars(page.map((nar) => nar.fileHash));
        for (const nar of page) {
          if (!unused.has(nar.fileHash)) continue;
          count += 1;
          bytes += nar.fileSize;
        }
        const last = page.at(-1);
        if (last === undefined || page.length < PAGE) break;
        after = last.fileHash;
        await yieldToEventLoop();
      }
      return { count, bytes };
    }
    for (let after: string | undefined = ''; after !== undefined;) {
      await renew();
      after = await this.#db.markUnusedNars(after, PAGE, now());
      await yieldToEventLoop();
    }
    let count = 0;
    let bytes = 0;
    for (;;) {
      await renew();
      const taken = await this.#db.takeUnusedNars(new Date(now().getTime() - graceMs), DELETE_BATCH);
      if (taken.length === 0) break;
      await inBatches(taken, BLOB_DELETES_AT_ONCE, (nar) => this.#blobs.delete(nar.blobKey));
      count += taken.length;
      for (const nar of taken) bytes += nar.fileSize;
      this.#logger.debug({ nars: taken.length }, 'unused NAR files removed');
    }
    return { count, bytes };
  }

  async #collectOrphanBlobs(
    dryRun: boolean,
    now: () => Date,
    graceMs: number,
    renew: () => Promise<void>,
  ): Promise<{ count: number; bytes: number }> {
    let count = 0;
    let bytes = 0;
    const check = async (keys: string[]): Promise<void> => {
      await renew();
      const known = await this.#db.findKnownBlobKeys(keys);
      const cutoff = now().getTime() - Math.max(graceMs, ORPHAN_MIN_AGE_MS);
      await inBatches(
        keys.filter((key) => !known.has(key)),
        BLOB_DELETES_AT_ONCE,
        async (key) => {
          const stat = await this.#blobs.head(key);
          if (stat === undefined || (stat.modifiedAt?.getTime() ?? Infinity) >= cutoff) return;
          // Looked up again right before deleting: a record written since the listing keeps the blob.
          if ((await this.#db.findKnownBlobKeys([key])).size > 0) return;
          if (!dryRun) await this.#blobs.delete(key);
          count += 1;
          bytes += stat.size;
        },
      );
    };
    for (const prefix of ['nar/', 'log/']) {
      let keys: string[] = [];
      for await (const key of this.#blobs.list(prefix)) {
        keys.push(key);
        if (keys.length >= PAGE) {
          await check(keys);
          keys = [];
        }
      }
      if (keys.length > 0) await check(keys);
    }
    if (count > 0) this.#logger.info({ blobs: count, bytes, dryRun }, 'blobs without a record removed');
    return { count, bytes };
  }
}

/** Whether a lease holder (`<host> <pid> <id>`) is a process of this host that no longer exists. */
function deadHereAndNow(holder: string): boolean {
  const [host, pid] = holder.split(' ');
  if (host !== hostname() || pid === undefined || !/^\d+$/.test(pid) || Number(pid) === process.pid)
    return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function grow(array: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> {
  const bigger = new Float64Array(array.length * 2);
  bigger.set(array);
  return bigger;
}

function growInt(array: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> {
  const bigger = new Int32Array(array.length * 2);
  bigger.set(array);
  return bigger;
}

async function inBatches<T>(
  items: readonly T[],
  width: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  for (let start = 0; start < items.length; start += width) {
    await Promise.all(items.slice(start, start + width).map(work));
  }
}

export interface GcSchedule {
  /** Stops the schedule; a collection in progress is stopped at its next page and waited for. */
  stop(): Promise<void>;
}

/**
 * Runs GC every `intervalMs` (`niche serve`), the first time one interval after the start. A run that
 * finds another collector at work (a replica, `niche gc`) is skipped; a failed run is logged and the
 * schedule goes on.
 */
export function scheduleGc(
  collector: Pick<GarbageCollector, 'run'>,
  options: {
    readonly intervalMs: number;
    readonly graceMs: number;
    readonly logger: Logger;
    /** Told how each run ended (the server's metrics). */
    readonly onRun?: (result: GcReport | 'skipped' | 'failed') => void;
  },
): GcSchedule {
  const abort = new AbortController();
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const tick = (): void => {
    running = collector
      .run({ graceMs: options.graceMs, signal: abort.signal })
      .then(
        (report) => {
          options.onRun?.(report);
        },
        (error: unknown) => {
          if (abort.signal.aborted) return;
          if (error instanceof GcBusyError) {
            options.logger.info('garbage collection skipped: another is running');
            options.onRun?.('skipped');
          } else {
            options.logger.error({ err: error }, 'garbage collection failed');
            options.onRun?.('failed');
          }
        },
      )
      .finally(() => {
        running = undefined;
        if (!abort.signal.aborted) arm();
      });
  };
  const arm = (): void => {
    timer = setTimeout(tick, options.intervalMs);
    timer.unref();
  };
  arm();
  return {
    async stop() {
      abort.abort();
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}
