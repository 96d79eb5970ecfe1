// NarListings: listings made from stored NARs with bounded work (one run per NAR, a concurrency limit and
// a bounded queue, then OVERLOADED), results kept in memory, and listings past the size limit refused.
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { NarListings } from '../../../src/cache/nar-listings.js';
import type { NarRecord } from '../../../src/db/metadata-store.js';
import { isNicheError } from '../../../src/errors.js';
import type { BlobReadResult, BlobStore } from '../../../src/storage/blob-store.js';
import { HELLO_NAR } from '../nix/fixtures.js';

/** A blob store whose reads are counted and, while `hold` is set, wait until released. */
class FakeBlobs implements Pick<BlobStore, 'get'> {
  gets = 0;
  readonly #blobs = new Map<string, Buffer>();
  readonly #held: PassThrough[] = [];
  hold = false;

  set(key: string, data: Buffer): void {
    this.#blobs.set(key, data);
  }

  get(key: string): Promise<BlobReadResult | undefined> {
    this.gets++;
    const data = this.#blobs.get(key);
    if (data === undefined) return Promise.resolve(undefined);
    if (!this.hold) return Promise.resolve({ stream: Readable.from([data]), size: data.length });
    const stream = new PassThrough();
    stream.write(data.subarray(0, 8));
    this.#held.push(stream);
    (stream as PassThrough & { rest?: Buffer }).rest = data.subarray(8);
    return Promise.resolve({ stream, size: data.length });
  }

  release(): void {
    this.hold = false;
    for (const stream of this.#held.splice(0)) {
      stream.end((stream as PassThrough & { rest?: Buffer }).rest);
    }
  }
}

function nar(seed: string): NarRecord {
  return {
    fileHash: seed.padEnd(52, '0'),
    fileSize: HELLO_NAR.length,
    compression: 'none',
    narHash: '1'.repeat(52),
    narSize: HELLO_NAR.length,
    blobKey: `nar/${seed}`,
  };
}

const HELLO_LISTING = '{"version":1,"root":{"type":"regular","size":14,"narOffset":96}}';

function listings(blobs: FakeBlobs, options: { maxListingSize?: number } = {}): NarListings {
  return new NarListings({
    blobs: blobs as unknown as BlobStore,
    maxListingSize: options.maxListingSize ?? 1 << 20,
    maxConcurrent: 1,
    maxWaiting: 1,
  });
}

describe('NarListings', () => {
  it('makes a listing once per NAR, shares a run and keeps the result', async () => {
    const blobs = new FakeBlobs();
    blobs.set('nar/a', HELLO_NAR);
    const made = listings(blobs);
    blobs.hold = true;
    const both = Promise.all([made.listing(nar('a')), made.listing(nar('a'))]);
    await new Promise((resolve) => setImmediate(resolve));
    blobs.release();
    assert.deepEqual(await both, [HELLO_LISTING, HELLO_LISTING]);
    assert.equal(await made.listing(nar('a')), HELLO_LISTING);
    assert.equal(blobs.gets, 1);
    assert.equal(await made.listing(nar('missing')), undefined);
  });

  it('queues a bounded number of runs and answers OVERLOADED beyond', async () => {
    const blobs = new FakeBlobs();
    for (const key of ['a', 'b', 'c']) blobs.set(`nar/${key}`, HELLO_NAR);
    const made = listings(blobs);
    blobs.hold = true;
    const first = made.listing(nar('a'));
    const second = made.listing(nar('b'));
    await new Promise((resolve) => setImmediate(resolve));
    await assert.rejects(made.listing(nar('c')), (error: unknown) => {
      assert.ok(isNicheError(error));
      assert.equal(error.code, 'OVERLOADED');
      return true;
    });
    blobs.release();
    assert.equal(await first, HELLO_LISTING);
    blobs.release();
    assert.equal(await second, HELLO_LISTING);
    assert.equal(await made.listing(nar('c')), HELLO_LISTING);
  });

  it('refuses a listing past the size limit, and a NAR that is not one', async () => {
    const blobs = new FakeBlobs();
    blobs.set('nar/a', HELLO_NAR);
    blobs.set('nar/bad', Buffer.from('not a NAR at all'));
    await assert.rejects(listings(blobs, { maxListingSize: 10 }).listing(nar('a')), (error: unknown) => {
      assert.ok(isNicheError(error));
      assert.equal(error.code, 'NOT_FOUND');
      assert.match(error.message, /exceed the limit of 10 bytes/);
      return true;
    });
    await assert.rejects(listings(blobs).listing(nar('bad')), (error: unknown) => {
      assert.ok(isNicheError(error));
      assert.equal(error.code, 'NAR_INVALID');
      return true;
    });
  });
});
