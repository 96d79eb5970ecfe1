// Starts a real niche server in-process on an ephemeral loopback port, with its own data directory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import Database from 'better-sqlite3';

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

/**
 * Makes every path of the test server's SQLite database look pushed and last accessed `ms` earlier, after
 * writing the accesses it still holds in memory: a hit is recorded only past the access resolution
 * (src/cache/access-resolution.ts), which a test cannot wait for.
 */
export async function agePaths(t: TestServer, ms: number): Promise<void> {
  await t.server.service.access.flush();
  const db = new Database(join(t.dataDir, 'niche.sqlite'));
  try {
    db.prepare('UPDATE paths SET created_at = created_at - @ms, last_access_at = last_access_at - @ms').run({
      ms,
    });
  } finally {
    db.close();
  }
}
