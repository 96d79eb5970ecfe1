// Runs the MetadataStore conformance suite against PostgresMetadataStore on a real server, each test in a
// fresh schema dropped afterwards, plus what only this backend must promise: migrations that run once and
// safely from several replicas at once, races between replicas (two pools) that neither double nor lose a
// row, errors at open that name the server but never the password, and int8 columns read safely.
//
// The server is DATABASE_URL, else the local trust-auth one (user postgres, then root). If none answers
// the tests are skipped with the reason, unless CI=true, where that is a failure.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';

import pg from 'pg';

import { MIGRATIONS } from '../../src/db/postgres/migrations.js';
import {
  FIND_PATHS_BY_NAME,
  FIND_PRESENT_PATHS,
  GET_PATH,
  LIST_PATHS,
  PostgresMetadataStore,
} from '../../src/db/postgres/postgres-metadata-store.js';
import { ConfigError } from '../../src/errors.js';
import { findPostgres } from '../helpers/postgres.js';
import {
  ANY_UPLOAD,
  fakeHash,
  metadataStoreConformance,
  narRecord,
  pathRecord,
} from './metadata-store.conformance.js';

const server = await findPostgres();
if ('skip' in server && process.env.CI === 'true') {
  throw new Error(`${server.skip}; CI=true requires it`);
}
const skip = 'skip' in server ? server.skip : undefined;
const url = 'url' in server ? server.url : '';

function freshSchema(): string {
  return `niche_test_${randomBytes(6).toString('hex')}`;
}

/** A plain connection, outside any store, optionally with its search_path on the schema. */
/**
 * Migrates the schema, fills it with 5000 paths of one cache with statistics (an empty table's plan ties
 * between indexes), and returns what the planner does with a statement there.
 */
