// `niche watch-store <alias>/<cache>|<url>`: pushes every new store path (and its closure) as it appears
// in the local Nix database, until SIGINT/SIGTERM; then finishes the uploads in flight and exits 0. A
// second signal ends the process at once.
import type { Command } from 'commander';
import { nixRunner } from '../../client/nix-command.js';
import { DEFAULT_NIX_DB, NixDbReader } from '../../client/nix-db.js';
import { reporterFor } from '../../client/progress.js';
import { pushClosures } from '../../client/push.js';
import { connect, fetchCacheInfo, openSession, requireToken } from '../../client/session.js';
import { DEFAULT_WATCH_BATCH, DEFAULT_WATCH_INTERVAL_MS, watchStore } from '../../client/watch-store.js';
import { InvalidInputError } from '../../errors.js';
import { print, type CliIo } from '../io.js';
import { parseJobs, parseUploadCompression } from './push.js';

interface WatchOptions {
  readonly nixDb: string;
  readonly interval: string;
  readonly includeDrv?: boolean;
  readonly jobs: string;
  readonly compression: string;
  readonly batch: string;
}

function parseSeconds(text: string): number {
  const seconds = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || seconds < 0.05 || seconds > 3600) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `--interval expects seconds (0.05 to 3600), got ${JSON.stringify(text)}`,
    );
  }
  return Math.round(seconds * 1000);
}

function parseBatch(text: string): number {
  if (!/^\d{1,6}$/.test(text) || Number(text) < 1) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `--batch expects a positive number, got ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

export function registerWatchStore(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('watch-store')
    .description('push new store paths as they appear, until interrupted')
    .argument('<cache>', '<alias>/<cache> (see niche login) or http(s)://host[:port]/<cache>')
    .option('--nix-db <file>', 'the Nix database to watch (read-only)', DEFAULT_NIX_DB)
    .option(
      '--interval <seconds>',
      'how often to look for new paths',
      String(DEFAULT_WATCH_INTERVAL_MS / 1000),
    )
    .option('--include-drv', 'also push .drv files')
    .option('-j, --jobs <n>', 'uploads in parallel', '4')
    .option('--compression <name>', 'NAR compression: zstd, xz, none', 'zstd')
    .option('--batch <n>', 'at most this many new paths per push', String(DEFAULT_WATCH_BATCH))
    .action((spec: string, options: WatchOptions) =>
      run(async () => {
        const intervalMs = parseSeconds(options.interval);
        const jobs = parseJobs(options.jobs);
        const compression = parseUploadCompression(options.compression);
        const batchSize = parseBatch(options.batch);
        const session = await openSession(io.env);
        const { target, client } = connect(session, spec);
        requireToken(target, 'pushing');
        const cacheInfo = await fetchCacheInfo(client, target.cache);
        const db = NixDbReader.open(options.nixDb);
        const reporter = reporterFor(io.stderr);
        const stop = new AbortController();
        const onSignal = (signal: NodeJS.Signals): void => {
          // A second signal gets the default behaviour: the process ends at once.
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          reporter.note(`${signal}: finishing the uploads in flight, then stopping (again to stop at once)`);
          stop.abort();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        try {
          reporter.note(`watching ${options.nixDb} for new store paths to push to ${target.label}`);
          const nix = nixRunner({ env: io.env });
          const totals = await watchStore({
            db,
            intervalMs,
            includeDrv: options.includeDrv === true,
            batchSize,
            stopSignal: stop.signal,
            reporter,
            push: (paths) =>
              pushClosures(
                {
                  client,
                  cache: target.cache,
                  cacheInfo,
                  nix,
                  reporter,
                  compression,
                  jobs,
                  stopSignal: stop.signal,
                },
                paths,
              ),
          });
          reporter.done();
          print(
            io.stdout,
            `stopped: pushed ${totals.pushed} paths in ${totals.batches} batches, ${totals.failed} failed`,
          );
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          reporter.done();
          db.close();
        }
        return 0;
      }),
    );
}
