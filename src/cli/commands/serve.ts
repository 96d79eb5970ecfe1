// `niche serve`: runs the HTTP cache server until SIGINT/SIGTERM, then finishes in-flight requests.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { pushUrlOf } from '../../api/v1.js';
import { DEFAULT_DATA_DIR, loadServeConfig, type ServeConfig, type ServeFlags } from '../../config.js';
import { describeListen } from '../../app/http-listeners.js';
import { print, type CliIo } from '../io.js';

interface ServeOptions {
  readonly config?: string;
  readonly data?: string;
  readonly listen?: string[];
  readonly logLevel?: string;
  readonly signingKeyFile?: string;
  readonly maxNarSize?: string;
  readonly maxUploads?: string;
  readonly publicUrl?: string;
  readonly trustedProxy?: string[];
  readonly idleTimeout?: string;
  readonly minTransferRate?: string;
  readonly localStore?: boolean;
  readonly localStoreRoot?: boolean;
  readonly localStorePath?: string;
  readonly storeDir?: string;
  readonly nixDb?: string;
  readonly nixLogDir?: string;
  readonly localStoreKeyFile?: string[];
  readonly sshListen?: string[];
  readonly metricsListen?: string;
  readonly accessLog?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Environment variables that choose the metadata database, which operator commands must see too. */
const DATABASE_ENV = ['NICHE_DATABASE', 'NICHE_DATABASE_URL'] as const;

/**
 * The options that make an operator command (`niche token create …`) reach the same metadata database as
 * this server: `--config FILE` when a config file is in use, `--data DIR` when the embedded SQLite
 * database lives under a data directory given by flag or environment; plus the environment variables
 * that must be set as for the server (never their values: a database URL may hold a password).
 */
export function operatorOptions(
  flags: ServeFlags,
  env: NodeJS.ProcessEnv,
  config: ServeConfig,
): { readonly args: string; readonly env: readonly string[] } {
  const args: string[] = [];
  const file = flags.config ?? env.NICHE_CONFIG;
  if (file !== undefined) args.push(`--config ${resolve(file)}`);
  const dataGiven = flags.data !== undefined || env.NICHE_DATA !== undefined;
  if (config.database.type === 'sqlite' && dataGiven && config.dataDir !== DEFAULT_DATA_DIR) {
    args.push(`--data ${resolve(config.dataDir)}`);
  }
  return {
    args: args.map((arg) => ` ${arg}`).join(''),
    env: DATABASE_ENV.filter((name) => env[name] !== undefined && env[name] !== ''),
  };
}

/** A listen URL on 0.0.0.0 or [::] names no host a client could use. */
function ignore(): void {
  // a failed write of the banner: nothing to do
}

function anyAddress(url: string): boolean {
  const host = new URL(url).hostname;
  return host === '0.0.0.0' || host === '[::]';
}

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
      'address to listen on, or unix:/PATH for a Unix socket; repeatable (env NICHE_LISTEN, comma-separated; default 127.0.0.1:5000)',
      collect,
    )
    .option(
      '--access-log <on|off|rate>',
      'one JSON line per request on the log, or for this fraction of requests, e.g. 0.1 (env NICHE_ACCESS_LOG, default on)',
    )
    .option(
      '--tls-cert <file>',
      'serve HTTPS (HTTP/2 and HTTP/1.1, TLS 1.2+) with this PEM certificate, its chain after it; reloaded on SIGHUP (env NICHE_TLS_CERT)',
    )
    .option('--tls-key <file>', 'the PEM private key of --tls-cert (env NICHE_TLS_KEY)')
    .option(
      '--log-level <level>',
      'fatal|error|warn|info|debug|trace|silent (env NICHE_LOG_LEVEL, default info)',
    )
    .option(
      '--signing-key-file <file>',
      'sign the default cache with this Nix secret key file instead of a generated key (env NICHE_SIGNING_KEY_FILE)',
    )
    .option('--max-nar-size <size>', 'largest NAR accepted, e.g. 64G (env NICHE_MAX_NAR_SIZE, default 64G)')
    .option(
      '--max-uploads <n>',
      'NAR uploads received at once; more are answered 503 with Retry-After (env NICHE_MAX_UPLOADS, default 32)',
    )
    .option(
      '--public-url <url>',
      'the URL clients use, e.g. https://cache.example.org behind a TLS proxy; used for every URL niche prints or returns (env NICHE_PUBLIC_URL)',
    )
    .option(
      '--trusted-proxy <address>',
      'believe X-Forwarded-Proto/Host/Prefix from this address or network, e.g. 127.0.0.1 or 10.0.0.0/8; repeatable (env NICHE_TRUSTED_PROXIES, comma-separated)',
      collect,
    )
    .option(
      '--idle-timeout <duration>',
      'cut a connection that moves no bytes for this long while the server waits on the client, e.g. 60s or 5m; also the time allowed for request headers (env NICHE_IDLE_TIMEOUT, default 60s)',
    )
    .option(
      '--min-transfer-rate <rate>',
      'cut an upload or download moving fewer bytes per second than this, averaged over the idle timeout, e.g. 1K; 0 for no minimum (env NICHE_MIN_TRANSFER_RATE, default 1K)',
    )
    .option(
      '--ssh-listen <host:port>',
      'also serve every cache over SSH (ssh:// and ssh-ng://; the user name is the cache) on this address; repeatable (env NICHE_SSH_LISTEN, comma-separated)',
      collect,
    )
    .option(
      '--metrics-listen <host:port>',
      'also serve GET /metrics (Prometheus), without credentials, on this address (env NICHE_METRICS_LISTEN)',
    )
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
        // The banner and shutdown notes are for whoever watches; a full disk or a closed terminal behind
        // them must not stop the server (an unhandled write error would end the process).
        for (const stream of [io.stdout, io.stderr]) stream.on('error', ignore);
        const flags: ServeFlags = {
          config: options.config,
          data: options.data,
          listen: options.listen,
          logLevel: options.logLevel,
          signingKeyFile: options.signingKeyFile,
          maxNarSize: options.maxNarSize,
          maxUploads: options.maxUploads,
          publicUrl: options.publicUrl,
          trustedProxies: options.trustedProxy,
          idleTimeout: options.idleTimeout,
          minTransferRate: options.minTransferRate,
          localStore: options.localStore,
          localStoreRoot: options.localStoreRoot,
          localStorePath: options.localStorePath,
          storeDir: options.storeDir,
          nixDb: options.nixDb,
          nixLogDir: options.nixLogDir,
          localStoreKeyFiles: options.localStoreKeyFile,
          sshListen: options.sshListen,
          metricsListen: options.metricsListen,
          accessLog: options.accessLog,
          tlsCert: options.tlsCert,
          tlsKey: options.tlsKey,
        };
        const config = loadServeConfig(flags, io.env);
        // Loaded here so that client commands do not pay for the whole server at start-up.
        const { startServer } = await import('../../app/server.js');
        const server = await startServer(config);
        const boot = server.bootstrapped;
        // What clients use: public-url, else the listen address (which names no host if it is 0.0.0.0).
        const unnamed = config.publicUrl === undefined && anyAddress(server.url);
        const scheme = config.tls === undefined ? 'http' : 'https';
        const base = unnamed ? `${scheme}://<host>:${new URL(server.url).port}` : server.publicUrl;
        const first = config.listen[0];
        const where = first !== undefined && 'socketPath' in first ? describeListen(first) : server.url;
        const listening = base === where ? '' : ` (listening on ${where})`;
        const hostNote = unnamed
          ? "niche: listening on every address; write this machine's name for <host>, or set public-url"
          : '';
        if (boot !== undefined) {
          const keys = await server.service.keys(boot.cache);
          const operator = operatorOptions(flags, io.env, config);
          print(
            io.stderr,
            [
              boot.created ? `niche: created cache "${boot.cache.name}" with a new signing key` : '',
              `niche: serving ${base}/${boot.cache.name}${listening}`,
              hostNote,
              'niche: to use it, add to nix.conf:',
              `  extra-substituters = ${base}/${boot.cache.name}`,
              `  extra-trusted-public-keys = ${keys.publicKeys.join(' ')}`,
              'niche: to push, create a token, put it in your netrc, and copy to the push URL:',
              `  niche token create --cache ${boot.cache.name} --push${operator.args}`,
              operator.env.length === 0
                ? ''
                : `  (with ${operator.env.join(' and ')} set as for this server)`,
              `  machine ${unnamed ? '<host>' : new URL(base).hostname.replace(/^\[(.*)\]$/, '$1')} login niche password <token>`,
              `  nix copy --to ${pushUrlOf(`${base}/${boot.cache.name}`)} <paths>`,
            ]
              .filter((line) => line !== '')
              .join('\n'),
          );
        } else {
          print(
            io.stderr,
            [`niche: serving ${base}${listening}`, hostNote].filter((l) => l !== '').join('\n'),
          );
        }
        for (const ssh of server.ssh) {
          const host = unnamed ? '<host>' : new URL(base).hostname;
          print(
            io.stderr,
            [
              `niche: serving every cache over SSH on port ${ssh.port} (ssh-ng://<cache>@${host}, keys from niche ssh-key add)`,
              `  known_hosts: ${ssh.knownHostsLine(host)}`,
            ].join('\n'),
          );
        }
        if (server.metricsUrl !== undefined)
          print(io.stderr, `niche: metrics at ${server.metricsUrl}/metrics`);
        const local = server.localStore;
        if (local !== undefined) {
          const at = local.config.mountAtRoot ? ` and ${base}` : '';
          print(
            io.stderr,
            [
              local.generatedKeyFile === undefined ? '' : `niche: generated ${local.generatedKeyFile}`,
              `niche: serving this host's ${local.storeDir} at ${base}${local.config.mountPath}${at}`,
              `  extra-substituters = ${base}${local.config.mountPath}`,
              `  extra-trusted-public-keys = ${local.publicKeys.join(' ')}`,
            ]
              .filter((line) => line !== '')
              .join('\n'),
          );
        }
        // SIGHUP: read the TLS certificate and key again (a bad pair is logged, the old one stays).
        const reload = (): void => {
          void server.reloadTls();
        };
        if (config.tls !== undefined) process.on('SIGHUP', reload);
        await new Promise<void>((resolve) => {
          const stop = (): void => {
            process.off('SIGINT', stop);
            process.off('SIGTERM', stop);
            resolve();
          };
          process.on('SIGINT', stop);
          process.on('SIGTERM', stop);
        });
        process.off('SIGHUP', reload);
        print(io.stderr, 'niche: shutting down, finishing in-flight requests');
        await server.close();
        return 0;
      }),
    );
}
