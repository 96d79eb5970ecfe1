// `niche doctor`: finds a misconfiguration before a start does. Loads the configuration as `niche serve`
// would (file, environment, flags), reaches every backend (a query on the metadata store, a small write
// and delete in the blob store), parses every signing key (each cache's, and the key files named by the
// configuration, whose permissions it checks), tries each listen address, and prints what the server would
// serve. One line per check: `ok`, `warn` (works, but look at it) or `FAIL`; exit 0 unless one failed.
//
// It opens the metadata store as `niche serve` does, so pending schema migrations are applied.
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { createServer } from 'node:net';
import type { Command } from 'commander';
import { openDatabase, openStorage } from '../../app/data-dir.js';
import { Readiness } from '../../cache/readiness.js';
import { tokenIsActive } from '../../cache/tokens.js';
import { describeListen, inspectSocketPath, UNIX_SOCKET_MODE } from '../../app/http-listeners.js';
import { describeCertificate, loadTlsMaterial } from '../../app/tls-files.js';
import { loadServeConfig, type ListenAddress, type ServeConfig, type TlsConfig } from '../../config.js';
import type { MetadataStore } from '../../db/metadata-store.js';
import { readSecretKeyFile } from '../../nix/key-file.js';
import { SecretKey } from '../../nix/signing.js';
import type { BlobStore } from '../../storage/blob-store.js';
import { CONFIG_OPTION_HELP, DATA_OPTION_HELP } from '../backends.js';
import { EXIT_FAILURE, EXIT_OK } from '../exit-codes.js';
import { print, type CliIo } from '../io.js';

type Level = 'ok' | 'warn' | 'FAIL';

interface Report {
  line(level: Level, what: string): void;
  readonly failed: boolean;
}

function reportTo(io: CliIo): Report {
  let failed = false;
  return {
    line(level, what) {
      if (level === 'FAIL') failed = true;
      print(io.stdout, `${level.padEnd(4)}  ${what}`);
    },
    get failed() {
      return failed;
    },
  };
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A PostgreSQL URL without its password. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(an unparsable URL)';
  }
}

async function checkKeyFile(report: Report, file: string, what: string): Promise<void> {
  try {
    const key = await readSecretKeyFile(file);
    const mode = (await stat(file)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      report.line(
        'warn',
        `${what} ${file} (key ${key.name}) is readable by others (mode ${mode.toString(8)}): chmod 600 it`,
      );
    } else {
      report.line('ok', `${what} ${file}: key ${key.name}, mode ${mode.toString(8)}`);
    }
  } catch (error) {
    report.line('FAIL', `${what}: ${reason(error)}`);
  }
}

/** Whether the address could be listened on now (it is given back at once). */
function tryListen(address: ListenAddress): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => {
      resolve(error.code ?? error.message);
    });
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => {
      server.close(() => {
        resolve(undefined);
      });
    });
  });
}

async function checkListen(report: Report, config: ServeConfig): Promise<void> {
  for (const address of config.listen) {
    if (!('socketPath' in address)) continue;
    const shown = describeListen(address);
    try {
      const state = await inspectSocketPath(address.socketPath);
      const mode = `made mode ${UNIX_SOCKET_MODE.toString(8)}`;
      if (state === 'in-use')
        report.line('warn', `listen ${shown}: in use (is niche already running there?)`);
      else if (state === 'not-a-socket') report.line('FAIL', `listen ${shown}: the file is not a socket`);
      else if (state === 'stale')
        report.line('ok', `listen ${shown}: a stale socket, removed at start (${mode})`);
      else report.line('ok', `listen ${shown}: free (${mode})`);
    } catch (error) {
      report.line('FAIL', `listen ${shown}: ${reason(error)}`);
    }
  }
  const addresses = [
    ...config.listen.flatMap((address) => ('socketPath' in address ? [] : [{ address, what: 'listen' }])),
    ...(config.ssh?.listen ?? []).map((address) => ({ address, what: 'ssh listen' })),
    ...(config.metrics.listen === undefined
      ? []
      : [{ address: config.metrics.listen, what: 'metrics listen' }]),
  ];
  for (const { address, what } of addresses) {
    const shown = address.host.includes(':')
      ? `[${address.host}]:${address.port}`
      : `${address.host}:${address.port}`;
    const problem = await tryListen(address);
    if (problem === undefined) report.line('ok', `${what} ${shown}: free`);
    else if (problem === 'EADDRINUSE') {
      report.line('warn', `${what} ${shown}: in use (is niche already running there?)`);
    } else report.line('FAIL', `${what} ${shown}: cannot listen (${problem})`);
  }
}

