// Configuration: defaults beside the schema, validated once, every problem reported at once, result frozen.
// This is the only module that reads process.env.
import { readFileSync } from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { camelToKebab, markers, SettingNames } from './config-names.js';
import { ConfigError } from './errors.js';
import { DEFAULT_LIMITS } from './cache/cache-service.js';
import { DEFAULT_GC_GRACE_MS } from './cache/gc.js';
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MIN_TRANSFER_RATE } from './http/deadlines.js';
import { parsePublicUrl, parseTrustedProxy } from './http/public-url.js';
import { localStoreSchema, type LocalStoreConfig } from './localstore/local-store-config.js';
import { DEFAULT_MAX_SSH_SESSIONS, DEFAULT_MAX_SSH_SESSIONS_PER_KEY } from './ssh/limits.js';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** A Unix domain socket to serve HTTP on (`unix:/run/niche/http.sock`). */
export interface UnixListenAddress {
  readonly socketPath: string;
}

/** Where HTTP is served: a TCP address or a Unix socket. */
export type HttpListenAddress = ListenAddress | UnixListenAddress;

/** Access logs (src/http/access-log.ts): off, or the fraction of requests logged (1: every request). */
export type AccessLogConfig = { readonly sampleRate: number };

/** TLS on the HTTP listeners (`--tls-cert`, `--tls-key`): PEM files, read at start and on SIGHUP. */
export interface TlsConfig {
  /** The certificate, followed by its chain. */
  readonly certFile: string;
  readonly keyFile: string;
}

/** Where NAR files live. */
export type StorageConfig =
  /** Local files under `path` (default `<data-dir>/blobs`). */
  | { readonly type: 'fs'; readonly path: string }
  | {
      readonly type: 's3';
      readonly bucket: string;
      /** For S3-compatible services (MinIO, R2, Garage…); AWS when absent. */
      readonly endpoint: string | undefined;
      readonly region: string | undefined;
      readonly forcePathStyle: boolean;
      /** Prepended to every object key, e.g. `niche/`. */
      readonly prefix: string;
      readonly partSize: number;
      readonly partsInFlight: number;
    };

/** Where metadata lives. */
export type DatabaseConfig =
  /** SQLite file at `path` (default `<data-dir>/niche.sqlite`). */
  | { readonly type: 'sqlite'; readonly path: string }
  | { readonly type: 'postgres'; readonly url: string; readonly maxConnections: number };

export interface ServeConfig {
  readonly dataDir: string;
  /** One or more addresses, all serving the same thing. */
  readonly listen: readonly HttpListenAddress[];
  /** One JSON line per request (or per sampled request); undefined when off. */
  readonly accessLog: AccessLogConfig | undefined;
  /** HTTPS (HTTP/2 and HTTP/1.1) on every HTTP listener; undefined: plain HTTP. */
  readonly tls: TlsConfig | undefined;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** Name of the cache created on first start. */
  readonly defaultCache: string;
  /** A key file (`nix-store --generate-binary-cache-key` format) the default cache signs with. */
  readonly signingKeyFile: string | undefined;
  readonly storage: StorageConfig;
  readonly database: DatabaseConfig;
  readonly limits: {
    readonly maxNarFileSize: number;
    readonly maxNarSize: number;
    readonly maxNarInfoSize: number;
    readonly maxListingSize: number;
    readonly maxLogSize: number;
    /** NAR uploads received at once; more are answered 503 with Retry-After. */
    readonly maxUploads: number;
  };
  /** Serve the host's own Nix store too (`--local-store`); undefined when off. */
  readonly localStore: LocalStoreConfig | undefined;
  /**
   * The URL clients reach the server at (`https://cache.example.org`, maybe with a path prefix a proxy
   * strips), used for every URL printed or returned; undefined: each request's own.
   */
  readonly publicUrl: string | undefined;
  /** Addresses and networks whose X-Forwarded-Proto/Host/Prefix headers are believed. */
  readonly trustedProxies: readonly string[];
  /** The embedded SSH server (`--ssh-listen`, `[ssh]`); undefined when off. */
  readonly ssh: SshConfig | undefined;
  /** Prometheus metrics (src/metrics): who may read `/metrics` on the main listener, and its own address. */
  readonly metrics: {
    readonly access: 'admin' | 'public' | 'off';
    readonly listen: ListenAddress | undefined;
  };
  /** Garbage collection in `niche serve` (src/cache/gc.ts): every `intervalMs` (undefined: never). */
  readonly gc: {
    readonly intervalMs: number | undefined;
    /** Unused NAR files and blobs without a record are kept this long before they are deleted. */
    readonly graceMs: number;
  };
  /**
   * Processes serving HTTP (and SSH): 1 is one process, as always; more makes `niche serve` a cluster
   * primary that forks this many workers sharing the listeners (src/app/cluster-primary.ts).
   */
  readonly workers: number;
  /** Progress deadlines of connections (src/http/deadlines.ts). */
  readonly connections: {
    /** No bytes moved for this long while waiting on the client: the connection is cut. */
    readonly idleTimeoutMs: number;
    /** Bytes per second a transfer must average over `idleTimeoutMs`; 0: no minimum. */
    readonly minTransferRate: number;
  };
}

