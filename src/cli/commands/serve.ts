// `niche serve`: runs the HTTP cache server until SIGINT/SIGTERM, then finishes in-flight requests.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { pushUrlOf } from '../../api/v1.js';
import { DEFAULT_DATA_DIR, loadServeConfig, type ServeConfig, type ServeFlags } from '../../config.js';
import { describeListen } from '../../app/http-listeners.js';
import { knownHostsLine } from '../../ssh/known-hosts.js';
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
  readonly workers?: string;
  readonly gcInterval?: string;
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

function ignore(): void {
  // a failed write of the banner: nothing to do
}

/** A listen URL on 0.0.0.0 or [::] names no host a client could use. */
function anyAddress(url: string): boolean {
  const host = new URL(url).hostname;
  return host === '0.0.0.0' || host === '[::]';
}

/** Resolves at the first SIGINT or SIGTERM. */
function stopSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/** What the start-up banner says: where the server answers, the default cache, SSH, metrics, local store. */
export interface BannerInfo {
  readonly url: string;
  readonly publicUrl: string;
  /** The default cache, when there was none or it is the one configured. */
  readonly boot:
    | { readonly cacheName: string; readonly created: boolean; readonly publicKeys: readonly string[] }
    | undefined;
  readonly ssh: readonly { readonly port: number; readonly hostKey: string }[];
  readonly metricsUrl: string | undefined;
  readonly localStore:
    | {
        readonly storeDir: string;
        readonly mountPath: string;
        readonly mountAtRoot: boolean;
        readonly publicKeys: readonly string[];
        readonly generatedKeyFile: string | undefined;
      }
    | undefined;
  /** Processes serving (`--workers`). */
  readonly workers: number;
}

/** Prints the start-up banner on stderr (once, by the one process or the cluster's primary). */
export function printBanner(io: CliIo, flags: ServeFlags, config: ServeConfig, info: BannerInfo): void {
  // What clients use: public-url, else the listen address (which names no host if it is 0.0.0.0).
  const unnamed = config.publicUrl === undefined && anyAddress(info.url);
  const scheme = config.tls === undefined ? 'http' : 'https';
  const base = unnamed ? `${scheme}://<host>:${new URL(info.url).port}` : info.publicUrl;
  const first = config.listen[0];
  const where = first !== undefined && 'socketPath' in first ? describeListen(first) : info.url;
  const listening = base === where ? '' : ` (listening on ${where})`;
  const workers = info.workers > 1 ? ` with ${info.workers} worker processes` : '';
  const hostNote = unnamed
    ? "niche: listening on every address; write this machine's name for <host>, or set public-url"
    : '';
  const boot = info.boot;
  if (boot !== undefined) {
    const operator = operatorOptions(flags, io.env, config);
    print(
      io.stderr,
      [
        boot.created ? `niche: created cache "${boot.cacheName}" with a new signing key` : '',
        `niche: serving ${base}/${boot.cacheName}${listening}${workers}`,
        hostNote,
        'niche: to use it, add to nix.conf:',
        `  extra-substituters = ${base}/${boot.cacheName}`,
        `  extra-trusted-public-keys = ${boot.publicKeys.join(' ')}`,
        'niche: to push, create a token, put it in your netrc, and copy to the push URL:',
        `  niche token create --cache ${boot.cacheName} --push${operator.args}`,
        operator.env.length === 0 ? '' : `  (with ${operator.env.join(' and ')} set as for this server)`,
        `  machine ${unnamed ? '<host>' : new URL(base).hostname.replace(/^\[(.*)\]$/, '$1')} login niche password <token>`,
        `  nix copy --to ${pushUrlOf(`${base}/${boot.cacheName}`)} <paths>`,
      ]
        .filter((line) => line !== '')
        .join('\n'),
    );
  } else {
    print(
      io.stderr,
      [`niche: serving ${base}${listening}${workers}`, hostNote].filter((l) => l !== '').join('\n'),
    );
  }
  for (const ssh of info.ssh) {
    const host = unnamed ? '<host>' : new URL(base).hostname;
    print(
      io.stderr,
      [
        `niche: serving every cache over SSH on port ${ssh.port} (ssh-ng://<cache>@${host}, keys from niche ssh-key add)`,
        `  known_hosts: ${knownHostsLine(host, ssh.port, ssh.hostKey)}`,
      ].join('\n'),
    );
  }
  if (info.metricsUrl !== undefined) print(io.stderr, `niche: metrics at ${info.metricsUrl}/metrics`);
  const local = info.localStore;
  if (local !== undefined) {
    const at = local.mountAtRoot ? ` and ${base}` : '';
    print(
      io.stderr,
      [
        local.generatedKeyFile === undefined ? '' : `niche: generated ${local.generatedKeyFile}`,
        `niche: serving this host's ${local.storeDir} at ${base}${local.mountPath}${at}`,
        `  extra-substituters = ${base}${local.mountPath}`,
        `  extra-trusted-public-keys = ${local.publicKeys.join(' ')}`,
      ]
        .filter((line) => line !== '')
        .join('\n'),
    );
  }
}