/** Where `/metrics` is served, and to whom. */
/** How many processes would serve (`workers`), against the cores this process may use. */
function workersLine(report: Report, workers: number): void {
  const cores = availableParallelism();
  if (workers === 1) {
    report.line('ok', `workers: 1 (one process; ${cores} cores here, see workers = "auto")`);
  } else if (workers > cores) {
    report.line(
      'warn',
      `workers: ${workers} processes on ${cores} cores (more than one per core only adds contention)`,
    );
  } else {
    report.line('ok', `workers: ${workers} processes on ${cores} cores (a primary forks them)`);
  }
}

function metricsLine(access: ServeConfig['metrics']['access'], separate: boolean): string {
  const main = {
    admin: 'on the listen addresses with a server-admin token',
    public: 'on the listen addresses to anyone',
    off: undefined,
  }[access];
  const where = [main, separate ? 'on metrics-listen without credentials' : undefined].filter(Boolean);
  return where.length === 0 ? 'metrics: off (nothing counted)' : `metrics: /metrics ${where.join(', and ')}`;
}

/** The SSH host key: there and private, or to be made at the first start. */
async function checkSshHostKey(report: Report, file: string): Promise<void> {
  let mode: number;
  try {
    mode = (await stat(file)).mode & 0o777;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      report.line('ok', `SSH host key ${file}: made at the first start`);
    } else report.line('FAIL', `SSH host key ${file}: ${reason(error)}`);
    return;
  }
  try {
    const { loadOrCreateHostKey } = await import('../../ssh/ssh-server.js');
    const { publicKey } = await loadOrCreateHostKey(file);
    const line = `SSH host key ${file}: ${publicKey.split(' ')[0] ?? ''}, mode ${mode.toString(8)}`;
    if ((mode & 0o077) !== 0) report.line('warn', `${line}: readable by others, chmod 600 it`);
    else report.line('ok', line);
  } catch (error) {
    report.line('FAIL', `SSH host key: ${reason(error)}`);
  }
}

/** The TLS pair as `niche serve` loads it, its expiry, and the key file's mode. */
async function checkTls(report: Report, tls: TlsConfig): Promise<void> {
  try {
    const { leaf } = await loadTlsMaterial(tls);
    const days = Math.floor((new Date(leaf.validTo).getTime() - Date.now()) / 86_400_000);
    const line = `TLS certificate ${tls.certFile}: ${describeCertificate(leaf)}`;
    if (days < 14) report.line('warn', `${line}: expires in ${days} days`);
    else report.line('ok', `${line} (${days} days left)`);
    const mode = (await stat(tls.keyFile)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      report.line(
        'warn',
        `TLS key ${tls.keyFile} is readable by others (mode ${mode.toString(8)}): chmod 600 it`,
      );
    } else report.line('ok', `TLS key ${tls.keyFile}: matches the certificate, mode ${mode.toString(8)}`);
  } catch (error) {
    report.line('FAIL', `TLS: ${reason(error)}`);
  }
}

async function checkMetadata(report: Report, db: MetadataStore): Promise<void> {
  const started = performance.now();
  await db.ping();
  report.line('ok', `metadata store answers (${(performance.now() - started).toFixed(1)} ms)`);
  const caches = await db.listCaches();
  if (caches.length === 0) report.line('ok', 'no caches yet (the first start creates the default cache)');
  for (const cache of caches) {
    const keys = (await db.listSigningKeys(cache.id)).filter((key) => key.retiredAt === undefined);
    const broken: string[] = [];
    for (const key of keys) {
      try {
        SecretKey.parse(key.secretKey);
      } catch {
        broken.push(key.name);
      }
    }
    const what =
      `cache ${cache.name}: ${cache.isPublic ? 'public' : 'private'}, priority ${cache.priority}, ` +
      `signing with ${keys.map((key) => key.name).join(', ') || 'no key'}`;
    if (broken.length > 0) report.line('FAIL', `${what}; unreadable keys: ${broken.join(', ')}`);
    else if (keys.length === 0) report.line('FAIL', `${what}: nothing it serves would be signed`);
    else report.line('ok', what);
  }
  const now = new Date();
  const principals = (await db.listTokens()).filter((token) => tokenIsActive(token, now));
  const sshKeys = principals.filter((token) => token.sshKey !== undefined).length;
  report.line('ok', `${principals.length - sshKeys} active tokens, ${sshKeys} active SSH keys`);
}

