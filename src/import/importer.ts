// `niche import`: adopts an existing binary cache (a `nix copy --to file://` directory or an S3 bucket)
// into a niche cache. Every narinfo is read first (they are small: 100k paths fit in memory, the NARs are
// never held), so the paths can be imported in dependency order, since the cache takes a path only once its
// references are there. Each path goes through CacheService.importPath, which verifies the NAR against the
// narinfo while it streams, keeps the narinfo's signatures and adds the cache's own.
//
// Nothing stops at the first bad path: whatever cannot be imported is reported with a reason (and the
// paths that depend on it with theirs), the rest goes in. A run is resumable: a path already in the cache
// costs a narinfo read and a database lookup, and its NAR is not opened again. Only failures of niche's own
// stores (disk, database) stop the run, since every further path would fail the same way.
import type { Readable } from 'node:stream';
import type { CacheService } from '../cache/cache-service.js';
import type { CacheRecord } from '../db/metadata-store.js';
import { InvalidInputError, NicheError, NotFoundError } from '../errors.js';
import { parseCacheInfo } from '../nix/cache-info.js';
import { isCompression } from '../nix/compression.js';
import { parseNarInfo } from '../nix/narinfo.js';
import { runInDependencyOrder, type DependencyNode } from './dependency-order.js';
import {
  describeError,
  relativeUrlSegments,
  SourceFileMissingError,
  SourceReadError,
  UnsupportedNarUrlError,
  type ImportSource,
} from './source.js';

/** Why a path was not imported; stable names, printed in reports and summaries. */
export type SkipReason =
  | 'narinfo-invalid' // the narinfo cannot be parsed, or is refused (other store dir, fixed:git CA, too big)
  | 'compression-unsupported' // a Compression niche does not take (gzip, lz4, …)
  | 'nar-url-unsupported' // the URL does not name a file in the source (absolute URL, `..`)
  | 'nar-missing' // the NAR file the URL names is not in the source
  | 'hash-mismatch' // the NAR file does not match FileHash/FileSize/NarHash/NarSize
  | 'nar-invalid' // not a valid NAR, or not valid data of its compression
  | 'too-large' // over niche's NAR size limits
  | 'reference-missing' // a reference is neither in the source nor in the cache
  | 'reference-skipped' // a reference was skipped itself
  | 'reference-cycle' // the references form a cycle (or lead into one)
  | 'conflict' // the cache has this store path with different contents
  | 'source-error'; // reading the source failed (I/O, network, permission)

export const SKIP_REASONS: readonly SkipReason[] = [
  'narinfo-invalid',
  'compression-unsupported',
  'nar-url-unsupported',
  'nar-missing',
  'hash-mismatch',
  'nar-invalid',
  'too-large',
  'reference-missing',
  'reference-skipped',
  'reference-cycle',
  'conflict',
  'source-error',
];

export interface SkippedPath {
  /** The store path, or the narinfo's file name when its store path is unknown. */
  readonly path: string;
  readonly reason: SkipReason;
  readonly message: string;
}

export interface ImportReporter {
  skipped(skip: SkippedPath): void;
  /** A message about the run as a whole. */
  note(text: string): void;
  /** Called after each path is settled. */
  progress(done: number, total: number): void;
}

export interface ImportOptions {
  readonly service: CacheService;
  readonly cache: CacheRecord;
  readonly source: ImportSource;
  /** Paths imported at a time. */
  readonly jobs: number;
  /** Read and check everything that can be checked without downloading NARs; write nothing. */
  readonly dryRun: boolean;
  /** Once aborted, no further path starts; those in progress finish. */
  readonly signal?: AbortSignal | undefined;
  readonly reporter: ImportReporter;
}

export interface ImportSummary {
  /** Narinfo files found in the source. */
  readonly found: number;
  /** Paths added to the cache (in a dry run: that would be imported). */
  readonly imported: number;
  readonly alreadyPresent: number;
  readonly skipped: ReadonlyMap<SkipReason, number>;
  readonly skippedTotal: number;
  /** Paths not started because the run was interrupted. */
  readonly notStarted: number;
  readonly dryRun: boolean;
}

interface Skip {
  readonly reason: SkipReason;
  readonly message: string;
}

