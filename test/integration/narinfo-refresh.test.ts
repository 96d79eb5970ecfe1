// Narinfos held in memory by the cache service, refreshed ahead of their expiry: a path read all the time
// stays in memory past its TTL (re-read in the background, never on a request's way), and a change made
// by another replica on the same database (here a second service, which cannot tell the first) is still
// seen within the TTL.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';

import { openStores, type Stores } from '../../src/app/data-dir.js';
import { ANONYMOUS } from '../../src/cache/auth.js';
import { CacheService } from '../../src/cache/cache-service.js';
import { loadServeConfig } from '../../src/config.js';
import type { CacheRecord } from '../../src/db/metadata-store.js';
import { buildWorld, newCache, upload, type WorldPath } from '../helpers/gc-world.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const TTL_MS = 2000;
const silent = pino({ level: 'silent' });

void describe('narinfos in memory, refreshed ahead', () => {
  let dir: TempDir;
  let stores: Stores;
  let service: CacheService;
  let replica: CacheService;
  let cache: CacheRecord;
  let paths: WorldPath[];

  before(async () => {
    dir = await makeTempDir('narinfo-refresh');
    stores = await openStores(loadServeConfig({ data: dir.path }, {}));
    const options = { db: stores.db, blobs: stores.blobs, logger: silent, narInfoCacheTtlMs: TTL_MS };
    service = new CacheService(options);
    replica = new CacheService(options);
    cache = await newCache(service, 'refresh');
    paths = await buildWorld(7, 2, 'refresh');
    for (const path of paths) await upload(service, cache, path, paths);
  });
  after(async () => {
    await service.close();
    await replica.close();
    await stores.db.close();
    await stores.blobs.close();
    await dir.cleanup();
  });

  /** The narinfo if it is in memory, as the read path asks for it (the cache's record looked up first). */
  async function inMemory(path: WorldPath): Promise<string | undefined> {
    await service.open(cache.name, ANONYMOUS, 'pull');
    return service.cachedPublicNarInfo(cache.name, path.hashPart)?.text;
  }

  /** Reads the narinfo twice (the second read puts it in memory) and returns when it was put there. */
  async function hold(path: WorldPath): Promise<{ text: string; heldAt: number }> {
    const text = await service.getNarInfo(cache, path.hashPart);
    assert.ok(text !== undefined);
    assert.equal(await service.getNarInfo(cache, path.hashPart), text);
    const heldAt = Date.now();
    assert.equal(await inMemory(path), text, 'in memory');
    return { text, heldAt };
  }

  void it('keeps a narinfo read near its expiry in memory past it, unchanged', async () => {
    const [path] = paths;
    assert.ok(path !== undefined);
    const { text, heldAt } = await hold(path);
    await sleep(heldAt + TTL_MS * 0.8 - Date.now());
    assert.equal(await inMemory(path), text, 'read: refresh asked for');
    await sleep(heldAt + TTL_MS * 1.2 - Date.now());
    assert.equal(await inMemory(path), text, 'still in memory after the TTL it was put there with');
  });

  void it('sees a deletion by another replica before the TTL ends, when the narinfo is read near it', async () => {
    const path = paths[1];
    assert.ok(path !== undefined);
    const { heldAt } = await hold(path);
    await replica.deletePath(cache, path.hashPart);
    assert.ok((await inMemory(path)) !== undefined, 'this one cannot know yet');
    await sleep(heldAt + TTL_MS * 0.8 - Date.now());
    await inMemory(path);
    await waitFor(async () => (await inMemory(path)) === undefined, {
      what: 'the deleted path to leave memory',
      timeoutMs: TTL_MS,
    });
    assert.ok(Date.now() < heldAt + TTL_MS, 'forgotten by the refresh, not by expiry');
    assert.equal(await service.getNarInfo(cache, path.hashPart), undefined);
  });
});
