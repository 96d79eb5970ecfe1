// Configuration: defaults beside the schema, validated once, every problem reported at once, result frozen.
// This is the only module that reads process.env.
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { DEFAULT_LIMITS } from './cache/cache-service.js';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface ServeConfig {
  readonly dataDir: string;
  readonly listen: ListenAddress;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** Name of the cache created on first start. */
  readonly defaultCache: string;
  /** A key file (`nix-store --generate-binary-cache-key` format) the default cache signs with. */
  readonly signingKeyFile: string | undefined;
  readonly limits: {
    readonly maxNarFileSize: number;
    readonly maxNarSize: number;
    readonly maxNarInfoSize: number;
  };
}

export const DEFAULT_DATA_DIR = './niche-data';
export const DEFAULT_LISTEN = '127.0.0.1:5000';

/** Flags as given on the command line (undefined = not given). */
export interface ServeFlags {
  readonly data?: string | undefined;
  readonly listen?: string | undefined;
  readonly logLevel?: string | undefined;
  readonly signingKeyFile?: string | undefined;
  readonly maxNarSize?: string | undefined;
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

/** Sizes like `64G`, `512M`, `1048576`. */
export function parseSize(text: string): number {
  const match = /^(\d+)\s*([kmgt]i?b?)?$/i.exec(text.trim());
  if (match === null) throw new Error(`expected a size such as 512M or 64G, got ${JSON.stringify(text)}`);
  const unit = (match[2] ?? '').charAt(0).toLowerCase();
  const factor = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[unit] ?? 1;
  return Number(match[1]) * factor;
}

const schema = z.strictObject({
  dataDir: z.string().min(1),
  listen: z.string().transform((text, ctx) => {
    try {
      return parseListen(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  defaultCache: z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'invalid cache name'),
  signingKeyFile: z.string().min(1).optional(),
  maxNarSize: z.string().transform((text, ctx) => {
    try {
      return parseSize(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  }),
});

export function loadServeConfig(flags: ServeFlags, env: NodeJS.ProcessEnv = process.env): ServeConfig {
  const raw = {
    dataDir: flags.data ?? env.NICHE_DATA ?? DEFAULT_DATA_DIR,
    listen: flags.listen ?? env.NICHE_LISTEN ?? DEFAULT_LISTEN,
    logLevel: flags.logLevel ?? env.NICHE_LOG_LEVEL ?? 'info',
    defaultCache: env.NICHE_DEFAULT_CACHE ?? 'main',
    signingKeyFile: flags.signingKeyFile ?? env.NICHE_SIGNING_KEY_FILE,
    maxNarSize: flags.maxNarSize ?? env.NICHE_MAX_NAR_SIZE ?? String(DEFAULT_LIMITS.maxNarSize),
  };
  const parsed = schema.safeParse(Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined)));
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `  ${issue.path.join('.') || '(config)'}: ${issue.message}`,
    );
    throw new ConfigError('CONFIG_INVALID', `invalid configuration:\n${problems.join('\n')}`);
  }
  const value = parsed.data;
  return Object.freeze({
    dataDir: value.dataDir,
    listen: Object.freeze(value.listen),
    logLevel: value.logLevel,
    defaultCache: value.defaultCache,
    signingKeyFile: value.signingKeyFile,
    limits: Object.freeze({
      // Compressed files of incompressible NARs are slightly larger than the NAR itself.
      maxNarFileSize: value.maxNarSize + Math.ceil(value.maxNarSize / 64) + 2 ** 20,
      maxNarSize: value.maxNarSize,
      maxNarInfoSize: DEFAULT_LIMITS.maxNarInfoSize,
    }),
  });
}

/** Only the data dir, for commands that touch server state but do not serve. */
export function loadDataDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? env.NICHE_DATA ?? DEFAULT_DATA_DIR;
}

/** The token the client commands use, if given through the environment (for CI). */
export function envToken(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.NICHE_TOKEN;
}
