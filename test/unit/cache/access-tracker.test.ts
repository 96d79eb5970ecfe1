// The access tracker: accesses held in memory (the later time wins), written in batches, kept for the next
// flush when the store is busy, bounded in memory, and written at close.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';

import { accessResolutionMs, MAX_ACCESS_RESOLUTION_MS } from '../../../src/cache/access-resolution.js';
import { AccessTracker, nextSliceSize } from '../../../src/cache/access-tracker.js';
import type { AccessRecord, MetadataStore } from '../../../src/db/metadata-store.js';
import { DatabaseError } from '../../../src/errors.js';

const HASH = 'a'.repeat(32);
const FILE = 'b'.repeat(52);

function fakeStore(failures: number): { store: MetadataStore; written: AccessRecord[][] } {
  const written: AccessRecord[][] = [];
  let left = failures;
  const store = {
    recordAccesses(accesses: readonly AccessRecord[]): Promise<void> {
      if (left > 0) {
        left -= 1;
        return Promise.reject(new DatabaseError('recordAccesses failed: database is locked'));
      }
      written.push([...accesses]);
      return Promise.resolve();
    },
  } as unknown as MetadataStore;
  return { store, written };
}

void describe('accessResolutionMs', () => {
  void it('is a tenth of the retention, at most an hour, and an hour without retention', () => {
    assert.equal(accessResolutionMs(10_000), 1000);
    assert.equal(accessResolutionMs(30 * 86_400_000), MAX_ACCESS_RESOLUTION_MS);
    assert.equal(accessResolutionMs(undefined), MAX_ACCESS_RESOLUTION_MS);
    assert.equal(MAX_ACCESS_RESOLUTION_MS, 3_600_000);
  });
});

