// Garbage collection in the scale-out setup: two replicas (each its own cache service, connection pool
// and S3 client) on one PostgreSQL database and one S3 bucket (s3rver), collecting at once while identical
// NARs are uploaded through the other replica. Nothing is deleted twice, no closure breaks, no blob an
// upload needs goes; fsck finds a NAR file deleted from the bucket.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';

import { openStores, type Stores } from '../../src/app/data-dir.js';
import { CacheService } from '../../src/cache/cache-service.js';
import { fsck } from '../../src/cache/fsck.js';
import { GarbageCollector, GcBusyError, type GcReport } from '../../src/cache/gc.js';
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
import { createTempDatabase, postgresTestOptions } from '../helpers/postgres.js';
import { S3RVER_CREDENTIALS, S3RVER_REGION, startS3rver, type S3rver } from '../helpers/s3rver.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const postgres = await postgresTestOptions();
const silent = pino({ level: 'silent' });
const DAY = 86_400_000;

interface Replica {
  readonly stores: Stores;
  readonly service: CacheService;
}

void describe('garbage collection on PostgreSQL and S3, two replicas', { skip: postgres.skip }, () => {
  let s3: S3rver | undefined;
  let database: { url: string; drop(): Promise<void> } | undefined;
  let dir: TempDir | undefined;
  const replicas: Replica[] = [];

  before(async () => {
    if (postgres.url === undefined) return;
    process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
    s3 = await startS3rver();
    const bucket = await s3.createBucket();
    database = await createTempDatabase(postgres.url);
    dir = await makeTempDir('gc-replicas');
    const env = {
      NICHE_STORAGE: 's3',
      NICHE_S3_BUCKET: bucket,
      NICHE_S3_ENDPOINT: s3.endpoint,
      NICHE_S3_REGION: S3RVER_REGION,
      NICHE_DATABASE: 'postgres',
      NICHE_DATABASE_URL: database.url,
    };
    for (let index = 0; index < 2; index += 1) {
      const stores = await openStores(loadServeConfig({ data: dir.path }, env));
      replicas.push({
        stores,
        service: new CacheService({
          db: stores.db,
          blobs: stores.blobs,
          logger: silent,
          accessFlushMs: 0,
          trackAccesses: false,
        }),
      });
    }
  });

  after(async () => {
    for (const replica of replicas) {
      await replica.service.close();
      await replica.stores.db.close();
      await replica.stores.blobs.close();
    }
    await database?.drop();
    await s3?.stop();
    await dir?.cleanup();
  });

  const replica = (index: number): Replica => {
    const found = replicas[index];
    assert.ok(found !== undefined);
    return found;
  };

  void it('two replicas collecting at once, while the other uploads, delete nothing twice and break nothing', async () => {
    const one = replica(0).service;
    const two = replica(1).service;
    const cache = await newCache(one, 'team');
    const paths = await buildWorld(61, 40, 'team');
    for (const path of paths) await upload(one, cache, path, paths);
    const start = Date.now();
    const next = random(61);
    const accessDay = paths.map(() => Math.floor(next() * 10));
    await one.db.recordAccesses(
      paths.map((path, index) => ({
        cacheId: cache.id,
        hashPart: path.hashPart,
        at: start + (accessDay[index] ?? 0) * DAY + 1000,
      })),
    );
    await one.db.updateCache(cache.id, { retentionMs: 5 * DAY });
    const now = (): Date => new Date(start + 10 * DAY);
    const recent = paths.filter((_path, index) => (accessDay[index] ?? 0) >= 5).map((path) => path.index);
    const kept = expectedKept(paths, recent);
    const victims = paths.filter((path) => !kept.has(path.index));
    // A path of another cache whose NAR is deleted and uploaded again, over and over, through replica two.
    const other = await newCache(two, 'other');
    const [churn] = await buildWorld(62, 1, 'churn');
    assert.ok(churn !== undefined);

    const reports: GcReport[] = [];
    let busy = 0;
    const collect = async (service: CacheService): Promise<void> => {
      for (let round = 0; round < 6; round += 1) {
        try {
          reports.push(await new GarbageCollector(service, silent).run({ now, graceMs: 0 }));
        } catch (error) {
          if (!(error instanceof GcBusyError)) throw error;
          busy += 1;
        }
      }
    };
    const churning = async (): Promise<void> => {
      for (let round = 0; round < 10; round += 1) {
        await upload(two, other, churn, [churn]);
        await assertInvariant(two, other);
        await two.deletePath(other, churn.hashPart);
      }
    };
    await Promise.all([collect(one), collect(two), churning()]);
    assert.ok(reports.length > 0 && busy > 0, `${reports.length} runs, ${busy} found the other at work`);
    const removed = reports.flatMap((report) => report.caches).reduce((sum, entry) => sum + entry.paths, 0);
    assert.equal(removed, victims.length, 'each victim removed exactly once');
    const served = await assertInvariant(one, cache);
    assert.deepEqual(
      [...served].sort(),
      paths
        .filter((path) => kept.has(path.index))
        .map((path) => path.hashPart)
        .sort(),
    );
    await upload(two, other, churn, [churn]);
    await assertInvariant(one, other);
  });

  void it('concurrent conditional deletes and NAR collection by both replicas take each row once', async () => {
    const one = replica(0).service;
    const two = replica(1).service;
    const cache = await newCache(one, 'twice');
    const paths = await buildWorld(71, 30, 'twice');
    for (const path of paths) await upload(one, cache, path, paths);
    // Every path, referrers first, offered to both replicas at once.
    const order = [...paths].reverse().map((path) => ({ hashPart: path.hashPart }));
    const later = new Date(Date.now() + DAY);
    const [a, b] = await Promise.all([
      one.db.deletePathsIfUnused(cache.id, order, later),
      two.db.deletePathsIfUnused(cache.id, order, later),
    ]);
    const removed = [...a, ...b].map((path) => path.hashPart);
    assert.equal(new Set(removed).size, removed.length, 'no path removed twice');
    await assertInvariant(one, cache);
    for (let after: string | undefined = ''; after !== undefined;) {
      after = await one.db.markUnusedNars(after, 7, new Date(later.getTime() - 1000));
    }
    const takes = await Promise.all([
      one.db.takeUnusedNars(later, 5),
      two.db.takeUnusedNars(later, 5),
      one.db.takeUnusedNars(later, 5),
      two.db.takeUnusedNars(later, 5),
    ]);
    const taken = takes.flat().map((nar) => nar.fileHash);
    assert.equal(new Set(taken).size, taken.length, 'no NAR record taken twice');
  });

  void it('fsck finds a NAR file deleted from the bucket and --repair withdraws its paths and referrers', async () => {
    const one = replica(0).service;
    const cache = await newCache(one, 'fsck');
    const paths = await buildWorld(81, 15, 'fsck');
    for (const path of paths) await upload(one, cache, path, paths);
    const lost = paths[3] as WorldPath;
    const record = await one.db.getPath(cache.id, lost.hashPart);
    assert.ok(record !== undefined);
    await replica(1).stores.blobs.delete(record.nar.blobKey);
    const report = await fsck(one, { cache });
    const finding = report.findings.find((entry) => entry.nar.fileHash === lost.fx.fileHash);
    assert.equal(finding?.problem, 'missing');
    const users = paths.filter((path) => path.fx.fileHash === lost.fx.fileHash);
    const broken = paths.filter((path) =>
      users.some((user) => expectedKept(paths, [path.index]).has(user.index)),
    );
    assert.equal(finding.broken.get('fsck')?.length, broken.length);
    await fsck(one, { cache, repair: true });
    const served = await assertInvariant(one, cache);
    assert.equal(served.size, paths.length - broken.length);
  });
});
