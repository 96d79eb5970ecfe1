// `niche gc [--dry-run] [--cache NAME] [--grace DURATION]`: garbage collection by hand, on the same
// backends as `niche serve` (which also runs it on a schedule, `gc.interval`). Safe beside a running
// server and other replicas: one collector at a time (a lease in the metadata store), and every removal
// is checked again atomically against concurrent uploads (src/cache/gc.ts). The collection runs on a
// thread with a bounded heap; the server's scheduled one runs the same in a child process
// (src/app/isolated-gc.ts).
import type { Command } from 'commander';
import { pino } from 'pino';

import type { GcReport } from '../../cache/gc.js';
import { parseDuration, loadServeConfig } from '../../config.js';
import { InvalidInputError } from '../../errors.js';
import { IsolatedGarbageCollector } from '../../app/isolated-gc.js';
import { CONFIG_OPTION_HELP, DATA_OPTION_HELP } from '../backends.js';
import { print, type CliIo } from '../io.js';

export function registerGc(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('gc')
    .description("collect garbage: paths past their cache's retention or quota, unused NAR files, leftovers")
    .option('--dry-run', 'report what would be deleted and the bytes it frees; change nothing')
    .option('--cache <name>', "only this cache's paths (skips the NAR file collection, which is global)")
    .option(
      '--grace <duration>',
      'keep unused NAR files and unrecorded blobs this long (default: gc.grace, 24h)',
    )
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: { dryRun?: boolean; cache?: string; grace?: string; data?: string; config?: string }) =>
      run(async () => {
        let graceMs: number | undefined;
        if (options.grace !== undefined) {
          try {
            graceMs = parseDuration(options.grace);
          } catch (error) {
            throw new InvalidInputError('BAD_REQUEST', `--grace: ${(error as Error).message}`);
          }
        }
        const config = loadServeConfig({ data: options.data, config: options.config }, io.env);
        const logger = pino({ level: 'warn' }, io.stderr);
        // Nothing here holds rendered narinfos: there is nothing to forget when paths go.
        // A process of its own already: the collection runs on a thread of it.
        const collector = new IsolatedGarbageCollector(
          {
            storage: config.storage,
            database: config.database,
            logLevel: 'warn',
            logFd: 2,
            isolation: 'thread',
          },
          { forgetPaths: () => undefined },
          logger,
        );
        const report = await collector.run({
          cache: options.cache,
          dryRun: options.dryRun === true,
          graceMs: graceMs ?? config.gc.graceMs,
        });
        print(io.stdout, describeReport(report));
        return 0;
      }),
    );
}

export function describeReport(report: GcReport): string {
  const verb = report.dryRun ? 'would delete' : 'deleted';
  const lines: string[] = [];
  for (const cache of report.caches) {
    const kept = cache.kept > 0 ? `; ${cache.kept} kept (used, pinned or referenced meanwhile)` : '';
    lines.push(
      `cache ${cache.cache}: ${verb} ${cache.paths} paths (${cache.byRetention} past retention, ` +
        `${cache.byQuota} over quota), ${formatBytes(cache.bytes)}${kept}`,
    );
  }
  if (report.dryRun) {
    lines.push(
      `NAR files no path uses: ${report.nars} (${formatBytes(report.narBytes)}), deleted once unused for the grace period`,
    );
  } else {
    lines.push(`NAR files deleted: ${report.nars} (${formatBytes(report.narBytes)})`);
    if (report.expiredUploads > 0) lines.push(`expired pending uploads removed: ${report.expiredUploads}`);
  }
  lines.push(`blobs without a record ${verb}: ${report.orphanBlobs} (${formatBytes(report.orphanBytes)})`);
  const total =
    report.caches.reduce((sum, cache) => sum + cache.bytes, 0) + report.narBytes + report.orphanBytes;
  lines.push(
    `${report.dryRun ? 'would free' : 'freed'}: ${formatBytes(report.dryRun ? total : report.narBytes + report.orphanBytes)}`,
  );
  return lines.join('\n');
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}