/**
 * `--workers N` with N > 1: this process is the cluster's primary (src/app/cluster-primary.ts). It prints
 * the banner once every worker listens, forwards SIGHUP, and on SIGINT/SIGTERM stops the workers (each
 * finishes its in-flight requests) and exits 0 once they all have (1 if some had to be killed). Workers
 * dying in a loop end it with WORKERS_FAILING.
 */
async function serveCluster(config: ServeConfig, flags: ServeFlags, io: CliIo): Promise<number> {
  const { startCluster } = await import('../../app/cluster-primary.js');
  const running = await startCluster(config);
  const { started } = running;
  const local = started.listening.localStore;
  printBanner(io, flags, config, {
    url: started.listening.url,
    publicUrl: started.listening.publicUrl,
    boot:
      started.bootstrapped === undefined
        ? undefined
        : {
            cacheName: started.bootstrapped.cache.name,
            created: started.bootstrapped.created,
            publicKeys: started.publicKeys,
          },
    ssh: started.listening.ssh,
    metricsUrl: started.metricsUrl,
    localStore:
      local === undefined ? undefined : { ...local, generatedKeyFile: started.localStoreGeneratedKeyFile },
    workers: running.workers,
  });
  const reload = (): void => {
    running.reloadTls();
  };
  if (config.tls !== undefined) process.on('SIGHUP', reload);
  try {
    await Promise.race([stopSignal(), running.failure]);
  } catch (error) {
    await running.close();
    throw error;
  } finally {
    process.off('SIGHUP', reload);
  }
  print(io.stderr, 'niche: shutting down, finishing in-flight requests');
  return (await running.close()) ? 0 : 1;
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
      '--gc-interval <duration|off>',
      'collect garbage this often, e.g. 1h; off to leave it to niche gc (env NICHE_GC_INTERVAL, default 1h)',
    )
    .option(
      '--workers <n|auto>',
      'processes serving HTTP (and SSH) on the same listeners; auto: one per core (env NICHE_WORKERS, default 1)',
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
          workers: options.workers,
          gcInterval: options.gcInterval,
        };
        const config = loadServeConfig(flags, io.env);
        if (config.workers > 1) return serveCluster(config, flags, io);
        // Loaded here so that client commands do not pay for the whole server at start-up.
        const [{ startServer }, { boundHeapGrowth }] = await Promise.all([
          import('../../app/server.js'),
          import('../../app/heap-growth.js'),
        ]);
        boundHeapGrowth();
        const server = await startServer(config);
        const boot = server.bootstrapped;
        const local = server.localStore;
        printBanner(io, flags, config, {
          url: server.url,
          publicUrl: server.publicUrl,
          boot:
            boot === undefined
              ? undefined
              : {
                  cacheName: boot.cache.name,
                  created: boot.created,
                  publicKeys: (await server.service.keys(boot.cache)).publicKeys,
                },
          ssh: server.ssh.map((ssh) => ({ port: ssh.port, hostKey: ssh.hostKey })),
          metricsUrl: server.metricsUrl,
          localStore:
            local === undefined
              ? undefined
              : {
                  storeDir: local.storeDir,
                  mountPath: local.config.mountPath,
                  mountAtRoot: local.config.mountAtRoot,
                  publicKeys: local.publicKeys,
                  generatedKeyFile: local.generatedKeyFile,
                },
          workers: 1,
        });
        // SIGHUP: read the TLS certificate and key again (a bad pair is logged, the old one stays).
        const reload = (): void => {
          void server.reloadTls();
        };
        if (config.tls !== undefined) process.on('SIGHUP', reload);
        await stopSignal();
        process.off('SIGHUP', reload);
        print(io.stderr, 'niche: shutting down, finishing in-flight requests');
        await server.close();
        return 0;
      }),
    );
}
