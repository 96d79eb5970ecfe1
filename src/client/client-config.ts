// The client's own configuration file: the servers `niche login` remembered, by alias, with their tokens.
// It holds secrets, so it is always written with mode 0600 (directory 0700), atomically, and validated
// strictly when read so a hand-edit mistake is reported with the file's name rather than misread.
import { z } from 'zod';
import { NicheError } from '../errors.js';
import { readTextIfExists, writeFileAtomic } from './atomic-file.js';

export const CONFIG_FILE_MODE = 0o600;

/** Aliases name servers on the command line (`<alias>/<cache>`), so they cannot contain `/` or `:`. */
const ALIAS = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

const serverSchema = z.strictObject({
  url: z.string().min(1),
  token: z.string().min(1).optional(),
});

const configSchema = z.strictObject({
  version: z.literal(1),
  servers: z.record(z.string().regex(ALIAS), serverSchema),
});

export type ServerEntry = z.infer<typeof serverSchema>;
export type ClientConfig = z.infer<typeof configSchema>;

export class ClientConfigError extends NicheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('config', 'CLIENT_CONFIG_INVALID', message, options);
  }
}

export function emptyConfig(): ClientConfig {
  return { version: 1, servers: {} };
}

export function isAlias(text: string): boolean {
  return ALIAS.test(text);
}

/** The configuration in `file`, or an empty one if the file does not exist. */
export async function readClientConfig(file: string): Promise<ClientConfig> {
  const text = await readTextIfExists(file);
  if (text === undefined) return emptyConfig();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ClientConfigError(`${file} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  const parsed = configSchema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join('.') || '(file)'}: ${issue.message}`,
    );
    throw new ClientConfigError(`${file} is not a valid niche client configuration: ${problems.join('; ')}`);
  }
  return parsed.data;
}

export async function writeClientConfig(file: string, config: ClientConfig): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(config, null, 2)}\n`, {
    mode: CONFIG_FILE_MODE,
    dirMode: 0o700,
  });
}

/** `http://host:port[/prefix]` without a trailing slash, query or fragment. Throws on anything else. */
export function normaliseServerUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ClientConfigError(`invalid server URL ${JSON.stringify(text)}: expected http(s)://host[:port]`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ClientConfigError(
      `invalid server URL ${JSON.stringify(text)}: only http and https are supported`,
    );
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new ClientConfigError(
      `invalid server URL ${JSON.stringify(text)}: no query, fragment or credentials (pass the token separately)`,
    );
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}
