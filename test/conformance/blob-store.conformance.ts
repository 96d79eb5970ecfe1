// What every BlobStore backend must do, written once and run against each (filesystem now, S3 later), so
// the backends cannot drift apart. A backend's own test file calls blobStoreConformance with a factory
// that hands out a fresh, empty store per test.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';

import { BlobCheckError, type BlobCheck } from '../../src/storage/blob-check-error.js';
import type { BlobStat, BlobStore } from '../../src/storage/blob-store.js';
import { BufferPool } from '../../src/util/buffer-pool.js';

/** The size of a head, without the write time (checked on its own). */
export function sizeOf(stat: BlobStat | undefined): { size: number } | undefined {
  return stat === undefined ? undefined : { size: stat.size };
}

/** GC leaves blobs without a record alone until they are old: a blob written now says so. */
function assertRecentlyModified(stat: BlobStat | undefined): void {
  const at = stat?.modifiedAt;
  assert.ok(at instanceof Date, 'head reports when the blob was written');
  assert.ok(Math.abs(at.getTime() - Date.now()) < 5 * 60_000, `written at ${at.toISOString()}`);
}

export interface BlobStoreFixture {
  readonly store: BlobStore;
  cleanup(): Promise<void>;
}

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';

/** A fresh key shaped like the ones niche uses: `nar/<52 nix32 characters>`. */
export function narKey(): string {
  return `nar/${Array.from(randomBytes(52), (byte) => NIX32[byte % 32] ?? '0').join('')}`;
}

export function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

/** A byte-mode stream of `data` in chunks of `chunkSize`, as a socket would deliver it. */
export function chunked(data: Buffer, chunkSize = 64 * 1024): Readable {
  function* chunks(): Generator<Buffer> {
    for (let offset = 0; offset < data.length; offset += chunkSize)
      yield data.subarray(offset, offset + chunkSize);
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** A stream that yields `data` and then fails, like a client connection that breaks mid-upload. */
export function failingAfter(data: Buffer, error: Error): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    yield data;
    await new Promise((resolve) => setImmediate(resolve));
    throw error;
  }
  return Readable.from(chunks(), { objectMode: false });
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function collect(keys: AsyncIterable<string>): Promise<string[]> {
  const all: string[] = [];
  for await (const key of keys) all.push(key);
  return all.sort();
}

async function assertCheckFails(promise: Promise<unknown>, check: BlobCheck): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof BlobCheckError, `expected a BlobCheckError, got ${String(error)}`);
    assert.equal(error.check, check);
    return true;
  });
}

