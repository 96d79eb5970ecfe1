// `niche fsck [--cache NAME] [--repair]`: reads every stored NAR file back against its record and reports
// missing and corrupt ones with the paths they break; --repair withdraws those paths (src/cache/fsck.ts).
// Exits 1 when it found problems it did not repair.
import type { Command } from 'commander';
import { pino } from 'pino';

import { openStores } from '../../app/data-dir.js';
import { CacheService } from '../../cache/cache-service.js';
import { fsck } from '../../cache/fsck.js';
import { loadServeConfig } from '../../config.js';
import { CONFIG_OPTION_HELP, DATA_OPTION_HELP, requireCache } from '../backends.js';
import { print, type CliIo } from '../io.js';
import { formatBytes } from './gc.js';

export function registerFsck(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('fsck')
    .description('check every stored NAR file against its hash; report (or --repair) the paths it breaks')
    .option('--cache <name>', "only the NAR files this cache's paths use")
    .option('--repair', 'withdraw the broken paths (and their referrers) and the bad NAR files')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: { cache?: string; repair?: boolean; data?: string; config?: string }) =>
      run(async () => {
        const config = loadServeConfig({ data: options.data, config: options.config }, io.env);
        const stores = await openStores(config);
        const logger = pino({ level: 'warn' }, io.stderr);
        const service = new CacheService({
          db: stores.db,
          blobs: stores.blobs,
          logger,
          trackAccesses: false,
        });
        try {
          const cache =
            options.cache === undefined ? undefined : await requireCache(stores.db, options.cache);
          let reported = Date.now();
          const report = await fsck(service, {
            cache,
            repair: options.repair === true,
            progress: (checked, bytes) => {
              if (Date.now() - reported < 2000) return;
              reported = Date.now();
              print(io.stderr, `fsck: ${checked} NAR files checked (${formatBytes(bytes)})`);
            },
          });
          for (const finding of report.findings) {
            print(
              io.stdout,
              `${finding.problem} NAR file ${finding.nar.fileHash} (blob ${finding.nar.blobKey})`,
            );
            for (const [name, paths] of finding.broken) {
              for (const path of paths) print(io.stdout, `  broken in ${name}: ${path}`);
            }
          }
          for (const [name, count] of report.withdrawn)
            print(io.stdout, `withdrawn from ${name}: ${count} paths`);
          print(
            io.stderr,
            `fsck: ${report.checked} NAR files checked (${formatBytes(report.bytes)}), ` +
              `${report.findings.filter((f) => f.problem === 'missing').length} missing, ` +
              `${report.findings.filter((f) => f.problem === 'corrupt').length} corrupt` +
              (options.repair === true && report.findings.length > 0 ? ', repaired' : ''),
          );
          return report.findings.length > 0 && options.repair !== true ? 1 : 0;
        } finally {
          await service.close();
          await stores.db.close();
          await stores.blobs.close();
        }
      }),
    );
}
