// Runs the MetadataStore conformance suite against SqliteMetadataStore on a real file, plus what only the
// SQLite backend can promise: data and schema survive a reopen, migrations run once, a database from a
// newer niche is refused, and the file is in WAL mode.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { setImmediate, setTimeout } from 'node:timers/promises';

import Database from 'better-sqlite3';

import { MIGRATIONS } from '../../src/db/sqlite/migrations.js';
import {
  NAME_PAGE_SQL,
  PATH_PAGE_SQL,
  PATH_WITH_NAR_SQL,
  PRESENT_PATHS_SQL,
  SqliteMetadataStore,
} from '../../src/db/sqlite/sqlite-metadata-store.js';
import type { NewCache } from '../../src/db/metadata-store.js';
import { ConfigError } from '../../src/errors.js';
import { makeTempDir } from '../helpers/tmp.js';
import { ANY_UPLOAD, metadataStoreConformance, narRecord, pathRecord } from './metadata-store.conformance.js';

metadataStoreConformance('SqliteMetadataStore', async () => {
  const dir = await makeTempDir('sqlite');
  const store = await SqliteMetadataStore.open(join(dir.path, 'niche.sqlite'));
  return {
    store,
    async cleanup() {
      await store.close();
      await dir.cleanup();
    },
  };
});

async function withFile(test: (file: string) => Promise<void>): Promise<void> {
  const dir = await makeTempDir('sqlite');
  try {
    await test(join(dir.path, 'niche.sqlite'));
  } finally {
    await dir.cleanup();
  }
}

function newCache(name: string): NewCache {
  return { name, isPublic: true, priority: 40, storeDir: '/nix/store', upstreamKeys: [] };
}

/** Reads the file with a second, independent connection, as another process would. */
function inspect<T>(file: string, query: (db: Database.Database) => T): T {
  const db = new Database(file, { readonly: true });
  try {
    return query(db);
  } finally {
    db.close();
  }
}