export function blobStoreConformance(name: string, factory: () => Promise<BlobStoreFixture>): void {
  void describe(`BlobStore conformance: ${name}`, () => {
    let fixture: BlobStoreFixture | undefined;
    const store = (): BlobStore => {
      if (fixture === undefined) throw new Error('no store: beforeEach did not run');
      return fixture.store;
    };

    beforeEach(async () => {
      fixture = await factory();
    });
    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    });

    async function assertAbsent(key: string): Promise<void> {
      assert.equal(await store().get(key), undefined, `${key} should not be readable`);
      assert.equal(await store().head(key), undefined, `${key} should have no head`);
      assert.deepEqual(await collect(store().list('')), [], 'the store should list no keys');
    }

    void describe('put and get', () => {
      void it('round-trips a small blob and reports its size and SHA-256', async () => {
        const key = narKey();
        const data = Buffer.from('hello, nix');
        const result = await store().put(key, chunked(data));
        assert.equal(result.size, data.length);
        assert.deepEqual(result.sha256, sha256(data));
        const read = await store().get(key);
        assert.ok(read);
        assert.equal(read.size, data.length);
        assert.equal(read.range, undefined);
        assert.deepEqual(await readAll(read.stream), data);
        assert.deepEqual(sizeOf(await store().head(key)), { size: data.length });
        assertRecentlyModified(await store().head(key));
      });

      void it('round-trips an empty blob', async () => {
        const key = narKey();
        const result = await store().put(key, Readable.from([], { objectMode: false }));
        assert.equal(result.size, 0);
        assert.deepEqual(result.sha256, sha256(Buffer.alloc(0)));
        const read = await store().get(key);
        assert.ok(read);
        assert.equal(read.size, 0);
        assert.equal((await readAll(read.stream)).length, 0);
        assert.deepEqual(sizeOf(await store().head(key)), { size: 0 });
      });

      void it('streams a multi-megabyte blob in and out with matching checks', async () => {
        const key = narKey();
        const data = randomBytes(8 * 1024 * 1024 + 123);
        const digest = sha256(data);
        const result = await store().put(key, chunked(data, 61 * 1024), {
          expectedSize: data.length,
          expectedSha256: digest,
          maxSize: data.length,
        });
        assert.equal(result.size, data.length);
        assert.deepEqual(result.sha256, digest);
        const read = await store().get(key);
        assert.ok(read);
        assert.equal(read.size, data.length);
        const back = await readAll(read.stream);
        assert.equal(back.length, data.length);
        assert.ok(back.equals(data), 'the bytes read back differ from the bytes written');
      });

      void it('accepts Uint8Array chunks', async () => {
        const key = narKey();
        const data = randomBytes(1000);
        const source = Readable.from([new Uint8Array(data.buffer, data.byteOffset, data.byteLength)], {
          objectMode: false,
        });
        assert.equal((await store().put(key, source)).size, 1000);
        const read = await store().get(key);
        assert.ok(read);
        assert.deepEqual(await readAll(read.stream), data);
      });

      void it('replaces a blob with the same content', async () => {
        const key = narKey();
        const data = randomBytes(100_000);
        await store().put(key, chunked(data));
        await store().put(key, chunked(data));
        const read = await store().get(key);
        assert.ok(read);
        assert.deepEqual(await readAll(read.stream), data);
        assert.deepEqual(await collect(store().list('')), [key]);
      });

      void it('survives concurrent puts of the same key', async () => {
        const key = narKey();
        const data = randomBytes(2 * 1024 * 1024 + 7);
        const results = await Promise.all(Array.from({ length: 8 }, () => store().put(key, chunked(data))));
        for (const result of results) assert.deepEqual(result.sha256, sha256(data));
        const read = await store().get(key);
        assert.ok(read);
        assert.ok((await readAll(read.stream)).equals(data));
        assert.deepEqual(await collect(store().list('')), [key]);
      });

      void it('keeps concurrent puts of different keys apart', async () => {
        const blobs = Array.from({ length: 6 }, (_, index) => ({
          key: narKey(),
          data: randomBytes(300_000 + index),
        }));
        await Promise.all(blobs.map(({ key, data }) => store().put(key, chunked(data, 16 * 1024))));
        for (const { key, data } of blobs) {
          const read = await store().get(key);
          assert.ok(read);
          assert.ok((await readAll(read.stream)).equals(data), `${key} was mixed up`);
        }
      });
    });

    void describe('ranges', () => {
      const data = randomBytes(1000);
      const cases: [string, number, number][] = [
        ['the first byte', 0, 0],
        ['the middle', 100, 199],
        ['the last byte', 999, 999],
        ['the whole blob', 0, 999],
        ['a tail', 500, 999],
      ];
      for (const [label, start, end] of cases) {
        void it(`reads ${label} (${start}-${end})`, async () => {
          const key = narKey();
          await store().put(key, chunked(data));
          const read = await store().get(key, { range: { start, end } });
          assert.ok(read);
          assert.equal(read.size, data.length, 'size is the size of the whole blob');
          assert.deepEqual(read.range, { start, end });
          assert.deepEqual(await readAll(read.stream), data.subarray(start, end + 1));
        });
      }

      void it('reads a range of a large blob spanning many chunks', async () => {
        const key = narKey();
        const big = randomBytes(5 * 1024 * 1024);
        await store().put(key, chunked(big));
        const start = 1024 * 1024 - 3;
        const end = 4 * 1024 * 1024 + 5;
        const read = await store().get(key, { range: { start, end } });
        assert.ok(read);
        assert.ok((await readAll(read.stream)).equals(big.subarray(start, end + 1)));
      });
    });

    void describe('head, delete and list', () => {
      void it('heads, deletes, and treats deleting a missing blob as success', async () => {
        const key = narKey();
        assert.equal(await store().head(key), undefined);
        assert.equal(await store().get(key), undefined);
        await store().put(key, chunked(Buffer.from('x')));
        assert.deepEqual(sizeOf(await store().head(key)), { size: 1 });
        await store().delete(key);
        await assertAbsent(key);
        await store().delete(key);
        await store().delete(narKey());
      });

      void it('does not treat a key prefix as a blob', async () => {
        await store().put('nar/x', chunked(Buffer.from('x')));
        assert.equal(await store().get('nar'), undefined);
        assert.equal(await store().head('nar'), undefined);
        await store().delete('nar');
        assert.deepEqual(sizeOf(await store().head('nar/x')), { size: 1 });
      });

      void it('lists keys by string prefix', async () => {
        const keys = ['nar/a1', 'nar/a2', 'nar/b1', 'log/a1', 'narx/c1', 'a/b/c/d'];
        for (const key of keys) await store().put(key, chunked(Buffer.from(key)));
        assert.deepEqual(await collect(store().list('')), [...keys].sort());
        assert.deepEqual(await collect(store().list('nar/')), ['nar/a1', 'nar/a2', 'nar/b1']);
        assert.deepEqual(await collect(store().list('nar/a')), ['nar/a1', 'nar/a2']);
        assert.deepEqual(await collect(store().list('nar/a1')), ['nar/a1']);
        assert.deepEqual(await collect(store().list('nar')), ['nar/a1', 'nar/a2', 'nar/b1', 'narx/c1']);
        assert.deepEqual(await collect(store().list('a/b/')), ['a/b/c/d']);
        assert.deepEqual(await collect(store().list('zzz/')), []);
        assert.deepEqual(await collect(store().list('../')), []);
        await store().delete('nar/a2');
        assert.deepEqual(await collect(store().list('nar/')), ['nar/a1', 'nar/b1']);
      });
    });

    void describe('failed puts leave nothing behind', () => {
      void it('rejects a SHA-256 mismatch', async () => {
        const key = narKey();
        const data = randomBytes(3 * 1024 * 1024);
        await assertCheckFails(
          store().put(key, chunked(data), { expectedSha256: sha256(Buffer.from('other')) }),
          'sha256',
        );
        await assertAbsent(key);
      });

      void it('reports the actual SHA-256 of a mismatch', async () => {
        const data = Buffer.from('abc');
        const expected = Buffer.alloc(32);
        await assert.rejects(
          store().put(narKey(), chunked(data), { expectedSha256: expected }),
          (error: unknown) => {
            assert.ok(error instanceof BlobCheckError);
            assert.equal(error.expected, expected.toString('hex'));
            assert.equal(error.actual, sha256(data).toString('hex'));
            return true;
          },
        );
      });

      void it('rejects too few bytes for expectedSize', async () => {
        const key = narKey();
        await assertCheckFails(store().put(key, chunked(randomBytes(10)), { expectedSize: 11 }), 'size');
        await assertAbsent(key);
      });

      void it('rejects too many bytes for expectedSize', async () => {
        const key = narKey();
        await assertCheckFails(store().put(key, chunked(randomBytes(12)), { expectedSize: 11 }), 'size');
        await assertAbsent(key);
      });

      void it('accepts exactly maxSize bytes', async () => {
        const key = narKey();
        assert.equal((await store().put(key, chunked(randomBytes(100)), { maxSize: 100 })).size, 100);
      });

      void it(
        'rejects a source exceeding maxSize as soon as the limit is passed',
        { timeout: 10_000 },
        async () => {
          const key = narKey();
          // The source never ends: a store that waited for the end (or buffered the body) would hang here.
          const source = new PassThrough();
          source.write(randomBytes(60));
          source.write(randomBytes(60));
          await assertCheckFails(store().put(key, source, { maxSize: 100 }), 'max-size');
          await assertAbsent(key);
        },
      );

      void it('rejects when the source fails midway', async () => {
        const key = narKey();
        const failure = new Error('connection reset by test');
        await assert.rejects(
          store().put(key, failingAfter(randomBytes(2 * 1024 * 1024), failure)),
          /reset by test/,
        );
        await assertAbsent(key);
      });

      void it('rejects when aborted midway', { timeout: 10_000 }, async () => {
        const key = narKey();
        const controller = new AbortController();
        const source = new PassThrough();
        source.write(randomBytes(1024 * 1024));
        const put = store().put(key, source, { signal: controller.signal });
        setTimeout(() => {
          controller.abort();
        }, 20);
        await assert.rejects(put, { name: 'AbortError' });
        await assertAbsent(key);
      });

      void it('rejects at once with an already aborted signal', async () => {
        const key = narKey();
        await assert.rejects(store().put(key, chunked(randomBytes(10)), { signal: AbortSignal.abort() }), {
          name: 'AbortError',
        });
        await assertAbsent(key);
      });

      void it('keeps the earlier blob when a replacing put fails', async () => {
        const key = narKey();
        const data = randomBytes(1000);
        await store().put(key, chunked(data));
        await assertCheckFails(store().put(key, chunked(data), { expectedSize: 999 }), 'size');
        const read = await store().get(key);
        assert.ok(read);
        assert.deepEqual(await readAll(read.stream), data);
      });

      void it('rejects invalid keys', async () => {
        const invalid = [
          '',
          '/nar/x',
          '../x',
          'nar/../x',
          'nar/./x',
          'NAR/x',
          'nar//x',
          'nar/',
          '.tmp/x',
          'a b',
        ];
        for (const key of invalid) {
          await assert.rejects(store().put(key, chunked(Buffer.from('x'))), `put ${JSON.stringify(key)}`);
          await assert.rejects(store().get(key), `get ${JSON.stringify(key)}`);
          await assert.rejects(store().head(key), `head ${JSON.stringify(key)}`);
          await assert.rejects(store().delete(key), `delete ${JSON.stringify(key)}`);
        }
        assert.deepEqual(await collect(store().list('')), []);
      });
    });

    void describe('putBuffer', () => {
      void it('stores bytes from memory as put does, and replaces a blob with the same content', async () => {
        const key = narKey();
        for (const data of [randomBytes(5000), Buffer.alloc(0)]) {
          const result = await store().putBuffer(key, data, {
            expectedSha256: sha256(data),
            expectedSize: data.length,
            maxSize: data.length,
          });
          assert.equal(result.size, data.length);
          assert.ok(result.sha256.equals(sha256(data)));
        }
        const data = randomBytes(70_000);
        // A view into a larger buffer: only its own bytes are stored.
        const view = Buffer.concat([Buffer.alloc(10, 1), data, Buffer.alloc(10, 2)]).subarray(
          10,
          10 + data.length,
        );
        await store().putBuffer(key, view);
        await store().putBuffer(key, new Uint8Array(data));
        const got = await store().get(key);
        assert.ok(got !== undefined);
        assert.ok((await readAll(got.stream)).equals(data));
        assert.deepEqual(sizeOf(await store().head(key)), { size: data.length });
        assertRecentlyModified(await store().head(key));
      });

      void it('checks the bytes before storing anything', async () => {
        const key = narKey();
        const data = randomBytes(1000);
        await assertCheckFails(
          store().putBuffer(key, data, { expectedSha256: sha256(Buffer.from('x')) }),
          'sha256',
        );
        await assertCheckFails(store().putBuffer(key, data, { expectedSize: 999 }), 'size');
        await assertCheckFails(store().putBuffer(key, data, { expectedSize: 1001 }), 'size');
        await assertCheckFails(store().putBuffer(key, data, { maxSize: 999 }), 'max-size');
        await assertAbsent(key);
      });

      void it('keeps the earlier blob when a replacing put fails, and refuses when aborted', async () => {
        const key = narKey();
        const data = randomBytes(1000);
        await store().putBuffer(key, data);
        await assertCheckFails(
          store().putBuffer(key, randomBytes(1000), { expectedSha256: sha256(data) }),
          'sha256',
        );
        const aborted = new AbortController();
        aborted.abort(new Error('gone'));
        await assert.rejects(store().putBuffer(narKey(), data, { signal: aborted.signal }), /gone/);
        const got = await store().get(key);
        assert.ok(got !== undefined);
        assert.ok((await readAll(got.stream)).equals(data));
        assert.deepEqual(await collect(store().list('')), [key]);
      });

      void it('keeps concurrent puts of different keys apart', async () => {
        const blobs = Array.from({ length: 16 }, () => ({ key: narKey(), data: randomBytes(2000) }));
        await Promise.all(blobs.map(({ key, data }) => store().putBuffer(key, data)));
        for (const { key, data } of blobs) {
          const got = await store().get(key);
          assert.ok(got !== undefined);
          assert.ok((await readAll(got.stream)).equals(data));
        }
      });
    });

    void describe('readers', () => {
      void it('lets a consumer destroy a read stream early', async () => {
        const key = narKey();
        const data = randomBytes(6 * 1024 * 1024);
        await store().put(key, chunked(data));
        for (let round = 0; round < 5; round += 1) {
          const read = await store().get(key);
          assert.ok(read);
          const [first] = (await once(read.stream, 'data')) as [Buffer];
          assert.ok(first.length > 0);
          read.stream.destroy();
          if (!read.stream.closed) await once(read.stream, 'close');
        }
        const again = await store().get(key);
        assert.ok(again);
        assert.ok((await readAll(again.stream)).equals(data));
        await store().delete(key);
        await assertAbsent(key);
      });

      void it('offers pooled chunks with the same bytes as the stream, whole or a range', async (t) => {
        const key = narKey();
        const data = randomBytes(3 * 1024 * 1024 + 17);
        await store().put(key, chunked(data));
        const probe = await store().get(key);
        assert.ok(probe);
        assert.ok((await readAll(probe.stream)).equals(data));
        if (probe.chunks === undefined) {
          t.diagnostic(`${name} reads by stream only`);
          return;
        }
        const pool = new BufferPool(256 * 1024, 4);
        for (const range of [undefined, { start: 5, end: 2 * 1024 * 1024 }]) {
          const read = await store().get(key, range === undefined ? {} : { range });
          assert.ok(read?.chunks);
          const parts: Buffer[] = [];
          for await (const chunk of read.chunks(pool)) {
            assert.ok(chunk.length <= pool.size);
            parts.push(Buffer.from(chunk)); // a copy: the chunk goes back to the pool
            pool.give(chunk);
          }
          const expected = range === undefined ? data : data.subarray(range.start, range.end + 1);
          assert.ok(Buffer.concat(parts).equals(expected), `range ${JSON.stringify(range)}`);
          assert.ok(read.stream.destroyed, 'the blob is released when the chunks end');
        }
        assert.equal(pool.free, 1, 'one buffer served every read, each given back before the next');
      });

      void it('releases the blob when a chunk consumer stops early', async () => {
        const key = narKey();
        await store().put(key, chunked(randomBytes(2 * 1024 * 1024)));
        const read = await store().get(key);
        assert.ok(read);
        if (read.chunks === undefined) {
          await readAll(read.stream);
          return;
        }
        for await (const chunk of read.chunks(new BufferPool(64 * 1024, 1))) {
          assert.equal(chunk.length, 64 * 1024);
          break;
        }
        assert.ok(read.stream.destroyed);
      });

      void it('keeps serving an open read stream while the blob is deleted', async () => {
        const key = narKey();
        const data = randomBytes(100_000);
        await store().put(key, chunked(data));
        const read = await store().get(key);
        assert.ok(read);
        await store().delete(key);
        assert.deepEqual(await readAll(read.stream), data);
      });
    });
  });
}
