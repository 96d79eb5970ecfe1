// `niche serve`: runs the HTTP cache server until SIGINT/SIGTERM, then finishes in-flight requests.
import type { Command } from 'commander';
import { loadServeConfig } from '../../config.js';
import { print, type CliIo } from '../io.js';

interface ServeOptions {
  readonly config?: string;
  readonly data?: string;
  readonly listen?: string[];
  readonly logLevel?: string;
  readonly signingKeyFile?: string;
  readonly maxNarSize?: string;
  readonly localStore?: boolean;
  readonly localStoreRoot?: boolean;
  readonly localStorePath?: string;
  readonly storeDir?: string;
  readonly nixDb?: string;
  readonly nixLogDir?: string;
  readonly localStoreKeyFile?: string[];
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

export function registerServe(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('serve')
    .description('run the binary cache server')
    .option('--config <file>', 'TOML config file (env NICHE_CONFIG); flags and environment override it')
    .option('--data <dir>', 'data directory (env NICHE_DATA, default ./niche-data)')
    .option(
      '--listen <host:port>',
      'address to listen on; repeatable (env NICHE_LISTEN, comma-separated; default 127.0.0.1:5000)',
      collect,
    )
    .option(
      '--log-level <level>',
      'fatal|error|warn|info|debug|trace|silent (env NICHE_LOG_LEVEL, default info)',
    )
    .option(
      '--signing-key-file <file>',
      'sign the default cache with this Nix secret key file instead of a generated key (env NICHE_SIGNING_KEY_FILE)',
    )
    .option('--max-nar-size <size>', 'largest NAR accepted, e.g. 64G (env NICHE_MAX_NAR_SIZE, default 64G)')
    // The host's own Nix store (src/localstore), like nix-serve or harmonia.
    .option('--local-store', "also serve this host's Nix store, read-only (env NICHE_LOCAL_STORE=1)")
    .option(
      '--local-store-path <path>',
      'URL prefix of the local store (env NICHE_LOCAL_STORE_PATH, default /local)',
    )
    .option(
      '--local-store-root',
      'also serve the local store at / like nix-serve; implies --local-store (env NICHE_LOCAL_STORE_ROOT=1)',
    )
    .option(
      '--store-dir <dir>',
      'store directory of the local store (env NICHE_STORE_DIR, default /nix/store)',
    )
    .option('--nix-db <file>', 'the Nix database (env NICHE_NIX_DB, default /nix/var/nix/db/db.sqlite)')
    .option('--nix-log-dir <dir>', "Nix's log directory (env NICHE_NIX_LOG_DIR, default /nix/var/log/nix)")
    .option(
      '--local-store-key-file <file>',
      'sign local store narinfos with this Nix secret key; repeatable (env NICHE_LOCAL_STORE_KEY_FILES, comma-separated; default: a key generated into the data directory)',
      collect,
    )
    .action((options: ServeOptions) =>
      run(async () => {
        const config = loadServeConfig(
          {
            config: options.config,
            data: options.data,
            listen: options.listen,
            logLevel: options.logLevel,
            signingKeyFile: options.signingKeyFile,
            maxNarSize: options.maxNarSize,
            localStore: options.localStore,
            localStoreRoot: options.localStoreRoot,
            localStorePath: options.localStorePath,
            storeDir: options.storeDir,
            nixDb: options.nixDb,
            nixLogDir: options.nixLogDir,
            localStoreKeyFiles: options.localStoreKeyFile,
          },
          io.env,
        );
        // Loaded here so that client commands do not pay for the whole server at start-up.
        const { startServer } = await import('../../app/server.js');
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
        const local = server.localStore;
        if (local !== undefined) {
          const at = local.config.mountAtRoot ? ` and ${server.url}` : '';
          print(
            io.stderr,
            [
              local.generatedKeyFile === undefined ? '' : `niche: generated ${local.generatedKeyFile}`,
              `niche: serving this host's ${local.storeDir} at ${server.url}${local.config.mountPath}${at}`,
              `  extra-substituters = ${server.url}${local.config.mountPath}`,
              `  extra-trusted-public-keys = ${local.publicKeys.join(' ')}`,
            ]
              .filter((line) => line !== '')
              .join('\n'),
          );
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