void describe('SqliteMetadataStore', () => {
  void it('keeps everything across a close and reopen', async () => {
    await withFile(async (file) => {
      const first = await SqliteMetadataStore.open(file);
      const cache = await first.createCache({
        name: 'main',
        isPublic: true,
        priority: 40,
        storeDir: '/nix/store',
        upstreamKeys: [],
      });
      const key = await first.addSigningKey(cache.id, {
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
      await first.recordNarUpload(cache.id, nar, new Date());
      await first.recordNarUpload(cache.id, pending, new Date());
      const path = pathRecord(1, nar);
      await first.addPath(cache.id, path, ANY_UPLOAD);
      await first.close();

      const second = await SqliteMetadataStore.open(file);
      try {
        assert.deepEqual(await second.getCache('main'), cache);
        assert.deepEqual(await second.listSigningKeys(cache.id), [key]);
        assert.deepEqual(await second.findTokenByHash(token.tokenHash), token);
        assert.deepEqual(await second.getPath(cache.id, path.hashPart), {
          path,
          nar,
          lastAccessAt: path.createdAt,
        });
        assert.deepEqual((await second.getNar(cache.id, pending.fileHash))?.nar, pending);
      } finally {
        await second.close();
      }
    });
  });

  void it('runs each migration once and records the schema version', async () => {
    await withFile(async (file) => {
      await (await SqliteMetadataStore.open(file)).close();
      const schema = (): unknown =>
        inspect(file, (db) => db.prepare('SELECT type, name, sql FROM sqlite_schema ORDER BY name').all());
      const before = schema();
      await (await SqliteMetadataStore.open(file)).close();
      await (await SqliteMetadataStore.open(file)).close();
      assert.deepEqual(schema(), before);
      assert.equal(
        inspect(file, (db) => db.pragma('user_version', { simple: true })),
        MIGRATIONS.length,
      );
    });
  });

  void it('puts the file in WAL mode', async () => {
    await withFile(async (file) => {
      await (await SqliteMetadataStore.open(file)).close();
      assert.equal(
        inspect(file, (db) => db.pragma('journal_mode', { simple: true })),
        'wal',
      );
    });
  });

  void it('refuses a database written by a newer niche', async () => {
    await withFile(async (file) => {
      await (await SqliteMetadataStore.open(file)).close();
      const db = new Database(file);
      db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
      db.close();
      await assert.rejects(SqliteMetadataStore.open(file), (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.code, 'DATA_DIR_UNUSABLE');
        assert.match(error.message, /newer/);
        return true;
      });
    });
  });

  void it('fails to open in a missing directory with a clear error', async () => {
    await withFile(async (file) => {
      await assert.rejects(SqliteMetadataStore.open(join(file, 'no', 'such', 'dir.sqlite')), {
        code: 'DATA_DIR_UNUSABLE',
      });
    });
  });

  void it('detaches the upload row when a path takes the NAR', async () => {
    await withFile(async (file) => {
      const store = await SqliteMetadataStore.open(file);
      try {
        const cache = await store.createCache({
          name: 'main',
          isPublic: true,
          priority: 40,
          storeDir: '/nix/store',
          upstreamKeys: [],
        });
        const nar = narRecord(1);
        await store.recordNarUpload(cache.id, nar, new Date(5));
        const uploads = (): unknown =>
          inspect(file, (db) => db.prepare('SELECT cache_id, file_hash, uploaded_at FROM nar_uploads').all());
        assert.deepEqual(uploads(), [{ cache_id: cache.id, file_hash: nar.fileHash, uploaded_at: 5 }]);
        await store.recordNarUpload(cache.id, nar, new Date(9));
        assert.deepEqual(uploads(), [{ cache_id: cache.id, file_hash: nar.fileHash, uploaded_at: 9 }]);
        await store.addPath(cache.id, pathRecord(1, nar), ANY_UPLOAD);
        assert.deepEqual(uploads(), []);
      } finally {
        await store.close();
      }
    });
  });

  void it('refuses to record a NAR again with different facts', async () => {
    await withFile(async (file) => {
      const store = await SqliteMetadataStore.open(file);
      try {
        const cache = await store.createCache({
          name: 'main',
          isPublic: true,
          priority: 40,
          storeDir: '/nix/store',
          upstreamKeys: [],
        });
        const nar = narRecord(1);
        await store.recordNarUpload(cache.id, nar, new Date());
        await assert.rejects(store.recordNarUpload(cache.id, { ...nar, narSize: 1 }, new Date()), {
          code: 'DATABASE_FAILURE',
        });
        assert.deepEqual((await store.getNar(cache.id, nar.fileHash))?.nar, nar);
      } finally {
        await store.close();
      }
    });
  });

  void it('answers getPath and findPresentBaseNames with primary-key probes', async () => {
    await withFile(async (file) => {
      await (await SqliteMetadataStore.open(file)).close();
      const plan = (sql: string): string =>
        inspect(file, (db) =>
          db
            .prepare<{ cacheId: number; hashPart: string; hashParts: string }, { detail: string }>(
              `EXPLAIN QUERY PLAN ${sql}`,
            )
            .all({ cacheId: 1, hashPart: 'x', hashParts: '[]' })
            .map((row) => row.detail)
            .join('\n'),
        );
      const getPath = plan(PATH_WITH_NAR_SQL);
      assert.match(getPath, /SEARCH p USING INDEX sqlite_autoindex_paths_1 \(cache_id=\? AND hash_part=\?\)/);
      assert.match(getPath, /SEARCH n USING PRIMARY KEY \(file_hash=\?\)/);
      assert.doesNotMatch(getPath, /SCAN/);
      const present = plan(PRESENT_PATHS_SQL);
      assert.match(
        present,
        /SEARCH p USING (COVERING )?INDEX sqlite_autoindex_paths_1 \(cache_id=\? AND hash_part=\?\)/,
      );
      assert.doesNotMatch(present, /SCAN p/);
    });
  });

  void it('pages paths by hash part and by name along indexes, without a scan or a sort', async () => {
    await withFile(async (file) => {
      await (await SqliteMetadataStore.open(file)).close();
      const plan = (sql: string): string =>
        inspect(file, (db) =>
          db
            .prepare<Record<string, string | number>, { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`)
            .all({ cacheId: 1, after: '', low: 'a', high: 'b', afterName: '', afterHash: '', limit: 10 })
            .map((row) => row.detail)
            .join('\n'),
        );
      const byHash = plan(PATH_PAGE_SQL);
      assert.match(
        byHash,
        /SEARCH p USING INDEX sqlite_autoindex_paths_1 \(cache_id=\? AND hash_part>\? AND hash_part<\?\)/,
      );
      const byName = plan(NAME_PAGE_SQL);
      assert.match(byName, /SEARCH p USING INDEX paths_name \(cache_id=\? AND name>\? AND name<\?\)/);
      for (const text of [byHash, byName]) {
        assert.doesNotMatch(text, /SCAN|TEMP B-TREE/);
        assert.match(text, /SEARCH n USING PRIMARY KEY \(file_hash=\?\)/);
      }
    });
  });

  void it('records accesses without waiting for a write lock another connection holds', async () => {
    await withFile(async (file) => {
      const store = await SqliteMetadataStore.open(file);
      const other = new Database(file);
      try {
        const cache = await store.createCache({
          name: 'a',
          isPublic: true,
          priority: 40,
          storeDir: '/nix/store',
          upstreamKeys: [],
        });
        const nar = narRecord(1);
        await store.recordNarUpload(cache.id, nar, new Date());
        const path = pathRecord(1, nar);
        await store.addPath(cache.id, path, ANY_UPLOAD);
        other.exec('BEGIN IMMEDIATE');
        const started = Date.now();
        await assert.rejects(
          store.recordAccesses([{ cacheId: cache.id, hashPart: path.hashPart, at: 2e12 }]),
          {
            code: 'DATABASE_FAILURE',
          },
        );
        assert.ok(Date.now() - started < 1000, `waited ${Date.now() - started} ms for the lock`);
        other.exec('COMMIT');
        await store.recordAccesses([{ cacheId: cache.id, hashPart: path.hashPart, at: 2e12 }]);
        assert.equal((await store.scanGcPaths(cache.id, '', 10))[0]?.lastAccess, 2e12);
      } finally {
        other.close();
        await store.close();
      }
    });
  });

  void it('resolves a write only once its commit is synced, and shares one sync among concurrent writes', async () => {
    await withFile(async (file) => {
      const syncs: (() => void)[] = [];
      const syncedFiles = new Set<FileHandle>();
      let done = false;
      const store = await SqliteMetadataStore.open(file, {
        syncFile: (file) =>
          new Promise<void>((resolve) => {
            syncedFiles.add(file);
            if (done) resolve();
            else syncs.push(resolve);
          }),
      });
      const releaseNext = async (): Promise<void> => {
        // The first sync opens the WAL file on libuv's pool first: wait for it in real time.
        for (let waited = 0; waited < 5000 && syncs.length === 0; waited += 5) await setTimeout(5);
        const release = syncs.shift();
        assert.ok(release !== undefined, 'no sync was requested');
        release();
      };
      try {
        let created = false;
        const creating = store.createCache(newCache('a')).then((cache) => {
          created = true;
          return cache;
        });
        for (let turn = 0; turn < 5; turn++) await setImmediate();
        assert.equal(created, false, 'createCache resolved before its commit was synced');
        // The commit is visible (committed) before it is durable.
        assert.deepEqual(
          inspect(file, (db) => db.prepare('SELECT count(*) AS n FROM caches').get()),
          { n: 1 },
        );
        await releaseNext();
        const cache = await creating;
        assert.equal(syncs.length, 0);

        // Four uploads while a sync runs: they wait for the next one, and share it.
        const first = store.recordNarUpload(cache.id, narRecord(1), new Date());
        for (let turn = 0; turn < 5; turn++) await setImmediate();
        assert.equal(syncs.length, 1);
        const more = [2, 3, 4, 5].map((seed) => store.recordNarUpload(cache.id, narRecord(seed), new Date()));
        for (let turn = 0; turn < 5; turn++) await setImmediate();
        assert.equal(syncs.length, 1, 'a second sync started while the first ran');
        await releaseNext();
        await first;
        let settled = 0;
        for (const upload of more) void upload.then(() => (settled += 1));
        for (let turn = 0; turn < 5; turn++) await setImmediate();
        assert.equal(settled, 0, 'writes committed during a sync resolved before a sync that covers them');
        assert.equal(syncs.length, 1);
        await releaseNext();
        await Promise.all(more);
        assert.equal(syncs.length, 0);

        // Reads never wait for a sync; the WAL file is what is synced.
        assert.equal(
          (await store.getNar(cache.id, narRecord(3).fileHash))?.nar.fileHash,
          narRecord(3).fileHash,
        );
        assert.equal(syncs.length, 0);
        assert.equal(syncedFiles.size, 1);
      } finally {
        done = true;
        for (const release of syncs) release();
        await store.close();
      }
    });
  });

  void it('fails a write whose sync fails with DATABASE_FAILURE', async () => {
    await withFile(async (file) => {
      let fail = false;
      const store = await SqliteMetadataStore.open(file, {
        syncFile: () => (fail ? Promise.reject(new Error('EIO: i/o error, fdatasync')) : Promise.resolve()),
      });
      try {
        const cache = await store.createCache(newCache('a'));
        fail = true;
        await assert.rejects(store.recordNarUpload(cache.id, narRecord(1), new Date()), (error: unknown) => {
          assert.equal((error as { code?: string }).code, 'DATABASE_FAILURE');
          assert.match(
            (error as Error).message,
            /recordNarUpload: the write could not be made durable: .*EIO/,
          );
          return true;
        });
        fail = false;
        await store.recordNarUpload(cache.id, narRecord(2), new Date());
      } finally {
        await store.close();
      }
    });
  });

  void it('rejects calls after close with DATABASE_FAILURE', async () => {
    await withFile(async (file) => {
      const store = await SqliteMetadataStore.open(file);
      await store.close();
      await store.close();
      await assert.rejects(store.getCache('main'), { code: 'DATABASE_FAILURE' });
    });
  });
});

void describe('SqliteMetadataStore migrations', () => {
  void it('upgrades a version-1 database and backfills the reverse references', async () => {
    await withFile(async (file) => {
      const raw = new Database(file);
      raw.exec(MIGRATIONS[0] ?? '');
      raw.pragma('user_version = 1');
      const now = Date.now();
      raw
        .prepare(
          "INSERT INTO caches (id, name, is_public, priority, store_dir, created_at) VALUES (1, 'main', 1, 40, '/nix/store', ?)",
        )
        .run(now);
      const nar = narRecord(1);
      raw
        .prepare(
          'INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, blob_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
        )
        .run(nar.fileHash, nar.fileSize, nar.compression, nar.narHash, nar.narSize, nar.blobKey, now);
      const dep = pathRecord(1, nar, { references: [] });
      const top = pathRecord(2, nar, {
        references: [dep.storePath.slice(11), pathRecord(2, nar).storePath.slice(11)],
      });
      for (const path of [dep, top]) {
        raw
          .prepare(
            'INSERT INTO paths (cache_id, hash_part, store_path, file_hash, nar_hash, nar_size, refs, signatures, created_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)',
          )
          .run(
            path.hashPart,
            path.storePath,
            nar.fileHash,
            nar.narHash,
            nar.narSize,
            JSON.stringify(path.references),
            '[]',
            now,
          );
      }
      raw.close();

      const store = await SqliteMetadataStore.open(file);
      try {
        assert.deepEqual((await store.getCache('main'))?.upstreamKeys, []);
        assert.deepEqual(await store.findReferrers(1, dep.hashPart, 10), [top.hashPart]);
        assert.deepEqual(await store.findReferrers(1, top.hashPart, 10), []);
      } finally {
        await store.close();
      }
      assert.equal(
        inspect(file, (db) => db.pragma('user_version', { simple: true })),
        MIGRATIONS.length,
      );
    });
  });
});
