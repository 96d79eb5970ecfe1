// Starts a real niche server in-process on an ephemeral loopback port, with its own data directory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer, type StartOptions } from '../../src/app/server.js';
import { generateToken, hashToken } from '../../src/cache/tokens.js';
import { loadServeConfig, type ServeFlags } from '../../src/config.js';
import type { Permission } from '../../src/db/metadata-store.js';

export interface TestServer {
  readonly server: RunningServer;
  readonly url: string;
  readonly dataDir: string;
  /** Creates a token with the given permissions on the given cache patterns. */
  token(patterns: readonly string[], permissions: readonly Permission[], expiresAt?: Date): Promise<string>;
  stop(): Promise<void>;
}

export async function startTestServer(
  options: { maxNarSize?: string; dataDir?: string; flags?: ServeFlags; start?: StartOptions } = {},
): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'niche-test-')));
  const config = loadServeConfig(
    {
      data: dataDir,
      listen: '127.0.0.1:0',
      logLevel: process.env.NICHE_TEST_LOG_LEVEL ?? 'silent',
      ...(options.maxNarSize === undefined ? {} : { maxNarSize: options.maxNarSize }),
      ...options.flags,
    },
    {},
  );
  const server = await startServer(config, options.start);
  return {
    server,
    url: server.url,
    dataDir,
    async token(patterns, permissions, expiresAt) {
      const secret = generateToken();
      await server.stores.db.createToken({
        description: 'test',
        tokenHash: hashToken(secret),
        scopes: patterns.map((cachePattern) => ({ cachePattern, permissions })),
        expiresAt,
      });
      return secret;
    },
    async stop() {
      await server.close();
      if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export function basicAuth(token: string): string {
  return `Basic ${Buffer.from(`niche:${token}`).toString('base64')}`;
}