/** One narinfo of the source, as kept between reading and importing. */
interface Entry extends DependencyNode {
  /** The store path hash (also the narinfo's file name). */
  readonly id: string;
  /** The store path, or the narinfo file name if it could not be parsed. */
  readonly label: string;
  /** The store path's base name; undefined if the narinfo could not be parsed. */
  readonly baseName: string | undefined;
  /** Base names of the references, without the path itself. */
  readonly references: readonly string[];
  /** Ids of the entries that must be imported first (set once every narinfo was read). */
  dependencies: readonly string[];
  /** The narinfo text until the path is settled; dropped then to give the memory back. */
  text: string | undefined;
  readonly url: string;
  /** Known before importing anything: the path is reported with this and not imported. */
  skip: Skip | undefined;
}

/** Rows per `findPresentBaseNames` query, well under SQLite's and PostgreSQL's parameter limits. */
const PRESENCE_BATCH = 500;

export async function importCache(options: ImportOptions): Promise<ImportSummary> {
  const { service, cache, source, reporter } = options;
  const hasCacheInfo = await checkCacheInfo(options);

  reporter.note(`reading narinfos from ${source.description}`);
  const entries = await readEntries(options, hasCacheInfo);
  if (entries.length === 0) {
    reporter.note(`no narinfo files in ${source.description}: nothing to import`);
  }

  // A reference is satisfied by the source only by a narinfo of exactly that path (hash part and name),
  // otherwise only by the cache holding exactly that path: the cache will check the same.
  const byId = new Map<string, Entry>();
  for (const entry of entries) byId.set(entry.id, entry);
  const inSource = (reference: string): Entry | undefined => {
    const entry = byId.get(reference.slice(0, 32));
    return entry?.baseName === reference ? entry : undefined;
  };
  const outside = new Set<string>();
  for (const entry of entries) {
    for (const reference of entry.references) if (inSource(reference) === undefined) outside.add(reference);
  }
  const presentOutside = await findPresent(service, cache, [...outside]);
  for (const entry of entries) {
    const dependencies: string[] = [];
    const missing: string[] = [];
    for (const reference of entry.references) {
      const named = byId.get(reference.slice(0, 32));
      if (named !== undefined && named.baseName === reference) dependencies.push(named.id);
      else if (presentOutside.has(reference)) continue;
      // A narinfo of that hash that could not be read: reported as what stopped this one.
      else if (named !== undefined && named.baseName === undefined) dependencies.push(named.id);
      else missing.push(reference);
    }
    entry.dependencies = dependencies;
    if (entry.skip === undefined && missing.length > 0) entry.skip = referenceMissing(missing, cache);
  }
  const present = await findPresent(
    service,
    cache,
    entries.flatMap((entry) => entry.baseName ?? []),
  );
  const isPresent = (entry: Entry): boolean => entry.baseName !== undefined && present.has(entry.baseName);
  const toImport = entries.filter((entry) => !isPresent(entry)).length;
  reporter.note(
    `${entries.length} paths in the source: ${entries.length - toImport} already in cache ${cache.name}, ` +
      `${toImport} to import${options.dryRun ? ' (dry run: nothing is written)' : ''}`,
  );

  const skipped = new Map<SkipReason, number>();
  let imported = 0;
  let alreadyPresent = 0;
  let done = 0;
  const report = (path: string, skip: Skip): void => {
    skipped.set(skip.reason, (skipped.get(skip.reason) ?? 0) + 1);
    reporter.skipped({ path, ...skip });
  };
  const settled = (): void => {
    done++;
    reporter.progress(done, entries.length);
  };
  /** After a skip: whether the path is in the cache anyway, so its dependants can still be imported. */
  const usable = async (entry: Entry): Promise<boolean> => {
    const { baseName } = entry;
    if (baseName === undefined) return false;
    return options.dryRun
      ? present.has(baseName)
      : (await findPresent(service, cache, [baseName])).has(baseName);
  };

  const importOne = async (entry: Entry): Promise<boolean> => {
    const text = entry.text ?? '';
    const opened: Readable[] = [];
    let sourceFailure: { error: unknown } | undefined;
    try {
      const result = await service.importPath(cache, text, async (url) => {
        const stream = await source.openFile(url);
        stream.on('error', (error: unknown) => {
          sourceFailure ??= { error };
        });
        opened.push(stream);
        return stream;
      });
      if (result.status === 'added') imported++;
      else alreadyPresent++;
      return true;
    } catch (error) {
      report(entry.label, classify(error, sourceFailure));
      return await usable(entry);
    } finally {
      for (const stream of opened) stream.destroy();
    }
  };

  const checkOne = async (entry: Entry): Promise<boolean> => {
    const text = entry.text ?? '';
    const existing = await service.db.getPath(cache.id, entry.id);
    if (existing !== undefined) {
      const info = parseNarInfo(text, { storeDir: cache.storeDir });
      if (
        existing.path.storePath !== entry.label ||
        existing.path.narHash !== info.narHash.toNix32() ||
        existing.path.narSize !== info.narSize
      ) {
        report(entry.label, {
          reason: 'conflict',
          message: `${existing.path.storePath} is already in cache ${cache.name} with different contents`,
        });
        // Its dependants can be imported only if the cache holds exactly the path they reference.
        return existing.path.storePath === entry.label;
      }
      alreadyPresent++;
      return true;
    }
    try {
      if (!(await source.hasFile(entry.url))) {
        report(entry.label, {
          reason: 'nar-missing',
          message: `${entry.url} does not exist in the source`,
        });
        return false;
      }
    } catch (error) {
      report(entry.label, classify(error, undefined));
      return false;
    }
    imported++;
    return true;
  };

  let run;
  try {
    run = await runInDependencyOrder(
      entries,
      async (entry) => {
        try {
          if (entry.skip !== undefined) {
            report(entry.label, entry.skip);
            return await usable(entry);
          }
          return await (options.dryRun ? checkOne(entry) : importOne(entry));
        } finally {
          entry.text = undefined;
          settled();
        }
      },
      {
        concurrency: options.jobs,
        signal: options.signal,
        onBlocked: (entry, dependency) => {
          entry.text = undefined;
          report(entry.label, {
            reason: 'reference-skipped',
            message: `its reference ${dependency.label} was skipped`,
          });
          settled();
        },
      },
    );
  } catch (error) {
    reporter.note(
      `stopped after ${done} of ${entries.length} paths (${imported} imported); what was imported stays, ` +
        'and running the same command again continues from there',
    );
    throw error;
  }
  for (const entry of run.cycle) {
    report(entry.label, {
      reason: 'reference-cycle',
      message: 'its references form a cycle, or lead into one, so no order of import exists',
    });
  }

  let skippedTotal = 0;
  for (const count of skipped.values()) skippedTotal += count;
  return {
    found: entries.length,
    imported,
    alreadyPresent,
    skipped,
    skippedTotal,
    notStarted: run.notStarted,
    dryRun: options.dryRun,
  };
}