export interface SshConfig {
  readonly listen: readonly ListenAddress[];
  /** The server's host key (ed25519, OpenSSH format), created at the first start. */
  readonly hostKeyFile: string;
  /** SSH sessions open at once, in total and per key. */
  readonly maxSessions: number;
  readonly maxSessionsPerKey: number;
}

export const DEFAULT_DATA_DIR = './niche-data';
/** `niche serve` collects garbage hourly; with the default policies (keep everything) that only reclaims
 * what deleted paths and caches, expired uploads and crashes left behind. */
export const DEFAULT_GC_INTERVAL_MS = 3_600_000;
export const DEFAULT_LISTEN = '127.0.0.1:5000';
/** Most worker processes `workers` may ask for (beyond it, more processes only add contention). */
export const MAX_WORKERS = 256;
/** Access logs are on by default: every request, one line (`npm run bench:ops` measures the cost). */
export const DEFAULT_ACCESS_LOG: AccessLogConfig = Object.freeze({ sampleRate: 1 });

/** Flags as given on the command line (undefined = not given). */
export interface ServeFlags {
  readonly config?: string | undefined;
  readonly data?: string | undefined;
  readonly listen?: readonly string[] | string | undefined;
  readonly logLevel?: string | undefined;
  readonly signingKeyFile?: string | undefined;
  readonly maxNarSize?: string | undefined;
  readonly maxUploads?: string | undefined;
  readonly publicUrl?: string | undefined;
  readonly trustedProxies?: readonly string[] | undefined;
  readonly idleTimeout?: string | undefined;
  readonly minTransferRate?: string | undefined;
  readonly sshListen?: readonly string[] | undefined;
  readonly metricsListen?: string | undefined;
  readonly gcInterval?: string | undefined;
  readonly accessLog?: string | undefined;
  readonly tlsCert?: string | undefined;
  readonly tlsKey?: string | undefined;
  readonly workers?: string | undefined;
  // The local store (src/localstore/local-store-config.ts).
  readonly localStore?: boolean | undefined;
  readonly localStoreRoot?: boolean | undefined;
  readonly localStorePath?: string | undefined;
  readonly storeDir?: string | undefined;
  readonly nixDb?: string | undefined;
  readonly nixLogDir?: string | undefined;
  readonly localStoreKeyFiles?: readonly string[] | undefined;
}

export function parseListen(text: string): ListenAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || !Number.isInteger(port) || port > 65535) {
    throw new Error(`expected HOST:PORT, [IPV6]:PORT or PORT, got ${JSON.stringify(text)}`);
  }
  const host = match[1] ?? match[2] ?? '';
  return { host: host === '' ? '127.0.0.1' : host, port };
}