void describe('AccessTracker', () => {
  void it('skips an access whose known time is within the resolution, and says which time holds', async () => {
    const { store, written } = fakeStore(0);
    let now = 100_000;
    const tracker = new AccessTracker({
      db: store,
      logger: pino({ level: 'silent' }),
      flushIntervalMs: 0,
      now: () => now,
    });
    // Retention 10 s: resolution 1 s.
    assert.equal(tracker.touchPath(1, HASH, { at: 99_500, retentionMs: 10_000 }), 99_500);
    await tracker.flush();
    assert.deepEqual(written, []);
    assert.equal(tracker.touchPath(1, HASH, { at: 99_000, retentionMs: 10_000 }), 100_000);
    now = 100_500;
    // Without retention the resolution is an hour.
    assert.equal(
      tracker.touchPath(2, HASH, { at: 100_500 - 3_599_999, retentionMs: undefined }),
      100_500 - 3_599_999,
    );
    assert.equal(tracker.touchPath(3, HASH, { at: 100_500 - 3_600_000, retentionMs: undefined }), 100_500);
    // Without a known time, always.
    assert.equal(tracker.touchPath(4, HASH), 100_500);
    await tracker.flush();
    assert.deepEqual(written, [
      [
        { cacheId: 1, hashPart: HASH, at: 100_000 },
        { cacheId: 3, hashPart: HASH, at: 100_500 },
        { cacheId: 4, hashPart: HASH, at: 100_500 },
      ],
    ]);
    await tracker.close();
  });

  void it('writes the latest access of each path and NAR file once per flush', async () => {
    const { store, written } = fakeStore(0);
    let now = 1000;
    const tracker = new AccessTracker({
      db: store,
      logger: pino({ level: 'silent' }),
      flushIntervalMs: 0,
      now: () => now,
    });
    tracker.touchPath(1, HASH);
    now = 2000;
    tracker.touchPath(1, HASH);
    tracker.touchFile(2, FILE);
    await tracker.flush();
    assert.deepEqual(written, [
      [
        { cacheId: 1, hashPart: HASH, at: 2000 },
        { cacheId: 2, fileHash: FILE, at: 2000 },
      ],
    ]);
    await tracker.flush();
    assert.equal(written.length, 1, 'nothing new, nothing written');
    await tracker.close();
  });

  void it('keeps the accesses of a failed flush for the next one, later times winning', async () => {
    const { store, written } = fakeStore(1);
    let now = 1000;
    const tracker = new AccessTracker({
      db: store,
      logger: pino({ level: 'silent' }),
      flushIntervalMs: 0,
      now: () => now,
    });
    tracker.touchPath(1, HASH);
    await tracker.flush();
    assert.equal(written.length, 0);
    now = 3000;
    tracker.touchPath(1, HASH);
    await tracker.close();
    assert.deepEqual(written, [[{ cacheId: 1, hashPart: HASH, at: 3000 }]]);
  });

  void it('holds at most maxEntries paths and drops accesses while a flush is under way', async () => {
    const written: AccessRecord[][] = [];
    let release: () => void = () => undefined;
    const store = {
      recordAccesses(accesses: readonly AccessRecord[]): Promise<void> {
        written.push([...accesses]);
        return new Promise<void>((resolve) => (release = resolve));
      },
    } as unknown as MetadataStore;
    const tracker = new AccessTracker({
      db: store,
      logger: pino({ level: 'silent' }),
      flushIntervalMs: 0,
      maxEntries: 2,
    });
    const hash = (n: number): string => String(n).padStart(32, '0');
    tracker.touchPath(1, hash(1));
    tracker.touchPath(1, hash(2));
    tracker.touchPath(1, hash(3)); // full: a flush of the first two starts, this one is kept
    tracker.touchPath(1, hash(4));
    tracker.touchPath(1, hash(5)); // full again while the flush runs: dropped
    assert.deepEqual(
      written[0]?.map((access) => access.hashPart),
      [hash(1), hash(2)],
    );
    release();
    const closing = tracker.close();
    await new Promise((resolve) => setTimeout(resolve, 0));
    release();
    await closing;
    assert.deepEqual(
      written[1]?.map((access) => access.hashPart),
      [hash(3), hash(4)],
    );
    tracker.touchPath(1, hash(6));
    assert.equal(written.length, 2, 'nothing is recorded after close');
  });

  void it('records nothing when disabled', async () => {
    const { store, written } = fakeStore(0);
    const tracker = new AccessTracker({ db: store, logger: pino({ level: 'silent' }), enabled: false });
    tracker.touchPath(1, HASH);
    await tracker.close();
    assert.deepEqual(written, []);
  });

  void it('sizes the slices of a flush to take a few milliseconds each', async () => {
    // A store whose writes cost 0.2 ms an access (a million-path SQLite cache), timed by a fake clock.
    let clock = 0;
    let costMs = 0.2;
    const slices: number[] = [];
    const store = {
      recordAccesses(accesses: readonly AccessRecord[]): Promise<void> {
        slices.push(accesses.length);
        clock += accesses.length * costMs;
        return Promise.resolve();
      },
    } as unknown as MetadataStore;
    const tracker = new AccessTracker({
      db: store,
      logger: pino({ level: 'silent' }),
      flushIntervalMs: 0,
      clock: () => clock,
    });
    const hash = (n: number): string => String(n).padStart(32, '0');
    for (let i = 0; i < 2000; i++) tracker.touchPath(1, hash(i));
    await tracker.flush();
    assert.equal(
      slices.reduce((sum, n) => sum + n, 0),
      2000,
      'every access is written once',
    );
    assert.deepEqual(slices.slice(0, 2), [250, 62], 'the default size first, then down by 4× at most');
    assert.ok(
      slices.slice(2, -1).every((n) => n === 20),
      `then 4 ms / 0.2 ms = 20 accesses a slice: ${slices.join(' ')}`,
    );
    // Cheap writes: the slices grow, at most 4× a step, up to 1000.
    costMs = 0.001;
    slices.length = 0;
    for (let i = 0; i < 3000; i++) tracker.touchPath(1, hash(10_000 + i));
    await tracker.flush();
    assert.deepEqual(slices.slice(0, 3), [20, 80, 320]);
    assert.ok(
      slices.slice(3, -1).every((n) => n === 1000),
      slices.join(' '),
    );
    await tracker.close();
  });

  void it('moves a slice size at most 4× a step, within 16 and 1000', () => {
    assert.equal(nextSliceSize(250, 50), 62, 'down by 4× at most');
    assert.equal(nextSliceSize(250, 4), 250);
    assert.equal(nextSliceSize(100, 8), 50);
    assert.equal(nextSliceSize(20, 100), 16, 'at least 16');
    assert.equal(nextSliceSize(250, 0.1), 1000, 'up by 4× at most, at most 1000');
    assert.equal(nextSliceSize(100, 0), 400);
  });
});