/**
 * Refuses a source made for another store directory; a source without nix-cache-info is only noted.
 * Returns whether the source has one.
 */
async function checkCacheInfo(options: ImportOptions): Promise<boolean> {
  const { source, cache, reporter } = options;
  const text = await source.readCacheInfo();
  if (text === undefined) {
    reporter.note(
      `warning: ${source.description} has no nix-cache-info; importing the narinfos there anyway`,
    );
    return false;
  }
  let storeDir: string | undefined;
  try {
    storeDir = parseCacheInfo(text).storeDir;
  } catch (error) {
    reporter.note(`warning: ignoring the source's nix-cache-info: ${describeError(error)}`);
    return true;
  }
  if (storeDir !== undefined && storeDir !== cache.storeDir) {
    throw new InvalidInputError(
      'CACHE_INFO_INVALID',
      `${source.description} is a cache for the store ${storeDir}, but cache ${cache.name} is for ${cache.storeDir}`,
    );
  }
  return true;
}

/** Reads every narinfo of the source, 2 × `jobs` at a time within 8..64 (each read is one small request). */
async function readEntries(options: ImportOptions, hasCacheInfo: boolean): Promise<Entry[]> {
  const { source, cache, service, signal } = options;
  const entries: Entry[] = [];
  const names = source.listNarInfos()[Symbol.asyncIterator]();
  const concurrency = Math.min(64, Math.max(8, options.jobs * 2));
  let failure: { error: unknown } | undefined;

  const readOne = async (name: string): Promise<Entry> => {
    const id = name.slice(0, -'.narinfo'.length);
    const failed = (skip: Skip): Entry => ({
      id,
      label: name,
      baseName: undefined,
      references: [],
      dependencies: [],
      text: undefined,
      url: '',
      skip,
    });
    let text: string;
    try {
      text = await source.readNarInfo(name, service.limits.maxNarInfoSize);
    } catch (error) {
      if (error instanceof SourceReadError || error instanceof SourceFileMissingError) {
        return failed({ reason: 'source-error', message: `cannot read ${name}: ${error.message}` });
      }
      if (error instanceof InvalidInputError) {
        return failed({ reason: 'narinfo-invalid', message: error.message });
      }
      throw error;
    }
    let info;
    try {
      info = parseNarInfo(text, { storeDir: cache.storeDir });
    } catch (error) {
      if (!(error instanceof NicheError)) throw error;
      return failed({ reason: 'narinfo-invalid', message: `${name}: ${error.message}` });
    }
    const label = info.storePath.toString(cache.storeDir);
    if (info.storePath.hash !== id) {
      return failed({
        reason: 'narinfo-invalid',
        message: `${name} describes ${label}, whose narinfo would be ${info.storePath.hash}.narinfo`,
      });
    }
    const baseName = info.storePath.baseName;
    const references = info.references.map((reference) => reference.baseName);
    const entry = (skip: Skip | undefined): Entry => ({
      id,
      label,
      baseName,
      references: references.filter((reference) => reference !== baseName),
      dependencies: [],
      text: skip === undefined ? text : undefined,
      url: info.url,
      skip,
    });
    if (!isCompression(info.compression)) {
      return entry({
        reason: 'compression-unsupported',
        message: `Compression ${info.compression} is not one niche accepts (xz, zstd, bzip2, br, none)`,
      });
    }
    try {
      relativeUrlSegments(info.url);
    } catch (error) {
      if (!(error instanceof UnsupportedNarUrlError)) throw error;
      return entry({ reason: 'nar-url-unsupported', message: error.message });
    }
    return entry(undefined);
  };

  const seen = new Set<string>();
  const worker = async (): Promise<void> => {
    try {
      while (failure === undefined && signal?.aborted !== true) {
        const next = await names.next();
        if (next.done === true) return;
        if (seen.has(next.value)) continue;
        seen.add(next.value);
        entries.push(await readOne(next.value));
      }
    } catch (error) {
      failure ??= { error };
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await names.return?.();
  if (failure !== undefined) throw failure.error;
  if (entries.length === 0 && !hasCacheInfo) {
    throw new NotFoundError(
      'NOT_FOUND',
      `${source.description} is not a binary cache: it has neither nix-cache-info nor narinfo files`,
    );
  }
  return entries;
}

function referenceMissing(names: readonly string[], cache: CacheRecord): Skip {
  return {
    reason: 'reference-missing',
    message:
      `it references ${names.slice(0, 5).join(', ')}${names.length > 5 ? ` and ${names.length - 5} more` : ''}, ` +
      `in neither the source nor cache ${cache.name}`,
  };
}

/** The subset of `baseNames` the cache holds under exactly those names. */
async function findPresent(
  service: CacheService,
  cache: CacheRecord,
  baseNames: readonly string[],
): Promise<Set<string>> {
  const present = new Set<string>();
  for (let start = 0; start < baseNames.length; start += PRESENCE_BATCH) {
    const batch = baseNames.slice(start, start + PRESENCE_BATCH);
    for (const baseName of await service.db.findPresentBaseNames(cache.id, batch)) present.add(baseName);
  }
  return present;
}

/**
 * Why importPath refused a path. Throws the error back when it is not about this path but about niche's
 * own stores or a bug, which ends the run.
 */
function classify(error: unknown, sourceFailure: { error: unknown } | undefined): Skip {
  if (sourceFailure !== undefined) {
    return {
      reason: 'source-error',
      message: `reading the NAR failed: ${describeError(sourceFailure.error)}`,
    };
  }
  if (error instanceof SourceFileMissingError) return { reason: 'nar-missing', message: error.message };
  if (error instanceof UnsupportedNarUrlError)
    return { reason: 'nar-url-unsupported', message: error.message };
  if (error instanceof SourceReadError) return { reason: 'source-error', message: error.message };
  if (error instanceof NicheError) {
    const message = error.message;
    switch (error.code) {
      case 'FILE_HASH_MISMATCH':
      case 'FILE_SIZE_MISMATCH':
      case 'NAR_HASH_MISMATCH':
      case 'NAR_SIZE_MISMATCH':
      case 'UPLOAD_INCOMPLETE':
        return { reason: 'hash-mismatch', message };
      case 'NAR_INVALID':
      case 'COMPRESSION_INVALID':
        return { reason: 'nar-invalid', message };
      case 'REFERENCE_MISSING':
        return { reason: 'reference-missing', message };
      case 'PATH_CONFLICT':
        return { reason: 'conflict', message };
      case 'BODY_TOO_LARGE':
        return { reason: 'too-large', message };
      default:
        if (error.kind === 'invalid') return { reason: 'narinfo-invalid', message };
    }
  }
  throw error;
}