async function plannerOn(
  schema: string,
): Promise<(statement: string, types: string, args: string) => Promise<string>> {
  const store = await PostgresMetadataStore.open({ connectionString: url, schema });
  try {
    await createCache(store, 'main');
  } finally {
    await store.close();
  }
  await withClient(schema, async (client) => {
    await client.query(
      `INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, blob_key, created_at)
       VALUES ('f', 1, 'none', 'h', 1, 'nar/f', 0)`,
    );
    await client.query(
      `INSERT INTO paths (cache_id, hash_part, store_path, file_hash, nar_hash, nar_size, refs, signatures,
                          created_at)
       SELECT c.id, lpad(i::text, 32, '0'), '/nix/store/' || lpad(i::text, 32, '0') || '-p' || i, 'f', 'h', 1,
              '[]', '[]', 0
       FROM generate_series(1, 5000) AS i, caches AS c`,
    );
    await client.query('ANALYZE');
  });
  return (statement, types, args) =>
    withClient(schema, async (client) => {
      // Small tables would still be scanned whatever the indexes; this asks whether the index can serve.
      await client.query('SET enable_seqscan = off');
      await client.query(`PREPARE probe (${types}) AS ${statement}`);
      const result = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN EXECUTE probe (${args})`);
      return result.rows.map((row) => row['QUERY PLAN']).join('\n');
    });
}

async function withClient<T>(
  schema: string | undefined,
  work: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({
    connectionString: url,
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function dropSchema(schema: string): Promise<void> {
  await withClient(undefined, (client) => client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
}

async function withSchema(test: (schema: string) => Promise<void>): Promise<void> {
  const schema = freshSchema();
  try {
    await test(schema);
  } finally {
    await dropSchema(schema);
  }
}

/** Two stores on one schema with separate pools, as two replicas of the server would be. */
async function withReplicas(
  test: (a: PostgresMetadataStore, b: PostgresMetadataStore) => Promise<void>,
): Promise<void> {
  await withSchema(async (schema) => {
    const a = await PostgresMetadataStore.open({ connectionString: url, schema });
    try {
      const b = await PostgresMetadataStore.open({ connectionString: url, schema });
      try {
        await test(a, b);
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
    }
  });
}

async function createCache(store: PostgresMetadataStore, name: string): Promise<number> {
  const cache = await store.createCache({
    name,
    isPublic: true,
    priority: 40,
    storeDir: '/nix/store',
    upstreamKeys: [],
  });
  return cache.id;
}

/** A TCP port on loopback that nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const listener = createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const address = listener.address();
  await new Promise<void>((resolve, reject) => {
    listener.close((error) => {
      if (error) reject(error);
      else resolve();
    });
  });
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

function withPassword(base: string, password: string): string {
  const parsed = new URL(base);
  parsed.password = password;
  return parsed.toString();
}

async function assertConfigError(promise: Promise<unknown>, secret: string, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.equal(error.code, 'CONFIG_INVALID');
    assert.match(error.message, message);
    // Neither the message nor anything reachable from the error (its cause included) holds the password.
    assert.ok(!inspect(error, { depth: 10 }).includes(secret), inspect(error));
    return true;
  });
}

if (skip === undefined) {
  metadataStoreConformance('PostgresMetadataStore', async () => {
    const schema = freshSchema();
    const store = await PostgresMetadataStore.open({ connectionString: url, schema });
    return {
      store,
      async cleanup() {
        await store.close();
        await dropSchema(schema);
      },
    };
  });
} else {
  void it('MetadataStore conformance: PostgresMetadataStore', { skip }, () => undefined);
}

void describe('PostgresMetadataStore', { skip }, () => {
  void it('keeps everything across a close and reopen', async () => {
    await withSchema(async (schema) => {
      const first = await PostgresMetadataStore.open({ connectionString: url, schema });
      const cacheId = await createCache(first, 'main');
      const cache = await first.getCache('main');
      const key = await first.addSigningKey(cacheId, {
        name: 'main-1',
        secretKey: 'main-1:cw==',
        publicKey: 'main-1:cA==',
      });
      const token = await first.createToken({
        description: 'ci',
        tokenHash: 'e'.repeat(64),
        scopes: [{ cachePattern: 'main', permissions: ['push'] }],
        expiresAt: undefined,
      });
      const nar = narRecord(1);
      const pending = narRecord(2);
      await first.recordNarUpload(cacheId, nar, new Date());
      await first.recordNarUpload(cacheId, pending, new Date());
      const path = pathRecord(1, nar);
      await first.addPath(cacheId, path, ANY_UPLOAD);
      await first.close();

      const second = await PostgresMetadataStore.open({ connectionString: url, schema });
      try {
        assert.deepEqual(await second.getCache('main'), cache);
        assert.deepEqual(await second.listSigningKeys(cacheId), [key]);
        assert.deepEqual(await second.findTokenByHash(token.tokenHash), token);
        assert.deepEqual(await second.getPath(cacheId, path.hashPart), {
          path,
          nar,
          lastAccessAt: path.createdAt,
        });
        assert.deepEqual((await second.getNar(cacheId, pending.fileHash))?.nar, pending);
      } finally {
        await second.close();
      }
    });
  });

  void it('runs each migration once and records the schema version', async () => {
    await withSchema(async (schema) => {
      await (await PostgresMetadataStore.open({ connectionString: url, schema })).close();
      const shape = (): Promise<unknown> =>
        withClient(undefined, async (client) => {
          const columns = await client.query(
            `SELECT table_name, column_name, data_type, collation_name, is_nullable, column_default
             FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, column_name`,
            [schema],
          );
          const constraints = await client.query(
            `SELECT conrelid::regclass::text AS table_name, conname, pg_get_constraintdef(oid) AS definition
             FROM pg_constraint WHERE connamespace = $1::regnamespace ORDER BY 1, 2`,
            [schema],
          );
          const indexes = await client.query(
            'SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname',
            [schema],
          );
          return [columns.rows, constraints.rows, indexes.rows];
        });
      const before = await shape();
      await (await PostgresMetadataStore.open({ connectionString: url, schema })).close();
      await (await PostgresMetadataStore.open({ connectionString: url, schema })).close();
      assert.deepEqual(await shape(), before);
      const versions = await withClient(schema, (client) =>
        client.query<{ version: number }>('SELECT version FROM niche_schema_migrations ORDER BY version'),
      );
      assert.deepEqual(
        versions.rows.map((row) => row.version),
        MIGRATIONS.map((_, index) => index + 1),
      );
    });
  });

  void it('lets replicas that start at once migrate a fresh schema together', async () => {
    await withSchema(async (schema) => {
      const stores = await Promise.all(
        Array.from({ length: 4 }, () => PostgresMetadataStore.open({ connectionString: url, schema })),
      );
      try {
        const created = await createCache(stores[0] ?? assert.fail('no store'), 'main');
        for (const store of stores) assert.equal((await store.getCache('main'))?.id, created);
      } finally {
        await Promise.all(stores.map((store) => store.close()));
      }
      const versions = await withClient(schema, (client) =>
        client.query<{ version: number }>('SELECT version FROM niche_schema_migrations ORDER BY version'),
      );
      assert.equal(versions.rows.length, MIGRATIONS.length);
    });
  });

  void it('refuses a database migrated by a newer niche', async () => {
    await withSchema(async (schema) => {
      await (await PostgresMetadataStore.open({ connectionString: url, schema })).close();
      await withClient(schema, (client) =>
        client.query('INSERT INTO niche_schema_migrations (version, applied_at) VALUES ($1, 0)', [
          MIGRATIONS.length + 1,
        ]),
      );
      await assert.rejects(
        PostgresMetadataStore.open({ connectionString: url, schema }),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(error.code, 'CONFIG_INVALID');
          assert.match(error.message, /newer/);
          return true;
        },
      );
    });
  });

  void it('adds a path raced by two replicas exactly once', async () => {
    await withReplicas(async (a, b) => {
      const cacheId = await createCache(a, 'main');
      const nar = narRecord(1);
      const nar2 = narRecord(2);
      await a.recordNarUpload(cacheId, nar, new Date());
      await b.recordNarUpload(cacheId, nar2, new Date());
      const races = Array.from({ length: 25 }, (_, index) => ({
        fromA: pathRecord(index, nar, { signatures: ['a-1:c2ln'] }),
        fromB: pathRecord(index, nar2, { signatures: ['b-1:c2ln'] }),
      }));
      const outcomes = await Promise.all(
        races.map(({ fromA, fromB }) =>
          Promise.all([a.addPath(cacheId, fromA, ANY_UPLOAD), b.addPath(cacheId, fromB, ANY_UPLOAD)]),
        ),
      );
      for (const [index, [outcomeA, outcomeB]] of outcomes.entries()) {
        const race = races[index] ?? assert.fail('no race');
        assert.deepEqual([outcomeA.status, outcomeB.status].sort(), ['added', 'exists']);
        const winner = outcomeA.status === 'added' ? race.fromA : race.fromB;
        const loser = outcomeA.status === 'added' ? outcomeB : outcomeA;
        assert.deepEqual(loser, { status: 'exists', existing: winner });
        assert.deepEqual((await b.getPath(cacheId, winner.hashPart))?.path, winner);
      }
      // Each path's reverse references went in once, with the path that won.
      const zlib = fakeHash('zlib', 32);
      assert.equal((await a.findReferrers(cacheId, zlib, 100)).length, races.length);
    });
  });

  void it('records the same NAR raced by two replicas without error', async () => {
    await withReplicas(async (a, b) => {
      const one = await createCache(a, 'one');
      const two = await createCache(a, 'two');
      const nars = Array.from({ length: 25 }, (_, index) => narRecord(index));
      const results = await Promise.all(
        nars.map((nar) =>
          Promise.all([
            a.recordNarUpload(one, nar, new Date()),
            b.recordNarUpload(one, { ...nar, blobKey: `elsewhere/${nar.fileHash}` }, new Date()),
            b.recordNarUpload(two, { ...nar, blobKey: `third/${nar.fileHash}` }, new Date()),
          ]),
        ),
      );
      for (const [index, recorded] of results.entries()) {
        const nar = nars[index] ?? assert.fail('no NAR');
        // Whoever won, everyone gets the one record that was kept.
        const kept = recorded[0];
        for (const other of recorded) assert.deepEqual(other, kept);
        assert.ok(kept.blobKey.endsWith(nar.fileHash));
        assert.deepEqual(kept, { ...nar, blobKey: kept.blobKey });
        assert.deepEqual((await a.getNar(one, nar.fileHash))?.nar, kept);
        assert.deepEqual((await b.getNar(two, nar.fileHash))?.nar, kept);
      }
    });
  });

  void it('merges signatures added by two replicas at once', async () => {
    await withReplicas(async (a, b) => {
      const cacheId = await createCache(a, 'main');
      const nar = narRecord(1);
      await a.recordNarUpload(cacheId, nar, new Date());
      const path = pathRecord(1, nar, { signatures: [] });
      await a.addPath(cacheId, path, ANY_UPLOAD);
      const added = Array.from({ length: 10 }, (_, index) => `k-${index}:c2ln`);
      await Promise.all(
        added.map((signature, index) =>
          (index % 2 === 0 ? a : b).addSignatures(cacheId, path.hashPart, [signature]),
        ),
      );
      const stored = (await b.getPath(cacheId, path.hashPart))?.path.signatures ?? [];
      assert.deepEqual([...stored].sort(), [...added].sort());
    });
  });

  void it('makes a revocation visible to other replicas at once', async () => {
    await withReplicas(async (a, b) => {
      const token = await a.createToken({
        description: 'ci',
        tokenHash: 'f'.repeat(64),
        scopes: [{ cachePattern: '*', permissions: ['pull'] }],
        expiresAt: undefined,
      });
      assert.deepEqual(await b.findTokenByHash(token.tokenHash), token);
      const at = new Date(1_800_000_000_001);
      assert.equal(await a.revokeToken(token.id, at), true);
      assert.deepEqual((await b.findTokenByHash(token.tokenHash))?.revokedAt, at);
    });
  });

  void it('serves concurrent work, transactions included, from a pool of one connection', async () => {
    await withSchema(async (schema) => {
      const store = await PostgresMetadataStore.open({ connectionString: url, schema, maxConnections: 1 });
      try {
        const cacheId = await createCache(store, 'main');
        await Promise.all(
          Array.from({ length: 20 }, async (_, index) => {
            const nar = narRecord(index);
            await store.recordNarUpload(cacheId, nar, new Date());
            await Promise.all([
              store.addPath(cacheId, pathRecord(index, nar), ANY_UPLOAD),
              store.createToken({
                description: `t${index}`,
                tokenHash: fakeHash(index, 64),
                scopes: [{ cachePattern: 'main', permissions: ['pull'] }],
                expiresAt: undefined,
              }),
              store.getPath(cacheId, pathRecord(index, nar).hashPart),
            ]);
          }),
        );
        assert.equal((await store.listPaths(cacheId, { limit: 100 })).length, 20);
        assert.equal((await store.listTokens()).length, 20);
      } finally {
        await store.close();
      }
    });
  });

  void it('round-trips sizes up to 2^53 - 1 and refuses larger stored integers', async () => {
    await withSchema(async (schema) => {
      const store = await PostgresMetadataStore.open({ connectionString: url, schema });
      try {
        const cacheId = await createCache(store, 'main');
        const big = { ...narRecord(1), fileSize: Number.MAX_SAFE_INTEGER, narSize: 2 ** 40 };
        await store.recordNarUpload(cacheId, big, new Date());
        assert.deepEqual((await store.getNar(cacheId, big.fileHash))?.nar, big);

        const huge = narRecord(2);
        await withClient(schema, async (client) => {
          await client.query(
            `INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, blob_key, created_at)
             VALUES ($1, 9007199254740993, 'none', $2, 1, $3, 0)`,
            [huge.fileHash, huge.narHash, huge.blobKey],
          );
          await client.query(
            'INSERT INTO nar_uploads (cache_id, file_hash, uploaded_at) VALUES ($1, $2, 0)',
            [cacheId, huge.fileHash],
          );
        });
        await assert.rejects(store.getNar(cacheId, huge.fileHash), (error: unknown) => {
          assert.ok(error instanceof Error && 'code' in error);
          assert.equal(error.code, 'DATABASE_FAILURE');
          assert.match(error.message, /9007199254740993 exceeds 2\^53/);
          return true;
        });
      } finally {
        await store.close();
      }
    });
  });

  void it('answers getPath and findPresentBaseNames with primary-key index scans', async () => {
    await withSchema(async (schema) => {
      const plan = await plannerOn(schema);
      const getPath = await plan(GET_PATH.text, 'bigint, text', "1, 'x'");
      assert.match(getPath, /Index Scan using paths_pkey on paths p/);
      assert.match(getPath, /Index Scan using nars_pkey on nars n/);
      assert.doesNotMatch(getPath, /Seq Scan/);
      const present = await plan(FIND_PRESENT_PATHS.text, 'bigint, text[]', "1, '{a,b,c}'");
      assert.match(present, /paths_pkey/);
      assert.match(present, /hash_part = ANY/);
      assert.doesNotMatch(present, /Seq Scan/);
    });
  });

  void it('pages paths by hash part and by name along indexes, without a sort', async () => {
    await withSchema(async (schema) => {
      const plan = await plannerOn(schema);
      const byHash = await plan(LIST_PATHS.text, 'bigint, text, text, text, int', "1, '', 'a', 'b', 10");
      assert.match(byHash, /Index Scan using paths_pkey on paths p/);
      const byName = await plan(
        FIND_PATHS_BY_NAME.text,
        'bigint, text, text, text, text, int',
        "1, 'a', 'b', '', '', 10",
      );
      assert.match(byName, /Index Scan using paths_name on paths p/);
      for (const text of [byHash, byName]) {
        assert.doesNotMatch(text, /Seq Scan|Sort/);
      }
    });
  });

  void it('rejects calls after close with DATABASE_FAILURE', async () => {
    await withSchema(async (schema) => {
      const store = await PostgresMetadataStore.open({ connectionString: url, schema });
      await store.close();
      await store.close();
      await assert.rejects(store.getCache('main'), { code: 'DATABASE_FAILURE' });
    });
  });

  void describe('open', () => {
    const secret = 'pa55-Secret-w0rd';

    void it('fails on an unreachable port with a ConfigError that hides the password', async () => {
      const port = await closedPort();
      await assertConfigError(
        PostgresMetadataStore.open({ connectionString: `postgres://niche:${secret}@127.0.0.1:${port}/test` }),
        secret,
        new RegExp(
          `^cannot connect to PostgreSQL at postgres://niche@127\\.0\\.0\\.1:${port}/test: .*ECONNREFUSED`,
        ),
      );
    });

    void it('fails on a missing database with a ConfigError that hides the password', async () => {
      const missing = new URL(withPassword(url, secret));
      missing.pathname = '/niche_no_such_database';
      await assertConfigError(
        PostgresMetadataStore.open({ connectionString: missing.toString() }),
        secret,
        /niche_no_such_database.*does not exist/,
      );
    });

    void it('fails on a malformed connection string without echoing it', async () => {
      await assertConfigError(
        PostgresMetadataStore.open({ connectionString: `postgres://niche:${secret}@[::1/test` }),
        secret,
        /^cannot connect to PostgreSQL/,
      );
    });

    void it('rejects a bad schema name or pool size before connecting', async () => {
      await assertConfigError(
        PostgresMetadataStore.open({ connectionString: url, schema: 'x; DROP TABLE caches' }),
        secret,
        /schema name/,
      );
      await assertConfigError(
        PostgresMetadataStore.open({ connectionString: url, maxConnections: 0 }),
        secret,
        /maxConnections/,
      );
    });

    void it('refuses a connection string whose options override the schema', async () => {
      await withSchema(async (schema) => {
        const overriding = new URL(url);
        overriding.searchParams.set('options', '-c search_path=public');
        await assertConfigError(
          PostgresMetadataStore.open({ connectionString: overriding.toString(), schema }),
          secret,
          /options parameter/,
        );
      });
    });
  });
});