/** `unix:/absolute/path` (an HTTP listen address on a Unix socket), or a TCP address as parseListen. */
export function parseHttpListen(text: string): HttpListenAddress {
  if (!text.startsWith('unix:')) return parseListen(text);
  const socketPath = text.slice('unix:'.length);
  // Linux's sun_path holds 107 bytes and a NUL.
  if (!socketPath.startsWith('/') || Buffer.byteLength(socketPath) > 107 || socketPath.includes('\0')) {
    throw new Error(
      `expected unix:/ABSOLUTE/PATH (at most 107 bytes), got ${JSON.stringify(text.slice(0, 200))}`,
    );
  }
  return { socketPath };
}

/** `on`, `off`, or a sample rate from 0 to 1 (`0.1`: one request in ten, chosen at random). */
export function parseAccessLog(text: string): AccessLogConfig {
  const value = text.trim().toLowerCase();
  if (value === 'on' || value === 'true') return { sampleRate: 1 };
  if (value === 'off' || value === 'false') return { sampleRate: 0 };
  const rate = /^(?:0|1|0?\.\d+|1\.0*)$/.test(value) ? Number(value) : Number.NaN;
  if (!(rate >= 0 && rate <= 1)) {
    throw new Error(`expected on, off or a sample rate from 0 to 1, got ${JSON.stringify(text)}`);
  }
  return { sampleRate: rate };
}

/**
 * The number of worker processes: `auto` (one per core the process may use, os.availableParallelism())
 * or a whole number from 1 to MAX_WORKERS.
 */
export function parseWorkers(text: string, cores: () => number = availableParallelism): number {
  const value = text.trim().toLowerCase();
  if (value === 'auto') return Math.min(Math.max(1, cores()), MAX_WORKERS);
  const count = /^\d{1,4}$/.test(value) ? Number(value) : Number.NaN;
  if (!(count >= 1 && count <= MAX_WORKERS)) {
    throw new Error(
      `expected a number of worker processes from 1 to ${MAX_WORKERS}, or auto (one per core), got ${JSON.stringify(text.slice(0, 40))}`,
    );
  }
  return count;
}

/** Sizes like `64G`, `512M`, `1048576`. */
export function parseSize(text: string): number {
  const match = /^(\d+)\s*([kmgt]i?b?)?$/i.exec(text.trim());
  if (match === null) throw new Error(`expected a size such as 512M or 64G, got ${JSON.stringify(text)}`);
  const unit = (match[2] ?? '').charAt(0).toLowerCase();
  const factor = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[unit] ?? 1;
  return Number(match[1]) * factor;
}

/** Durations like `60s`, `5m`, `500ms`, `1h`, `30d`; a bare number is seconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i.exec(text.trim());
  if (match === null) throw new Error(`expected a duration such as 60s or 5m, got ${JSON.stringify(text)}`);
  const unit = (match[2] ?? 's').toLowerCase();
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit] ?? 1000;
  return Math.round(Number(match[1]) * factor);
}

/** Rates like `1K`, `1K/s`, `100KiB/s`, `0` (bytes per second). */
export function parseRate(text: string): number {
  return parseSize(text.trim().replace(/\/s$/i, ''));
}

