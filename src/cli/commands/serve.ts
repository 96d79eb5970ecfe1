// `niche serve`: runs the HTTP cache server until SIGINT/SIGTERM, then finishes in-flight requests.
import type { Command } from 'commander';
import { startServer } from '../../app/server.js';
import { loadServeConfig } from '../../config.js';
import { print, type CliIo } from '../io.js';

interface ServeOptions {
  readonly data?: string;
  readonly listen?: string;
  readonly logLevel?: string;
  readonly signingKeyFile?: string;
  readonly maxNarSize?: string;
}

export function registerServe(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('serve')
    .description('run the binary cache server')
    .option('--data <dir>', 'data directory (env NICHE_DATA, default ./niche-data)')
    .option('--listen <host:port>', 'address to listen on (env NICHE_LISTEN, default 127.0.0.1:5000)')
    .option(
      '--log-level <level>',
      'fatal|error|warn|info|debug|trace|silent (env NICHE_LOG_LEVEL, default info)',
    )
    .option(
      '--signing-key-file <file>',
      'sign the default cache with this Nix secret key file instead of a generated key (env NICHE_SIGNING_KEY_FILE)',
    )
    .option('--max-nar-size <size>', 'largest NAR accepted, e.g. 64G (env NICHE_MAX_NAR_SIZE, default 64G)')
    .action((options: ServeOptions) =>
      run(async () => {
        const config = loadServeConfig(
          {
            data: options.data,
            listen: options.listen,
            logLevel: options.logLevel,
            signingKeyFile: options.signingKeyFile,
            maxNarSize: options.maxNarSize,
          },
          io.env,
        );
        const server = await startServer(config);
        const boot = server.bootstrapped;
        if (boot !== undefined) {
          const keys = await server.service.keys(boot.cache);
          const dataFlag = config.dataDir === './niche-data' ? '' : ` --data ${config.dataDir}`;
          print(
            io.stderr,
            [
              boot.created ? `niche: created cache "${boot.cache.name}" with a new signing key` : '',
              `niche: serving ${server.url}/${boot.cache.name}`,
              'niche: to use it, add to nix.conf:',
              `  extra-substituters = ${server.url}/${boot.cache.name}`,
              `  extra-trusted-public-keys = ${keys.publicKeys.join(' ')}`,
              'niche: to push, create a token and put it in your netrc:',
              `  niche token create --cache ${boot.cache.name} --push${dataFlag}`,
              `  machine ${new URL(server.url).hostname} login niche password <token>`,
            ]
              .filter((line) => line !== '')
              .join('\n'),
          );
        } else {
          print(io.stderr, `niche: serving ${server.url}`);
        }
        await new Promise<void>((resolve) => {
          const stop = (): void => {
            process.off('SIGINT', stop);
            process.off('SIGTERM', stop);
            resolve();
          };
          process.on('SIGINT', stop);
          process.on('SIGTERM', stop);
        });
        print(io.stderr, 'niche: shutting down, finishing in-flight requests');
        await server.close();
        return 0;
      }),
    );
}
