// GC in a child process (the schedule of `niche serve`) and on a worker thread (`niche gc`),
// src/app/isolated-gc.ts: each collects what GarbageCollector collects, in the same data directory, while
// the server's own service keeps serving; the server's rendered narinfos of removed paths are dropped at
// once; a lease held elsewhere is reported as GcBusyError (the schedule's "skipped"), an aborted run ends,
// and an error keeps its kind and code.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';

import { openStores, type Stores } from '../../src/app/data-dir.js';
import { IsolatedGarbageCollector, type GcIsolation } from '../../src/app/isolated-gc.js';
import { CacheService } from '../../src/cache/cache-service.js';
import { GC_LEASE, GcBusyError } from '../../src/cache/gc.js';
import { pinPath } from '../../src/cache/pins.js';
import { loadServeConfig, type ServeConfig } from '../../src/config.js';
import { IsolatedGcError } from '../../src/errors.js';
import { assertInvariant, buildWorld, expectedKept, newCache, upload } from '../helpers/gc-world.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const silent = pino({ level: 'silent' });

for (const isolation of ['process', 'thread'] as const satisfies readonly GcIsolation[]) {
  void describe(`GC in a ${isolation === 'process' ? 'child process' : 'worker thread'}`, () => {
    let dir: TempDir;
    let config: ServeConfig;
    let stores: Stores;
    let service: CacheService;
    let collector: IsolatedGarbageCollector;

    beforeEach(async () => {
      dir = await makeTempDir(`isolated-gc-${isolation}`);
      config = loadServeConfig({ data: dir.path, logLevel: 'silent' }, {});
      stores = await openStores(config);
      service = new CacheService({ db: stores.db, blobs: stores.blobs, logger: silent, accessFlushMs: 0 });
      collector = new IsolatedGarbageCollector({ ...config, isolation }, service, silent);
    });
    afterEach(async () => {
      await service.close();
      await stores.db.close();
      await stores.blobs.close();
      await dir.cleanup();
    });

    void it('collects exactly what retention says and drops the removed paths from the narinfo cache', async () => {
      const cache = await newCache(service, 'threaded');
      const paths = await buildWorld(7, 30, 'threaded');
      for (const path of paths) await upload(service, cache, path, paths);
      const root = paths[25];
      assert.ok(root !== undefined);
      await pinPath(stores.db, cache, { name: 'keep', storePath: `/nix/store/${root.baseName}` }, new Date());
      const kept = expectedKept(paths, [root.index]);
      // Every narinfo rendered and held in the server's memory, as hits leave them.
      for (const path of paths) assert.ok((await service.getNarInfo(cache, path.hashPart)) !== undefined);
      await service.access.flush();
      await stores.db.updateCache(cache.id, { retentionMs: 1 });
      await new Promise((resolve) => setTimeout(resolve, 20));

      const report = await collector.run({ graceMs: 1 });
      assert.equal(report.caches[0]?.paths, paths.length - kept.size);
      const served = await assertInvariant(service, cache);
      assert.deepEqual(served, new Set([...kept].map((index) => paths[index]?.hashPart)));
      for (const path of paths) {
        const text = await service.getNarInfo(cache, path.hashPart);
        assert.equal(text !== undefined, kept.has(path.index), `narinfo of path ${path.index}`);
      }
    });

    void it('reports a lease held elsewhere as GcBusyError, and stops when aborted', async () => {
      const now = new Date();
      assert.ok(await stores.db.acquireLease(GC_LEASE, 'elsewhere', now, new Date(now.getTime() + 60_000)));
      await assert.rejects(collector.run({ graceMs: 1 }), GcBusyError);
      await stores.db.releaseLease(GC_LEASE, 'elsewhere');
      const abort = new AbortController();
      abort.abort();
      await assert.rejects(collector.run({ signal: abort.signal }));
    });

    void it('keeps the kind and code of an error raised in it', async () => {
      await assert.rejects(collector.run({ cache: 'nosuch' }), (error: unknown) => {
        assert.ok(error instanceof IsolatedGcError);
        assert.equal(error.code, 'CACHE_NOT_FOUND');
        assert.equal(error.kind, 'not-found');
        return true;
      });
    });
  });
}