function parsing<T>(parse: (text: string) => T) {
  return (text: string, ctx: z.RefinementCtx): T => {
    try {
      return parse(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  };
}

const size = z.union([z.number(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'string') return parsing(parseSize)(value, ctx);
  if (Number.isSafeInteger(value) && value >= 0) return value;
  ctx.addIssue({ code: 'custom', message: `expected a size such as 512M or 64G, got ${value}` });
  return z.NEVER;
});
const MAX_IDLE_TIMEOUT_MS = 24 * 3_600_000;
const duration = z.union([z.number(), z.string()]).transform((value, ctx) => {
  let ms: number;
  try {
    ms = typeof value === 'string' ? parseDuration(value) : Math.round(value * 1000);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
  if (!Number.isFinite(ms) || ms < 1 || ms > MAX_IDLE_TIMEOUT_MS) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a duration from 1ms to 24h, got ${JSON.stringify(value)}`,
    });
    return z.NEVER;
  }
  return ms;
});
const rate = z.union([z.number(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'string') return parsing(parseRate)(value, ctx);
  if (Number.isSafeInteger(value) && value >= 0) return value;
  ctx.addIssue({ code: 'custom', message: `expected a rate such as 1K/s, got ${value}` });
  return z.NEVER;
});
const booleanish = z.union([z.boolean(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'boolean') return value;
  const text = value.trim().toLowerCase();
  if (['1', 'true', 'yes'].includes(text)) return true;
  if (['', '0', 'false', 'no'].includes(text)) return false;
  ctx.addIssue({ code: 'custom', message: `expected true or false, got ${JSON.stringify(value)}` });
  return z.NEVER;
});
const positiveInt = z
  .union([z.number(), z.string().regex(/^\d+$/).transform(Number)])
  .pipe(z.number().int().positive());

/**
 * Every setting as it may come from the config file, the environment or a flag (camelCase; the file's
 * kebab-case keys are converted first). Unknown keys are errors.
 */
const rawSchema = z.strictObject({
  dataDir: z.string().min(1),
  listen: z.union([z.string(), z.array(z.string()).min(1)]),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  defaultCache: z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'invalid cache name'),
  signingKeyFile: z.string().min(1).optional(),
  limits: z
    .strictObject({
      maxNarSize: size.optional(),
      maxNarinfoSize: size.optional(),
      maxLogSize: size.optional(),
      maxUploads: positiveInt.optional(),
    })
    .optional(),
  storage: z
    .strictObject({
      type: z.enum(['fs', 's3']).optional(),
      path: z.string().min(1).optional(),
      bucket: z.string().min(1).optional(),
      endpoint: z.url().optional(),
      region: z.string().min(1).optional(),
      forcePathStyle: booleanish.optional(),
      prefix: z.string().optional(),
      partSize: size.optional(),
      partsInFlight: positiveInt.optional(),
    })
    .optional(),
  database: z
    .strictObject({
      type: z.enum(['sqlite', 'postgres']).optional(),
      path: z.string().min(1).optional(),
      url: z.string().min(1).optional(),
      maxConnections: positiveInt.optional(),
    })
    .optional(),
  localStore: localStoreSchema,
  publicUrl: z.string().transform(parsing(parsePublicUrl)).optional(),
  trustedProxies: z.array(z.string().transform(parsing(parseTrustedProxy))).optional(),
  idleTimeout: duration.optional(),
  minTransferRate: rate.optional(),
  metrics: z.enum(['admin', 'public', 'off']).optional(),
  metricsListen: z.string().optional(),
  gc: z
    .strictObject({
      interval: z
        .string()
        .transform((text, ctx) => (text === 'off' ? 0 : parsing(parseDuration)(text, ctx)))
        .optional(),
      grace: duration.optional(),
    })
    .optional(),
  accessLog: z
    .union([z.boolean(), z.number(), z.string()])
    .transform((value, ctx) =>
      parsing(parseAccessLog)(typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value), ctx),
    )
    .optional(),
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  workers: z
    .union([z.number(), z.string()])
    .transform((value, ctx) => parsing((text: string) => parseWorkers(text))(String(value), ctx))
    .optional(),
  ssh: z
    .strictObject({
      listen: z.union([z.string(), z.array(z.string())]).optional(),
      hostKeyFile: z.string().min(1).optional(),
      maxSessions: positiveInt.optional(),
      maxSessionsPerKey: positiveInt.optional(),
    })
    .optional(),
});

type Raw = z.input<typeof rawSchema>;

/** Reads a TOML config file (see README) into raw settings; `names` learns the keys as written. */
export function parseConfigFile(
  text: string,
  file: string,
  names: SettingNames = new SettingNames(),
): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = parseToml(text);
  } catch (error) {
    throw new ConfigError('CONFIG_INVALID', `cannot parse ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return names.camelFileKeys(parsed) as Record<string, unknown>;
}

function defined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, inner]) => inner !== undefined)) as Partial<T>;
}

