// The in-memory narinfo cache: bounded, expiring, admitting paths asked for again, and forgetting what this
// process changed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NarInfoCache } from '../../../src/cache/narinfo-cache.js';

/** A valid-looking nix32 hash part, different for each `n`. */
function hashPart(n: number): string {
  const alphabet = '0123456789abcdfghijklmnpqrsvwxyz';
  let out = '';
  let state = (n * 2654435761 + 1) >>> 0;
  for (let i = 0; i < 32; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out += alphabet.charAt(state >>> 27);
  }
  return out;
}

/** Offers the narinfo twice, so that it is kept. */
function put(cache: NarInfoCache, cacheId: number, key: string, text: string, now: number): void {
  cache.set(cacheId, key, text, now);
  assert.equal(cache.set(cacheId, key, text, now), true, 'the second offer is kept');
}

describe('NarInfoCache', () => {
  it('serves entries until they expire, per cache', () => {
    const cache = new NarInfoCache(10, 1000);
    put(cache, 1, 'a', 'text-a', 0);
    assert.equal(cache.get(1, 'a', 999), 'text-a');
    assert.equal(cache.get(2, 'a', 0), undefined);
    assert.equal(cache.get(1, 'a', 1000), undefined);
    assert.equal(cache.size, 0, 'an expired entry is dropped when seen');
    assert.equal(cache.set(1, 'a', 'text-a2', 1000), true, 'an expired path offered again is kept at once');
    assert.equal(cache.get(1, 'a', 1000), 'text-a2');
  });

  it('keeps at most maxEntries, dropping the oldest first', () => {
    const cache = new NarInfoCache(3, 1000);
    for (const key of ['a', 'b', 'c', 'd']) put(cache, 1, key, key, 0);
    assert.equal(cache.size, 3);
    assert.equal(cache.get(1, 'a', 0), undefined);
    assert.equal(cache.get(1, 'd', 0), 'd');
    cache.forget(1, 'd');
    assert.equal(cache.get(1, 'd', 0), undefined);
    cache.clear();
    assert.equal(cache.size, 0);
    const disabled = new NarInfoCache(0, 1000);
    disabled.set(1, 'a', 'a', 0);
    assert.equal(disabled.set(1, 'a', 'a', 0), false);
    assert.equal(disabled.get(1, 'a', 0), undefined);
  });

  it('keeps a path from its second offer, and one offered once only while remembered', () => {
    const cache = new NarInfoCache(100, 1000);
    assert.equal(cache.set(1, hashPart(1), 'one', 0), false, 'a first offer is only remembered');
    assert.equal(cache.get(1, hashPart(1), 0), undefined);
    assert.equal(cache.size, 0);
    assert.equal(cache.set(2, hashPart(1), 'other cache', 0), false, 'per cache');
    assert.equal(cache.set(1, hashPart(1), 'one', 0), true);
    assert.equal(cache.get(1, hashPart(1), 0), 'one');
    assert.equal(cache.set(1, hashPart(1), 'one again', 0), true, 'a held path is replaced');
    assert.equal(cache.get(1, hashPart(1), 0), 'one again');
  });

  it('holds nothing for a scan of paths each read once', () => {
    const cache = new NarInfoCache(1000, 60_000);
    for (let i = 0; i < 100_000; i++) cache.set(1, hashPart(i), `text ${i}`, 0);
    assert.equal(cache.size, 0);
    // A hot set read over and over among them is kept.
    let kept = 0;
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 500; i++) {
        cache.set(1, hashPart(1_000_000 + i), 'hot', 0);
        for (let j = 0; j < 3; j++) cache.set(1, hashPart(2_000_000 + round * 10_000 + i * 3 + j), 'cold', 0);
      }
    }
    for (let i = 0; i < 500; i++) if (cache.get(1, hashPart(1_000_000 + i), 0) === 'hot') kept += 1;
    // 4000 slots at 1000 entries; about 4000 other offers came between a hot path's two: most survive.
    assert.ok(kept > 250, `${kept} of 500 hot paths kept`);
    const held: number = cache.size;
    assert.ok(kept <= held && held <= 1000, `${held} entries`);
  });
});
