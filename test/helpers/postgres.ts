// Finds the PostgreSQL server tests may use: DATABASE_URL, else the local trust-auth one (user postgres,
// then root, database test). Tests skip with the reason when none answers, except under CI=true.
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const CANDIDATE_URLS =
  process.env.DATABASE_URL === undefined || process.env.DATABASE_URL === ''
    ? ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test']
    : [process.env.DATABASE_URL];

/** Where a URL points, for messages (no user or password). */
export function hostOf(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.host}${parsed.pathname}`;
  } catch {
    return 'DATABASE_URL (not a URL)';
  }
}

/** The first candidate server that accepts a connection, or why none did. */
export async function findPostgres(): Promise<{ url: string } | { skip: string }> {
  const reasons: string[] = [];
  for (const url of CANDIDATE_URLS) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return { url };
    } catch (error) {
      reasons.push(`${hostOf(url)}: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  return { skip: `PostgreSQL is not reachable (${reasons.join('; ')})` };
}

/** node:test options: skip with the reason when PostgreSQL is unreachable, fail instead under CI=true. */
export async function postgresTestOptions(): Promise<
  { url: string; skip?: undefined } | { url?: undefined; skip: string }
> {
  const found = await findPostgres();
  if ('skip' in found && process.env.CI === 'true') throw new Error(`${found.skip}; CI=true requires it`);
  return found;
}

/** A fresh database on the same server as `url`, and how to drop it. */
export async function createTempDatabase(url: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `niche_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return {
    url: parsed.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}