/** Later layers win, key by key, one level deep into sections. */
function merge(...layers: Record<string, unknown>[]): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer)) {
      if (value === undefined) continue;
      const current = result[key];
      const isSection = (v: unknown): v is Record<string, unknown> =>
        v !== null && typeof v === 'object' && !Array.isArray(v);
      result[key] = isSection(current) && isSection(value) ? { ...current, ...defined(value) } : value;
    }
  }
  return result;
}

function envLayer(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const list = (text: string | undefined): string[] | undefined =>
    text
      ?.split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
  return {
    dataDir: env.NICHE_DATA,
    listen: list(env.NICHE_LISTEN),
    logLevel: env.NICHE_LOG_LEVEL,
    defaultCache: env.NICHE_DEFAULT_CACHE,
    signingKeyFile: env.NICHE_SIGNING_KEY_FILE,
    publicUrl: env.NICHE_PUBLIC_URL,
    trustedProxies: list(env.NICHE_TRUSTED_PROXIES),
    idleTimeout: env.NICHE_IDLE_TIMEOUT,
    minTransferRate: env.NICHE_MIN_TRANSFER_RATE,
    metrics: env.NICHE_METRICS,
    metricsListen: env.NICHE_METRICS_LISTEN,
    gc: defined({ interval: env.NICHE_GC_INTERVAL, grace: env.NICHE_GC_GRACE }),
    accessLog: env.NICHE_ACCESS_LOG,
    tlsCert: env.NICHE_TLS_CERT,
    tlsKey: env.NICHE_TLS_KEY,
    workers: env.NICHE_WORKERS,
    ssh: defined({ listen: list(env.NICHE_SSH_LISTEN) }),
    limits: defined({ maxNarSize: env.NICHE_MAX_NAR_SIZE, maxUploads: env.NICHE_MAX_UPLOADS }),
    storage: defined({
      type: env.NICHE_STORAGE,
      path: env.NICHE_STORAGE_PATH,
      bucket: env.NICHE_S3_BUCKET,
      endpoint: env.NICHE_S3_ENDPOINT,
      region: env.NICHE_S3_REGION,
      forcePathStyle: env.NICHE_S3_FORCE_PATH_STYLE,
      prefix: env.NICHE_S3_PREFIX,
    }),
    database: defined({
      type: env.NICHE_DATABASE,
      url: env.NICHE_DATABASE_URL,
      maxConnections: env.NICHE_DATABASE_MAX_CONNECTIONS,
    }),
    localStore: defined({
      enabled: env.NICHE_LOCAL_STORE,
      root: env.NICHE_LOCAL_STORE_ROOT,
      mountPath: env.NICHE_LOCAL_STORE_PATH,
      storeDir: env.NICHE_STORE_DIR,
      nixDb: env.NICHE_NIX_DB,
      logDir: env.NICHE_NIX_LOG_DIR,
      keyFiles: list(env.NICHE_LOCAL_STORE_KEY_FILES),
    }),
  };
}

function flagLayer(flags: ServeFlags): Record<string, unknown> {
  return {
    dataDir: flags.data,
    listen: flags.listen,
    logLevel: flags.logLevel,
    signingKeyFile: flags.signingKeyFile,
    publicUrl: flags.publicUrl,
    trustedProxies: flags.trustedProxies,
    idleTimeout: flags.idleTimeout,
    minTransferRate: flags.minTransferRate,
    metricsListen: flags.metricsListen,
    gc: defined({ interval: flags.gcInterval }),
    accessLog: flags.accessLog,
    tlsCert: flags.tlsCert,
    tlsKey: flags.tlsKey,
    workers: flags.workers,
    ssh: defined({ listen: flags.sshListen }),
    limits: defined({ maxNarSize: flags.maxNarSize, maxUploads: flags.maxUploads }),
    localStore: defined({
      enabled: flags.localStore,
      root: flags.localStoreRoot,
      mountPath: flags.localStorePath,
      storeDir: flags.storeDir,
      nixDb: flags.nixDb,
      logDir: flags.nixLogDir,
      keyFiles: flags.localStoreKeyFiles,
    }),
  };
}

