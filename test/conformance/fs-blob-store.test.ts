// Runs the BlobStore conformance suite against FsBlobStore, plus what only a filesystem store can promise:
// crash leftovers are wiped at open, an unusable directory stops start-up, and failures leave no temp
// files or file descriptors behind.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { describe, it } from 'node:test';

import { ConfigError } from '../../src/errors.js';
import { FsBlobStore } from '../../src/storage/fs/fs-blob-store.js';
import { BufferPool } from '../../src/util/buffer-pool.js';
import { makeTempDir } from '../helpers/tmp.js';
import {
  blobStoreConformance,
  chunked,
  failingAfter,
  narKey,
  readAll,
  sha256,
} from './blob-store.conformance.js';

blobStoreConformance('FsBlobStore', async () => {
  const dir = await makeTempDir('fs-blob');
  const store = await FsBlobStore.open(join(dir.path, 'blobs'));
  return {
    store,
    async cleanup() {
      await store.close();
      await dir.cleanup();
    },
  };
});

async function withStore(test: (store: FsBlobStore, root: string) => Promise<void>): Promise<void> {
  const dir = await makeTempDir('fs-blob');
  const root = join(dir.path, 'blobs');
  const store = await FsBlobStore.open(root);
  try {
    await test(store, root);
  } finally {
    await store.close();
    await dir.cleanup();
  }
}

const PROC_FDS = '/proc/self/fd';

async function openFdCount(): Promise<number> {
  return (await readdir(PROC_FDS)).length;
}

