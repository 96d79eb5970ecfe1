// `niche import <source> --cache NAME`: adopts an existing binary cache, a directory written by
// `nix copy --to file:///dir` or an S3 bucket written by `nix copy --to s3://bucket`, into a cache of the
// data directory (operator side, like `niche cache`; the server need not be stopped). One line per skipped
// path on stderr, the summary on stdout. Exits 65 if any path was skipped (unless --allow-skips), 130 if
// interrupted; running the command again continues where it stopped.
import type { Command } from 'commander';
import { openStores } from '../../app/data-dir.js';
import { parseCacheName } from '../../cache/cache-name.js';
import { loadServeConfig } from '../../config.js';
import { InvalidInputError, NotFoundError } from '../../errors.js';
import { importCache, SKIP_REASONS, type ImportSummary } from '../../import/importer.js';
import { CONFIG_OPTION_HELP, DATA_OPTION_HELP } from '../backends.js';
import { print, type CliIo } from '../io.js';

interface ImportFlags {
  readonly cache: string;
  readonly data?: string;
  readonly config?: string;
  readonly jobs: string;
  readonly dryRun?: boolean;
  readonly allowSkips?: boolean;
}

export const DEFAULT_IMPORT_JOBS = 4;
/** EX_DATAERR: the source had paths that could not be imported. */
export const EXIT_SKIPPED = 65;
/** 128 + SIGINT, what a shell reports for an interrupted command. */
export const EXIT_INTERRUPTED = 130;
const PROGRESS_INTERVAL_MS = 10_000;

function parseImportJobs(text: string): number {
  if (!/^\d{1,3}$/.test(text) || Number(text) < 1 || Number(text) > 256) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `--jobs expects a number from 1 to 256, got ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

export function formatImportSummary(summary: ImportSummary): string {
  const lines = [
    `${summary.dryRun ? 'would import' : 'imported'}: ${summary.imported}`,
    `already present: ${summary.alreadyPresent}`,
    `${summary.dryRun ? 'would skip' : 'skipped'}: ${summary.skippedTotal}`,
  ];
  for (const reason of SKIP_REASONS) {
    const count = summary.skipped.get(reason) ?? 0;
    if (count > 0) lines.push(`  ${reason}: ${count}`);
  }
  if (summary.notStarted > 0) lines.push(`not started (interrupted): ${summary.notStarted}`);
  return lines.join('\n');
}

export function registerImport(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('import')
    .description('import the paths of an existing binary cache (written by nix copy) into a cache')
    .argument(
      '<source>',
      'a directory (or file:///dir) written by nix copy --to file://, or ' +
        's3://bucket[/prefix][?endpoint=URL&region=R&scheme=http|https&profile=P]',
    )
    .requiredOption('--cache <name>', 'the cache to import into (create it first: niche cache create)')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .option('-j, --jobs <n>', 'paths imported in parallel', String(DEFAULT_IMPORT_JOBS))
    .option('--dry-run', 'check the source and report what would be imported or skipped; write nothing')
    .option('--allow-skips', 'exit 0 even if some paths were skipped')
    .action((spec: string, options: ImportFlags) =>
      run(async () => {
        const jobs = parseImportJobs(options.jobs);
        const cacheName = parseCacheName(options.cache);
        // Heavy modules (the AWS SDK, the compressors) load only when the command runs.
        const [{ openSource }, { CacheService }, { pino }] = await Promise.all([
          import('../../import/open-source.js'),
          import('../../cache/cache-service.js'),
          import('pino'),
        ]);
        const source = await openSource(spec, io.env);
        try {
          // The server's own configuration: the same backends (files or S3, SQLite or PostgreSQL) and limits.
          const config = loadServeConfig({ data: options.data, config: options.config }, io.env);
          const stores = await openStores(config);
          try {
            const cache = await stores.db.getCache(cacheName);
            if (cache === undefined) {
              throw new NotFoundError(
                'CACHE_NOT_FOUND',
                `no cache named ${cacheName}; create it first with niche cache create ${cacheName}`,
              );
            }
            const service = new CacheService({
              db: stores.db,
              blobs: stores.blobs,
              logger: pino({ level: 'warn' }, io.stderr),
              limits: config.limits,
            });
            const stop = new AbortController();
            const onSignal = (): void => {
              print(
                io.stderr,
                'interrupted: finishing the paths in progress (interrupt again to stop at once)',
              );
              stop.abort();
            };
            process.once('SIGINT', onSignal);
            process.once('SIGTERM', onSignal);
            let lastProgress = Date.now();
            let summary: ImportSummary;
            try {
              summary = await importCache({
                service,
                cache,
                source,
                jobs,
                dryRun: options.dryRun === true,
                signal: stop.signal,
                reporter: {
                  skipped: (skip) => {
                    print(io.stderr, `skipped ${skip.path}: ${skip.reason}: ${skip.message}`);
                  },
                  note: (text) => {
                    print(io.stderr, text);
                  },
                  progress: (done, total) => {
                    if (Date.now() - lastProgress < PROGRESS_INTERVAL_MS || done === total) return;
                    lastProgress = Date.now();
                    print(io.stderr, `${done} of ${total} paths done`);
                  },
                },
              });
            } finally {
              process.off('SIGINT', onSignal);
              process.off('SIGTERM', onSignal);
            }
            print(io.stdout, formatImportSummary(summary));
            if (stop.signal.aborted) {
              print(io.stderr, 'interrupted: run the same command again to import the rest');
              return EXIT_INTERRUPTED;
            }
            if (summary.skippedTotal > 0 && options.allowSkips !== true) {
              print(
                io.stderr,
                `${summary.skippedTotal} paths were ${options.dryRun === true ? 'found unimportable' : 'skipped'} ` +
                  '(reasons above); --allow-skips makes this exit 0',
              );
              return EXIT_SKIPPED;
            }
            return 0;
          } finally {
            await stores.db.close();
            await stores.blobs.close();
          }
        } finally {
          await source.close();
        }
      }),
    );
}