/** Flags whose name is not the kebab-case of their property. */
const FLAG_NAMES: Readonly<Record<string, string>> = {
  trustedProxies: '--trusted-proxy',
  localStoreKeyFiles: '--local-store-key-file',
};

const DEFAULTS: Raw = {
  dataDir: DEFAULT_DATA_DIR,
  listen: DEFAULT_LISTEN,
  logLevel: 'info',
  defaultCache: 'main',
  localStore: {},
};

/**
 * The server configuration: defaults, then the config file (`--config`, env NICHE_CONFIG), then the
 * environment, then flags. Every problem is reported at once.
 */
export function loadServeConfig(flags: ServeFlags, env: NodeJS.ProcessEnv = process.env): ServeConfig {
  const file = flags.config ?? env.NICHE_CONFIG;
  // Problems name settings as given: file keys as written, environment variables, flags.
  const names = new SettingNames();
  let fileLayer: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new ConfigError('CONFIG_INVALID', `cannot read config file ${file}: ${(error as Error).message}`);
    }
    fileLayer = parseConfigFile(text, file, names);
  }
  names.recordSources(
    envLayer(markers()),
    (name) => env[name] !== undefined,
    (name) => name,
  );
  names.recordSources(
    flagLayer(markers()),
    (name) => flags[name as keyof ServeFlags] !== undefined,
    (name) => FLAG_NAMES[name] ?? `--${camelToKebab(name)}`,
  );
  const name = (path: string): string => names.nameOf(path.split('.'));
  const merged = merge(DEFAULTS, fileLayer, envLayer(env), flagLayer(flags));
  const parsed = rawSchema.safeParse(merged);
  const problems: string[] = parsed.success
    ? []
    : parsed.error.issues.flatMap((issue) => names.describe(issue, rawSchema));
  const value = parsed.success ? parsed.data : undefined;

  const listen: HttpListenAddress[] = [];
  const listenTexts =
    value === undefined ? [] : typeof value.listen === 'string' ? [value.listen] : value.listen;
  for (const text of listenTexts) {
    try {
      listen.push(parseHttpListen(text));
    } catch (error) {
      problems.push(`${name('listen')}: ${(error as Error).message}`);
    }
  }
  const sshListen: ListenAddress[] = [];
  const sshTexts = value?.ssh?.listen === undefined ? [] : [value.ssh.listen].flat();
  for (const text of sshTexts) {
    try {
      sshListen.push(parseListen(text));
    } catch (error) {
      problems.push(`${name('ssh.listen')}: ${(error as Error).message}`);
    }
  }
  let metricsListen: ListenAddress | undefined;
  try {
    metricsListen = value?.metricsListen === undefined ? undefined : parseListen(value.metricsListen);
  } catch (error) {
    problems.push(`${name('metricsListen')}: ${(error as Error).message}`);
  }
  if (value !== undefined && (value.tlsCert === undefined) !== (value.tlsKey === undefined)) {
    const [given, missing] = value.tlsCert === undefined ? ['tlsKey', 'tls-cert'] : ['tlsCert', 'tls-key'];
    problems.push(`${name(given)}: needs ${missing} too (a certificate and its key go together)`);
  }
  const storage = value === undefined ? undefined : storageOf(value, problems, name);
  const database = value === undefined ? undefined : databaseOf(value, problems, name);
  if (problems.length > 0 || value === undefined || storage === undefined || database === undefined) {
    const where = file === undefined ? '' : ` (config file ${file}, environment and flags)`;
    throw new ConfigError(
      'CONFIG_INVALID',
      `invalid configuration${where}:\n${problems.map((p) => `  ${p}`).join('\n')}`,
    );
  }
  const maxNarSize = value.limits?.maxNarSize ?? DEFAULT_LIMITS.maxNarSize;
  return Object.freeze({
    dataDir: value.dataDir,
    listen: Object.freeze(listen.map((address) => Object.freeze(address))),
    accessLog:
      value.accessLog === undefined
        ? DEFAULT_ACCESS_LOG
        : value.accessLog.sampleRate === 0
          ? undefined
          : Object.freeze(value.accessLog),
    tls:
      value.tlsCert === undefined || value.tlsKey === undefined
        ? undefined
        : Object.freeze({ certFile: value.tlsCert, keyFile: value.tlsKey }),
    logLevel: value.logLevel,
    defaultCache: value.defaultCache,
    signingKeyFile: value.signingKeyFile,
    storage,
    database,
    limits: Object.freeze({
      // Compressed files of incompressible NARs are slightly larger than the NAR itself.
      maxNarFileSize: maxNarSize + Math.ceil(maxNarSize / 64) + 2 ** 20,
      maxNarSize,
      maxNarInfoSize: value.limits?.maxNarinfoSize ?? DEFAULT_LIMITS.maxNarInfoSize,
      maxListingSize: DEFAULT_LIMITS.maxListingSize,
      maxLogSize: value.limits?.maxLogSize ?? DEFAULT_LIMITS.maxLogSize,
      maxUploads: value.limits?.maxUploads ?? DEFAULT_LIMITS.maxUploads,
    }),
    localStore: value.localStore,
    publicUrl: value.publicUrl,
    trustedProxies: Object.freeze([...(value.trustedProxies ?? [])]),
    ssh:
      sshListen.length === 0
        ? undefined
        : Object.freeze({
            listen: Object.freeze(sshListen.map((address) => Object.freeze(address))),
            hostKeyFile: value.ssh?.hostKeyFile ?? join(value.dataDir, 'ssh_host_ed25519_key'),
            maxSessions: value.ssh?.maxSessions ?? DEFAULT_MAX_SSH_SESSIONS,
            maxSessionsPerKey: value.ssh?.maxSessionsPerKey ?? DEFAULT_MAX_SSH_SESSIONS_PER_KEY,
          }),
    metrics: Object.freeze({
      access: value.metrics ?? 'admin',
      listen: metricsListen === undefined ? undefined : Object.freeze(metricsListen),
    }),
    gc: Object.freeze({
      intervalMs:
        (value.gc?.interval ?? DEFAULT_GC_INTERVAL_MS) === 0
          ? undefined
          : (value.gc?.interval ?? DEFAULT_GC_INTERVAL_MS),
      graceMs: value.gc?.grace ?? DEFAULT_GC_GRACE_MS,
    }),
    workers: value.workers ?? 1,
    connections: Object.freeze({
      idleTimeoutMs: value.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS,
      minTransferRate: value.minTransferRate ?? DEFAULT_MIN_TRANSFER_RATE,
    }),
  });
}