async function checkBlobs(report: Report, db: MetadataStore, blobs: BlobStore): Promise<void> {
  const result = await new Readiness(db, blobs, { timeoutMs: 10_000 }).check();
  const state = result.components.find((component) => component.component === 'blobs');
  if (state?.ok === true) report.line('ok', `blob store takes a write and a delete (${state.ms} ms)`);
  else report.line('FAIL', `blob store refuses a write: ${state?.reason ?? 'unknown'}`);
}

export function registerDoctor(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('doctor')
    .description('check the configuration, every backend and the key files, and print what would be served')
    .option('--data <dir>', DATA_OPTION_HELP)
    .option('--config <file>', CONFIG_OPTION_HELP)
    .action((options: { data?: string; config?: string }) =>
      run(async () => {
        const report = reportTo(io);
        let config: ServeConfig;
        try {
          config = loadServeConfig({ data: options.data, config: options.config }, io.env);
        } catch (error) {
          report.line('FAIL', `configuration: ${reason(error)}`);
          return EXIT_FAILURE;
        }
        const file = options.config ?? io.env.NICHE_CONFIG;
        report.line(
          'ok',
          `configuration loaded${file === undefined ? ' (no config file)' : ` from ${file}`}`,
        );
        report.line(
          'ok',
          `public URL: ${config.publicUrl ?? "each request's own (set public-url behind a proxy)"}; ` +
            `trusted proxies: ${config.trustedProxies.join(', ') || 'none'}`,
        );
        await checkListen(report, config);

        const database =
          config.database.type === 'sqlite'
            ? `SQLite ${config.database.path}`
            : `PostgreSQL ${redactUrl(config.database.url)}`;
        const storage =
          config.storage.type === 'fs'
            ? `files under ${config.storage.path}`
            : `S3 bucket ${config.storage.bucket}${config.storage.endpoint === undefined ? '' : ` at ${config.storage.endpoint}`}`;
        let db: MetadataStore | undefined;
        let blobs: BlobStore | undefined;
        try {
          try {
            db = await openDatabase(config.database);
            report.line('ok', `metadata: ${database}`);
            await checkMetadata(report, db);
          } catch (error) {
            report.line('FAIL', `metadata: ${database}: ${reason(error)}`);
          }
          try {
            blobs = await openStorage(config.storage);
            report.line('ok', `blobs: ${storage}`);
            if (db !== undefined) await checkBlobs(report, db, blobs);
          } catch (error) {
            report.line('FAIL', `blobs: ${storage}: ${reason(error)}`);
          }
        } finally {
          await db?.close();
          await blobs?.close();
        }

        if (config.ssh !== undefined) await checkSshHostKey(report, config.ssh.hostKeyFile);
        if (config.tls !== undefined) await checkTls(report, config.tls);
        if (config.signingKeyFile !== undefined) {
          await checkKeyFile(report, config.signingKeyFile, 'signing-key-file');
        }
        report.line('ok', metricsLine(config.metrics.access, config.metrics.listen !== undefined));
        workersLine(report, config.workers);
        const local = config.localStore;
        if (local !== undefined) {
          report.line(
            'ok',
            `local store ${local.storeDir} served at ${local.mountPath}${local.mountAtRoot ? ' and /' : ''}`,
          );
          for (const [path, what] of [
            [local.storeDir, 'store directory'],
            [local.nixDb, 'Nix database'],
          ] as const) {
            try {
              await stat(path);
              report.line('ok', `local store: ${what} ${path} is there`);
            } catch (error) {
              report.line('FAIL', `local store: ${what} ${path}: ${reason(error)}`);
            }
          }
          for (const keyFile of local.keyFiles) await checkKeyFile(report, keyFile, 'local-store key file');
        }
        report.line(
          report.failed ? 'FAIL' : 'ok',
          report.failed ? 'niche would not start or work as configured' : 'ready to serve',
        );
        return report.failed ? EXIT_FAILURE : EXIT_OK;
      }),
    );
}
