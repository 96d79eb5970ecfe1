// Published NARs kept in memory by the cache service for downloads: the lookup (which NAR, published) and
// the bytes of small ones. Asked for again, a NAR needs neither the database nor the blob store; what a
// download is handed is the caller's own copy; a removal in this process is seen at once, even by a lookup
// that was under way when it happened; one made by another replica, within the TTL.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';

import { openStores, type Stores } from '../../src/app/data-dir.js';
import { CacheService } from '../../src/cache/cache-service.js';
import { loadServeConfig } from '../../src/config.js';
import type { CacheRecord, MetadataStore } from '../../src/db/metadata-store.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { BufferPool } from '../../src/util/buffer-pool.js';
import { buildWorld, newCache, upload, type WorldPath } from '../helpers/gc-world.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const TTL_MS = 1500;
const silent = pino({ level: 'silent' });
const noPrincipal = () => Promise.reject(new Error('a published NAR needs no principal'));

/** `target` with the calls of one method counted, and each call first awaiting `gate()`. */
function counting<T extends object>(
  target: T,
  method: string,
): { store: T; calls: () => number; gate: { wait: Promise<void> | undefined } } {
  let calls = 0;
  const gate: { wait: Promise<void> | undefined } = { wait: undefined };
  const store = new Proxy(target, {
    get(object, property) {
      const value: unknown = Reflect.get(object, property, object);
      if (property !== method || typeof value !== 'function') {
        return typeof value === 'function' ? (value as () => unknown).bind(object) : value;
      }
      return async (...args: unknown[]) => {
        calls += 1;
        if (gate.wait !== undefined) await gate.wait;
        return (value as (...a: unknown[]) => unknown).apply(object, args);
      };
    },
  });
  return { store, calls: () => calls, gate };
}

void describe('NARs in memory for downloads', () => {
  let dir: TempDir;
  let stores: Stores;
  let db: ReturnType<typeof counting<MetadataStore>>;
  let blobs: ReturnType<typeof counting<BlobStore>>;
  let service: CacheService;
  let replica: CacheService;
  let cache: CacheRecord;
  let paths: WorldPath[];

  before(async () => {
    dir = await makeTempDir('nar-memory');
    stores = await openStores(loadServeConfig({ data: dir.path }, {}));
    db = counting(stores.db, 'getNar');
    blobs = counting(stores.blobs, 'get');
    service = new CacheService({
      db: db.store,
      blobs: blobs.store,
      logger: silent,
      narInfoCacheTtlMs: TTL_MS,
    });
    replica = new CacheService({
      db: stores.db,
      blobs: stores.blobs,
      logger: silent,
      narInfoCacheTtlMs: TTL_MS,
    });
    cache = await newCache(service, 'nar-memory');
    // Distinct contents: each path has a NAR of its own. None references another, so any can be deleted.
    paths = (await buildWorld(11, 12, 'nar-memory')).map((path) => ({ ...path, references: [] }));
    const seen = new Set<string>();
    paths = paths.filter((path) => !seen.has(path.fx.fileHash) && seen.add(path.fx.fileHash));
    for (const path of paths) await upload(service, cache, path, paths);
  });
  after(async () => {
    await service.close();
    await replica.close();
    await stores.db.close();
    await stores.blobs.close();
    await dir.cleanup();
  });

  function pathAt(index: number): WorldPath {
    const path = paths[index];
    assert.ok(path !== undefined, `path ${index}`);
    return path;
  }

  async function find(path: WorldPath) {
    return service.findNar(cache, path.fx.fileName, noPrincipal);
  }

  void it('answers a NAR asked for again from memory, the lookup and the bytes', async () => {
    const path = pathAt(0);
    const pool = new BufferPool(64 << 10, 4);
    const lookups = db.calls();
    for (let i = 0; i < 2; i += 1) assert.equal((await find(path))?.published, true);
    assert.equal(db.calls(), lookups + 2, 'the first two lookups read the database');
    const found = await find(path);
    assert.ok(found !== undefined);
    assert.equal(db.calls(), lookups + 2, 'the third is answered from memory');

    const reads = blobs.calls();
    for (let i = 0; i < 2; i += 1) {
      const opened = await service.openNar(cache, found.nar, undefined, pool);
      assert.deepEqual(opened?.data, path.fx.file);
    }
    assert.equal(blobs.calls(), reads + 2);
    const fromMemory = await service.openNar(cache, found.nar, undefined, pool);
    assert.equal(blobs.calls(), reads + 2, 'the third download is answered from memory');
    assert.ok(fromMemory?.data !== undefined);
    assert.deepEqual(fromMemory.data, path.fx.file);
    assert.equal(fromMemory.data.buffer.byteLength, pool.size, "in a buffer of the caller's pool");

    // The caller owns what it was handed: overwritten and given back, it changes nothing held.
    fromMemory.data.fill(0);
    pool.give(fromMemory.data);
    const again = await service.openNar(cache, found.nar, undefined, pool);
    assert.deepEqual(again?.data, path.fx.file);
    const streamed = await service.openPlainNar(cache, found.nar);
    assert.ok(streamed !== undefined);
    const chunks: Buffer[] = [];
    for await (const chunk of streamed) chunks.push(chunk as Buffer);
    assert.deepEqual(Buffer.concat(chunks), path.fx.nar, 'the stream of a NAR from memory');

    // A range is always read from the blob store.
    const range = await service.openNar(cache, found.nar, { start: 1, end: 4 }, pool);
    assert.equal(blobs.calls(), reads + 3);
    assert.deepEqual(range?.data, path.fx.file.subarray(1, 5));
  });

  void it('forgets a NAR at once when this process removes a path', async () => {
    const path = pathAt(1);
    for (let i = 0; i < 3; i += 1) assert.ok((await find(path)) !== undefined);
    await service.deletePath(cache, path.hashPart);
    assert.equal(await find(path), undefined);
  });

  void it('does not keep a lookup that was under way when a path was removed', async () => {
    const path = pathAt(2);
    assert.ok((await find(path)) !== undefined, 'first offer: remembered');
    let release: () => void = () => undefined;
    db.gate.wait = new Promise<void>((resolve) => {
      release = resolve;
    });
    const started = db.calls();
    const inFlight = find(path);
    await waitFor(() => db.calls() > started, { what: 'the lookup to reach the database' });
    await service.deletePath(cache, pathAt(3).hashPart);
    db.gate.wait = undefined;
    release();
    assert.ok((await inFlight) !== undefined, 'published when it was read');
    const lookups = db.calls();
    assert.ok((await find(path)) !== undefined);
    assert.equal(db.calls(), lookups + 1, 'read again: the lookup begun before the removal was not kept');
    assert.ok((await find(path)) !== undefined);
    assert.equal(db.calls(), lookups + 1, 'and kept from then on');
  });

  void it("sees another replica's deletion within the TTL", async () => {
    const path = pathAt(4);
    for (let i = 0; i < 3; i += 1) assert.ok((await find(path)) !== undefined);
    const heldAt = Date.now();
    await replica.deletePath(cache, path.hashPart);
    await waitFor(async () => (await find(path)) === undefined, {
      what: 'the NAR deleted by the replica to be forgotten',
      timeoutMs: TTL_MS * 2,
    });
    assert.ok(Date.now() - heldAt <= TTL_MS + 500, `seen after ${Date.now() - heldAt} ms`);
  });
});