type Parsed = z.output<typeof rawSchema>;

function storageOf(
  value: Parsed,
  problems: string[],
  name: (path: string) => string,
): StorageConfig | undefined {
  const storage = value.storage ?? {};
  if ((storage.type ?? 'fs') === 'fs') {
    for (const key of [
      'bucket',
      'endpoint',
      'region',
      'forcePathStyle',
      'prefix',
      'partSize',
      'partsInFlight',
    ] as const) {
      if (storage[key] !== undefined) {
        problems.push(`${name(`storage.${key}`)}: only applies to storage type "s3"`);
      }
    }
    return Object.freeze({ type: 'fs', path: storage.path ?? join(value.dataDir, 'blobs') });
  }
  if (storage.path !== undefined) problems.push(`${name('storage.path')}: only applies to storage type "fs"`);
  if (storage.bucket === undefined) {
    problems.push('storage.bucket: required for storage type "s3" (env NICHE_S3_BUCKET)');
    return undefined;
  }
  const partSize = storage.partSize ?? 16 * 2 ** 20;
  if (partSize < 5 * 2 ** 20) problems.push(`${name('storage.partSize')}: S3 needs at least 5M`);
  return Object.freeze({
    type: 's3',
    bucket: storage.bucket,
    endpoint: storage.endpoint,
    region: storage.region,
    forcePathStyle: storage.forcePathStyle ?? storage.endpoint !== undefined,
    prefix: storage.prefix ?? '',
    partSize,
    partsInFlight: storage.partsInFlight ?? 4,
  });
}

