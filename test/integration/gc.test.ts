// Garbage collection and fsck on the embedded backends (SQLite and files), through the cache service as
// uploads reach it: random DAGs with shared and diamond references and shared NAR files, random access
// times, pins; after every collection the invariant is checked by walking what the cache serves, and the
// paths that went are exactly the expected ones. Also: NAR files and blobs left by deleted paths and caches
// and by crashes, an identical upload racing the collection of its blob, one collector at a time, fsck.
import assert from 'node:assert/strict';
import { readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';

import { openStores, type Stores } from '../../src/app/data-dir.js';
import { CacheService } from '../../src/cache/cache-service.js';
import { fsck } from '../../src/cache/fsck.js';
import { GarbageCollector, GcBusyError } from '../../src/cache/gc.js';
import { pinPath } from '../../src/cache/pins.js';
import { loadServeConfig } from '../../src/config.js';
import {
  assertInvariant,
  buildWorld,
  expectedKept,
  newCache,
  random,
  upload,
  type WorldPath,
} from '../helpers/gc-world.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const DAY = 86_400_000;
const silent = pino({ level: 'silent' });

void describe('garbage collection (SQLite and files)', () => {
  let dir: TempDir;
  let stores: Stores;
  let service: CacheService;
  let blobRoot: string;

  beforeEach(async () => {
    dir = await makeTempDir('gc');
    const config = loadServeConfig({ data: dir.path }, {});
    stores = await openStores(config);
    service = new CacheService({
      db: stores.db,
      blobs: stores.blobs,
      logger: silent,
      accessFlushMs: 0,
      trackAccesses: false,
    });
    blobRoot = config.storage.type === 'fs' ? config.storage.path : '';
  });
  afterEach(async () => {
    await service.close();
    await stores.db.close();
    await stores.blobs.close();
    await dir.cleanup();
  });

  const collector = (): GarbageCollector => new GarbageCollector(service, silent);

  async function fill(
    seed: number,
    count: number,
    name: string,
  ): Promise<{ paths: WorldPath[]; cacheId: number }> {
    const cache = await newCache(service, name);
    const paths = await buildWorld(seed, count, name);
    for (const path of paths) await upload(service, cache, path, paths);
    return { paths, cacheId: cache.id };
  }

  async function cacheNamed(name: string) {
    const cache = await service.db.getCache(name);
    assert.ok(cache !== undefined);
    return cache;
  }

  void it('retention removes exactly the paths no recent or pinned path needs, and never breaks a closure', async () => {
    for (const seed of [1, 2, 3]) {
      const name = `ret${seed}`;
      const { paths, cacheId } = await fill(seed, 36, name);
      const next = random(seed * 7);
      const start = Date.now();
      // Accessed 0 to 9 days after the upload; the collection runs 10 days after it with 5 days' retention.
      const accessDay = paths.map(() => Math.floor(next() * 10));
      await service.db.recordAccesses(
        paths.map((path, index) => ({
          cacheId,
          hashPart: path.hashPart,
          at: start + (accessDay[index] ?? 0) * DAY + 1000,
        })),
      );
      const pinned = Math.floor(next() * paths.length);
      const pinnedPath = paths[pinned] as WorldPath;
      const cache = await service.db.updateCache(cacheId, { retentionMs: 5 * DAY });
      await pinPath(service.db, cache, { name: 'prod', storePath: pinnedPath.baseName }, new Date());
      const now = () => new Date(start + 10 * DAY);

      const dry = await collector().run({ dryRun: true, now, graceMs: 0 });
      const recent = paths.filter((_path, index) => (accessDay[index] ?? 0) >= 5).map((path) => path.index);
      const kept = expectedKept(paths, [...recent, pinned]);
      const expectedGone = paths
        .filter((path) => !kept.has(path.index))
        .map((path) => path.hashPart)
        .sort();
      assert.equal(dry.caches.find((report) => report.cache === name)?.paths, expectedGone.length);
      assert.equal(
        (await service.db.getCacheUsage(cacheId)).paths,
        paths.length,
        'a dry run changes nothing',
      );

      const report = await collector().run({ now, graceMs: 0 });
      const cacheReport = report.caches.find((entry) => entry.cache === name);
      assert.equal(cacheReport?.paths, expectedGone.length);
      assert.equal(cacheReport.byRetention, expectedGone.length);
      const served = await assertInvariant(service, cache);
      const gone = paths.map((path) => path.hashPart).filter((hashPart) => !served.has(hashPart));
      assert.deepEqual(gone.sort(), expectedGone, `seed ${seed}`);
      assert.ok(served.has(pinnedPath.hashPart));
    }
  });

  void it('a quota evicts the least recently used paths with their referrers, down to 90% of it', async () => {
    const { paths, cacheId } = await fill(11, 40, 'quota');
    const start = Date.now();
    const next = random(99);
    const accessed = paths.map((path) => ({
      cacheId,
      hashPart: path.hashPart,
      at: start + Math.floor(next() * 1e6),
    }));
    await service.db.recordAccesses(accessed);
    const before = await service.db.getCacheUsage(cacheId);
    const maxSize = Math.floor(before.storedBytes / 2);
    const cache = await service.db.updateCache(cacheId, { maxSize });
    const report = await collector().run({ graceMs: 0 });
    const after = await service.db.getCacheUsage(cacheId);
    assert.ok(after.storedBytes <= maxSize * 0.9, `${after.storedBytes} stored, quota ${maxSize}`);
    assert.ok((report.caches[0]?.byQuota ?? 0) > 0);
    const served = await assertInvariant(service, cache);
    // Least recently used first: a path's effective access is its own or a referrer's, whichever is later.
    const effective = (index: number): number => {
      let latest = accessed[index]?.at ?? 0;
      for (const path of paths) {
        if (expectedKept(paths, [path.index]).has(index))
          latest = Math.max(latest, accessed[path.index]?.at ?? 0);
      }
      return latest;
    };
    const goneEffective = paths
      .filter((path) => !served.has(path.hashPart))
      .map((path) => effective(path.index));
    const keptEffective = paths
      .filter((path) => served.has(path.hashPart))
      .map((path) => effective(path.index));
    assert.ok(Math.max(...goneEffective) <= Math.min(...keptEffective));
  });

  void it('an access, a pin or a new referrer after the plan keeps a path', async () => {
    const { paths, cacheId } = await fill(5, 12, 'late');
    const cache = await service.db.updateCache(cacheId, { retentionMs: DAY });
    const start = Date.now();
    const leaf = paths[0] as WorldPath;
    // Between planning and deleting: the store's conditional delete is what decides.
    const gone = await service.db.deletePathsIfUnused(
      cacheId,
      [{ hashPart: leaf.hashPart, accessedAtMost: start - DAY }],
      new Date(start + 2 * DAY),
    );
    assert.deepEqual(gone, []);
    const served = await assertInvariant(service, cache);
    assert.equal(served.size, paths.length);
  });

  void it('records a narinfo hit, from the database or from memory, once per resolution', async () => {
    let clock = Date.UTC(2026, 0, 1);
    const HOUR = 3_600_000;
    const timed = new CacheService({
      db: stores.db,
      blobs: stores.blobs,
      logger: silent,
      accessFlushMs: 0,
      narInfoCacheTtlMs: 10 * DAY,
      now: () => new Date(clock),
    });
    try {
      const cache = await newCache(timed, 'timed');
      const [path] = await buildWorld(3, 1, 'timed');
      assert.ok(path !== undefined);
      await upload(timed, cache, path, [path]);
      const pushedAt = clock;
      const recorded = async (): Promise<number | undefined> => {
        await timed.access.flush();
        return (await stores.db.getPath(cache.id, path.hashPart))?.lastAccessAt.getTime();
      };
      const read = async (record = cache): Promise<void> => {
        assert.ok((await timed.getNarInfo(record, path.hashPart)) !== undefined);
      };
      assert.equal(await recorded(), pushedAt);
      // Without retention the resolution is an hour: the push counts as the access for 59 minutes.
      clock += 59 * 60_000;
      await read();
      assert.equal(await recorded(), pushedAt, 'from the database, within the resolution');
      clock += 2 * 60_000;
      await read();
      assert.equal(await recorded(), clock, 'from memory, past the resolution');
      const memoryAt = clock;
      clock += 30 * 60_000;
      await read();
      assert.equal(await recorded(), memoryAt, 'from memory, within the resolution');
      timed.forgetNarInfo(cache.id, path.hashPart);
      clock += 31 * 60_000;
      await read();
      assert.equal(await recorded(), clock, 'from the database, past the resolution');
      // Retention 10 minutes: a resolution of one.
      const short = await stores.db.updateCache(cache.id, { retentionMs: 10 * 60_000 });
      const before = clock;
      clock += 50_000;
      await read(short);
      assert.equal(await recorded(), before);
      clock += 20_000;
      await read(short);
      assert.equal(await recorded(), clock);
      assert.ok(clock - pushedAt > 2 * HOUR);
    } finally {
      await timed.close();
    }
  });

  void it('deleted paths and caches, expired uploads and crash leftovers are reclaimed after the grace period', async () => {
    const { paths: kept } = await fill(21, 6, 'keep');
    const { paths: doomed } = await fill(22, 6, 'doomed');
    // The same NAR file in both caches: deleting one cache must not delete it.
    const shared = kept[0] as WorldPath;
    const doomedCache = await cacheNamed('doomed');
    await upload(service, doomedCache, { ...shared, references: [] }, kept);
    await service.deleteCache(doomedCache);
    // A blob without a record, old (a crash between the write and the record) and new (an upload now).
    const stray = 'nar/0000000000000000000000000000000000000000000000000000-stray';
    await stores.blobs.put(stray, Readable.from([Buffer.from('stray')]));
    const old = new Date(Date.now() - 2 * DAY);
    await utimes(join(blobRoot, stray), old, old);
    const fresh = 'nar/1111111111111111111111111111111111111111111111111111-fresh';
    await stores.blobs.put(fresh, Readable.from([Buffer.from('fresh')]));

    // First pass: the files are marked unused, nothing goes before the grace period.
    const first = await collector().run({ graceMs: DAY });
    assert.equal(first.nars, 0);
    assert.equal(first.orphanBlobs, 1, 'the old stray blob');
    assert.equal(await stores.blobs.head(stray), undefined);
    assert.ok((await stores.blobs.head(fresh)) !== undefined);
    const later = () => new Date(Date.now() + 2 * DAY);
    const second = await collector().run({ graceMs: DAY, now: later });
    const doomedOnly = doomed.filter((path) => !kept.some((other) => other.fx.fileHash === path.fx.fileHash));
    assert.equal(second.nars, new Set(doomedOnly.map((path) => path.fx.fileHash)).size);
    for (const cache of [await cacheNamed('keep')]) await assertInvariant(service, cache);
    // Nothing under nar/ is left but the kept cache's blobs (the fresh blob is two days old by now).
    const blobs: string[] = [];
    for await (const key of stores.blobs.list('nar/')) blobs.push(key);
    assert.equal(blobs.length, new Set(kept.map((path) => path.fx.fileHash)).size);
    assert.equal(await stores.blobs.head(fresh), undefined);
  });

  void it('an upload of a NAR identical to one being collected never loses its blob', async () => {
    const cache = await newCache(service, 'race');
    const [path] = await buildWorld(31, 1, 'race');
    assert.ok(path !== undefined);
    const collecting = async (): Promise<void> => {
      for (let round = 0; round < 40; round += 1) {
        try {
          await collector().run({ graceMs: 0 });
        } catch (error) {
          if (!(error instanceof GcBusyError)) throw error;
        }
      }
    };
    const uploading = async (): Promise<void> => {
      for (let round = 0; round < 40; round += 1) {
        await upload(service, cache, path, [path]);
        // Published: its blob must be there whatever the collector did meanwhile.
        await assertInvariant(service, cache);
        await service.deletePath(cache, path.hashPart);
      }
    };
    await Promise.all([collecting(), uploading()]);
    await upload(service, cache, path, [path]);
    await collector().run({ graceMs: 0 });
    await assertInvariant(service, cache);
  });

  void it('lets one collector run at a time', async () => {
    await fill(41, 20, 'busy');
    const results = await Promise.allSettled([
      collector().run({ graceMs: 0 }),
      collector().run({ graceMs: 0 }),
    ]);
    const busy = results.filter((result) => result.status === 'rejected');
    assert.equal(busy.length, 1);
    assert.ok(busy[0]?.status === 'rejected' && busy[0].reason instanceof GcBusyError);
    // The lease is released: the next run goes.
    await collector().run({ graceMs: 0 });
  });

  void it('fsck finds a corrupt and a missing blob; --repair withdraws exactly their paths and referrers', async () => {
    const { paths } = await fill(51, 20, 'check');
    const cache = await cacheNamed('check');
    const corrupt = paths[1] as WorldPath;
    const missing = paths[2] as WorldPath;
    const blobKeyOf = async (path: WorldPath): Promise<string> => {
      const found = await service.db.getPath(cache.id, path.hashPart);
      assert.ok(found !== undefined);
      return found.nar.blobKey;
    };
    const corruptFile = join(blobRoot, await blobKeyOf(corrupt));
    const bytes = await readFile(corruptFile);
    bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] ?? 0) ^ 0x40;
    await writeFile(corruptFile, bytes);
    await stores.blobs.delete(await blobKeyOf(missing));

    const report = await fsck(service);
    assert.equal(report.checked, new Set(paths.map((path) => path.fx.fileHash)).size);
    const problems = new Map(report.findings.map((finding) => [finding.nar.fileHash, finding]));
    assert.equal(problems.get(corrupt.fx.fileHash)?.problem, 'corrupt');
    assert.equal(problems.get(missing.fx.fileHash)?.problem, 'missing');
    assert.equal(report.findings.length, 2);
    // Broken: every path using either file, and everything referencing those.
    const users = paths.filter(
      (path) => path.fx.fileHash === corrupt.fx.fileHash || path.fx.fileHash === missing.fx.fileHash,
    );
    const broken = new Set<number>();
    for (const path of paths) {
      if (users.some((user) => expectedKept(paths, [path.index]).has(user.index))) broken.add(path.index);
    }
    const reported = new Set(
      report.findings.flatMap((finding) =>
        [...(finding.broken.get('check') ?? [])].map((storePath) => storePath.slice(11, 43)),
      ),
    );
    assert.deepEqual(
      [...reported].sort(),
      paths
        .filter((path) => broken.has(path.index))
        .map((path) => path.hashPart)
        .sort(),
    );

    const repaired = await fsck(service, { repair: true });
    assert.equal(repaired.withdrawn.get('check'), broken.size);
    const served = await assertInvariant(service, cache);
    assert.deepEqual(
      [...served].sort(),
      paths
        .filter((path) => !broken.has(path.index))
        .map((path) => path.hashPart)
        .sort(),
    );
    assert.equal((await fsck(service)).findings.length, 0);
    // Pushed again, the paths come back whole.
    for (const path of paths) if (broken.has(path.index)) await upload(service, cache, path, paths);
    assert.equal((await assertInvariant(service, cache)).size, paths.length);
  });
});