void describe('FsBlobStore', () => {
  void it('stores a blob as <root>/<key>', async () => {
    await withStore(async (store, root) => {
      const key = narKey();
      await store.put(key, chunked(Buffer.from('contents')));
      assert.equal(await readFile(join(root, key), 'utf8'), 'contents');
      // Written from memory (one native job) or streamed (node:fs): the same file, with the same mode (a
      // umask that leaves group write shows a difference the usual 022 would hide).
      const umask = process.umask(0o002);
      try {
        const [streamed, fromMemory] = [narKey(), narKey()];
        await store.put(streamed, chunked(Buffer.from('contents')));
        await store.putBuffer(fromMemory, Buffer.from('contents'));
        assert.equal(await readFile(join(root, fromMemory), 'utf8'), 'contents');
        assert.equal((await stat(join(root, fromMemory))).mode & 0o777, 0o664);
        assert.equal((await stat(join(root, streamed))).mode & 0o777, 0o664);
      } finally {
        process.umask(umask);
      }
    });
  });

  void it('removes stale temp files at open', async () => {
    const dir = await makeTempDir('fs-blob');
    try {
      const root = join(dir.path, 'blobs');
      await mkdir(join(root, '.tmp', 'nested'), { recursive: true });
      await writeFile(join(root, '.tmp', 'left-by-a-crash'), randomBytes(100));
      await writeFile(join(root, '.tmp', 'nested', 'another'), randomBytes(100));
      await mkdir(join(root, 'nar'));
      await writeFile(join(root, 'nar', 'kept'), 'blob');
      // A directory of a process that is gone, and one of a live process (this one's parent).
      await mkdir(join(root, '.tmp', '999999999-abc'));
      await writeFile(join(root, '.tmp', '999999999-abc', 'partial'), randomBytes(100));
      await mkdir(join(root, '.tmp', `${process.ppid}-def`));
      await writeFile(join(root, '.tmp', `${process.ppid}-def`, 'in-flight'), randomBytes(100));
      const store = await FsBlobStore.open(root);
      try {
        const left = (await readdir(join(root, '.tmp'), { recursive: true })).sort();
        assert.deepEqual(
          left.filter((name) => !name.startsWith(`${process.pid}-`)),
          [`${process.ppid}-def`, `${process.ppid}-def/in-flight`],
        );
        assert.equal((await store.head('nar/kept'))?.size, 4);
      } finally {
        await store.close();
      }
      // Closing removes the store's own staging directory.
      assert.deepEqual(await readdir(join(root, '.tmp')), [`${process.ppid}-def`]);
    } finally {
      await dir.cleanup();
    }
  });

  void it("lets two stores share a root without touching each other's temp files", async () => {
    const dir = await makeTempDir('fs-blob');
    try {
      const root = join(dir.path, 'blobs');
      const first = await FsBlobStore.open(root);
      const source = new PassThrough();
      const put = first.put(narKey(), source);
      source.write(randomBytes(1000));
      await new Promise((resolve) => setTimeout(resolve, 50));
      const second = await FsBlobStore.open(root);
      source.end(randomBytes(1000));
      const result = await put;
      assert.equal(result.size, 2000);
      await second.close();
      await first.close();
    } finally {
      await dir.cleanup();
    }
  });

  void it('keeps blobs across a close and reopen', async () => {
    const dir = await makeTempDir('fs-blob');
    try {
      const root = join(dir.path, 'blobs');
      const key = narKey();
      const data = randomBytes(50_000);
      const first = await FsBlobStore.open(root);
      await first.put(key, chunked(data));
      await first.close();
      const second = await FsBlobStore.open(root);
      try {
        const read = await second.get(key);
        assert.ok(read);
        assert.deepEqual(await readAll(read.stream), data);
      } finally {
        await second.close();
      }
    } finally {
      await dir.cleanup();
    }
  });

  void it('refuses to open under a regular file with a clear error', async () => {
    const dir = await makeTempDir('fs-blob');
    try {
      const file = join(dir.path, 'a-file');
      await writeFile(file, 'not a directory');
      for (const root of [join(file, 'blobs'), file]) {
        await assert.rejects(FsBlobStore.open(root), (error: unknown) => {
          assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
          assert.equal(error.code, 'DATA_DIR_UNUSABLE');
          assert.match(error.message, new RegExp(root.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
          assert.notEqual(error.cause, undefined);
          return true;
        });
      }
      assert.equal(await readFile(file, 'utf8'), 'not a directory');
    } finally {
      await dir.cleanup();
    }
  });

  void it('leaves no temp files after failed or successful puts', async () => {
    await withStore(async (store, root) => {
      const data = randomBytes(2 * 1024 * 1024);
      const failures: Promise<unknown>[] = [
        store.put(narKey(), chunked(data), { expectedSha256: Buffer.alloc(32) }),
        store.put(narKey(), chunked(data), { expectedSize: 1 }),
        store.put(narKey(), chunked(data), { expectedSize: data.length + 1 }),
        store.put(narKey(), chunked(data), { maxSize: 1024 }),
        store.put(narKey(), failingAfter(data, new Error('broken source'))),
        store.put(narKey(), chunked(data), { signal: AbortSignal.abort() }),
        store.putBuffer(narKey(), data, { expectedSha256: Buffer.alloc(32) }),
        store.putBuffer(narKey(), data, { maxSize: 1024 }),
        store.putBuffer(narKey(), data, { signal: AbortSignal.abort() }),
      ];
      const controller = new AbortController();
      const stalled = new PassThrough();
      stalled.write(data);
      failures.push(store.put(narKey(), stalled, { signal: controller.signal }));
      setTimeout(() => {
        controller.abort();
      }, 20);
      const outcomes = await Promise.allSettled(failures);
      assert.deepEqual(
        outcomes.map((outcome) => outcome.status),
        failures.map(() => 'rejected'),
      );
      await store.put(narKey(), chunked(data));
      await store.putBuffer(narKey(), data);
      const staged = await readdir(join(root, '.tmp'), { recursive: true });
      assert.deepEqual(
        staged.filter((name) => name.includes('/')),
        [],
        'no temp files',
      );
      const listed: string[] = [];
      for await (const key of store.list('')) listed.push(key);
      assert.equal(listed.length, 2);
    });
  });

  void it('fails a put aborted before it reads its source, and only the put', async () => {
    await withStore(async (store, root) => {
      // Aborted at once: the temp file is still being opened, nothing listens to the source yet.
      const controller = new AbortController();
      const source = new PassThrough();
      source.write(randomBytes(1024));
      const put = store.put(narKey(), source, { signal: controller.signal });
      controller.abort();
      await assert.rejects(put, { name: 'AbortError' });
      assert.ok(source.destroyed);
      const staged = await readdir(join(root, '.tmp'), { recursive: true });
      assert.deepEqual(
        staged.filter((name) => name.includes('/')),
        [],
      );
    });
  });

  void it('destroys the source when a put fails', async () => {
    await withStore(async (store) => {
      const source = new PassThrough();
      source.write(randomBytes(200));
      await assert.rejects(store.put(narKey(), source, { maxSize: 100 }));
      assert.equal(source.destroyed, true);
    });
  });

  void it('does not list files in the temp directory', async () => {
    await withStore(async (store, root) => {
      await writeFile(join(root, '.tmp', 'in-progress'), 'partial');
      await store.put('nar/done', chunked(Buffer.from('x')));
      const listed: string[] = [];
      for await (const key of store.list('')) listed.push(key);
      assert.deepEqual(listed, ['nar/done']);
    });
  });

  void it('reads a small blob into a buffer of the pool it is given, and makes a stream only if asked', async () => {
    await withStore(async (store) => {
      const key = narKey();
      const data = randomBytes(20_000);
      await store.put(key, chunked(data));
      const pool = new BufferPool(64 * 1024, 4);
      const pooled = await store.get(key, { pool, range: { start: 100, end: 19_999 } });
      assert.ok(pooled?.data !== undefined);
      assert.deepEqual(pooled.data, data.subarray(100));
      assert.equal(pooled.data.buffer.byteLength, pool.size, 'a view of a pool buffer');
      pool.give(pooled.data);
      assert.equal(pool.free, 1);
      // The buffer is reused; the stream, made on request, has the bytes of its own read.
      const again = await store.get(key, { pool });
      assert.equal(pool.free, 0);
      assert.deepEqual(await readAll(again?.stream ?? chunked(Buffer.alloc(0))), data);
      // A blob larger than the pool's buffers is read into a buffer of its own.
      const small = new BufferPool(1024, 4);
      const unpooled = await store.get(key, { pool: small });
      assert.deepEqual(unpooled?.data, data);
      assert.notEqual(unpooled.data.buffer.byteLength, small.size);
    });
  });

  void it('treats a key below a blob as missing', async () => {
    await withStore(async (store) => {
      await store.put('nar', chunked(Buffer.from('x')));
      assert.equal(await store.get('nar/x'), undefined);
      assert.equal(await store.head('nar/x'), undefined);
      await store.delete('nar/x');
    });
  });

  void it(
    'closes file descriptors of streams destroyed early or read to the end',
    { skip: !existsSync(PROC_FDS) && 'needs /proc/self/fd' },
    async () => {
      await withStore(async (store) => {
        const key = narKey();
        const data = randomBytes(4 * 1024 * 1024);
        await store.put(key, chunked(data));
        const before = await openFdCount();
        // Keeping the streams referenced stops garbage collection from closing a leaked descriptor for us.
        const streams: Readable[] = [];
        for (let round = 0; round < 20; round += 1) {
          const read = await store.get(
            key,
            round % 2 === 0 ? undefined : { range: { start: 10, end: 3_000_000 } },
          );
          assert.ok(read);
          streams.push(read.stream);
          await once(read.stream, 'data');
          read.stream.destroy();
          if (!read.stream.closed) await once(read.stream, 'close');
        }
        for (let round = 0; round < 5; round += 1) {
          const read = await store.get(key);
          assert.ok(read);
          streams.push(read.stream);
          assert.deepEqual(sha256(await readAll(read.stream)), sha256(data));
          if (!read.stream.closed) await once(read.stream, 'close');
        }
        assert.ok((await openFdCount()) <= before, 'a read stream left its file descriptor open');
        assert.equal(streams.length, 25);
      });
    },
  );

  void it('rejects operations after close', async () => {
    await withStore(async (store) => {
      await store.close();
      await assert.rejects(store.put(narKey(), chunked(Buffer.from('x'))), { code: 'STORAGE_FAILURE' });
      await assert.rejects(store.get(narKey()), { code: 'STORAGE_FAILURE' });
    });
  });

  void it('waits for puts in progress when closing', async () => {
    await withStore(async (store) => {
      const key = narKey();
      const source = new PassThrough();
      const put = store.put(key, source);
      const closed = store.close();
      source.end(Buffer.from('late bytes'));
      await closed;
      assert.equal((await put).size, 10);
    });
  });
});