function databaseOf(
  value: Parsed,
  problems: string[],
  name: (path: string) => string,
): DatabaseConfig | undefined {
  const database = value.database ?? {};
  const type = database.type ?? (database.url === undefined ? 'sqlite' : 'postgres');
  if (type === 'sqlite') {
    if (database.url !== undefined) {
      problems.push(`${name('database.url')}: only applies to database type "postgres"`);
    }
    if (database.maxConnections !== undefined) {
      problems.push(`${name('database.maxConnections')}: only applies to database type "postgres"`);
    }
    return Object.freeze({ type: 'sqlite', path: database.path ?? join(value.dataDir, 'niche.sqlite') });
  }
  if (database.path !== undefined) {
    problems.push(`${name('database.path')}: only applies to database type "sqlite"`);
  }
  if (database.url === undefined) {
    problems.push('database.url: required for database type "postgres" (env NICHE_DATABASE_URL)');
    return undefined;
  }
  if (!/^postgres(?:ql)?:\/\//.test(database.url)) {
    problems.push(`${name('database.url')}: expected a postgres:// or postgresql:// URL`);
  }
  return Object.freeze({
    type: 'postgres',
    url: database.url,
    maxConnections: database.maxConnections ?? 10,
  });
}

/** The token the client commands use, if given through the environment (for CI). */
export function envToken(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.NICHE_TOKEN;
}

/** Where the client commands keep and find their files, from the environment (NICHE_*, XDG, Nix's own). */
export interface ClientPaths {
  /** `$NICHE_CONFIG_DIR/config.json`, else `$XDG_CONFIG_HOME/niche/config.json`, else `~/.config/niche/config.json`. */
  readonly configFile: string;
  /** The nix.conf Nix reads for this user: the first of `$NIX_USER_CONF_FILES`, else `$XDG_CONFIG_HOME/nix/nix.conf`. */
  readonly userNixConf: string;
  /** `$XDG_CONFIG_HOME/nix/netrc` (`~/.config/nix/netrc`). */
  readonly userNetrc: string;
  /** `$NIX_CONF_DIR/nix.conf` (`/etc/nix/nix.conf`), what `--system` edits. */
  readonly systemNixConf: string;
  /** `$NIX_CONF_DIR/netrc` (`/etc/nix/netrc`), also Nix's default `netrc-file`. */
  readonly systemNetrc: string;
}

export function loadClientPaths(env: NodeJS.ProcessEnv = process.env): ClientPaths {
  const nonEmpty = (value: string | undefined): string | undefined =>
    value === undefined || value === '' ? undefined : value;
  const home = nonEmpty(env.HOME) ?? homedir();
  const xdgConfig = nonEmpty(env.XDG_CONFIG_HOME) ?? join(home, '.config');
  const nicheDir = nonEmpty(env.NICHE_CONFIG_DIR) ?? join(xdgConfig, 'niche');
  const userConfFiles = (env.NIX_USER_CONF_FILES ?? '').split(':').filter((file) => file !== '');
  const nixConfDir = nonEmpty(env.NIX_CONF_DIR) ?? '/etc/nix';
  return Object.freeze({
    configFile: join(nicheDir, 'config.json'),
    userNixConf: userConfFiles[0] ?? join(xdgConfig, 'nix', 'nix.conf'),
    userNetrc: join(xdgConfig, 'nix', 'netrc'),
    systemNixConf: join(nixConfDir, 'nix.conf'),
    systemNetrc: join(nixConfDir, 'netrc'),
  });
}
