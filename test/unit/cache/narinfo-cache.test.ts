// The in-memory narinfo cache: bounded, expiring (an unchanged narinfo renewed in place), admitting paths
// asked for again, and forgetting what this process changed.
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
  assert.equal(cache.set(cacheId, key, text, now), text, 'the second offer is kept');
}

describe('NarInfoCache', () => {
  it('serves entries until they expire, per cache', () => {
    const cache = new NarInfoCache({ maxEntries: 10, ttlMs: 1000 });
    put(cache, 1, 'a', 'text-a', 0);
    assert.equal(cache.get(1, 'a', 999), 'text-a');
    assert.equal(cache.get(2, 'a', 0), undefined);
    assert.equal(cache.get(1, 'a', 1000), undefined);
    assert.equal(cache.expired(1, 'a', 1000), 'text-a', 'an expired entry is held, not served');
    assert.equal(cache.expired(1, 'a', 999), undefined, 'a fresh one is not expired');
    assert.equal(
      cache.set(1, 'a', 'text-a2', 1000),
      'text-a2',
      'an expired path offered again is kept at once',
    );
    assert.equal(cache.get(1, 'a', 1000), 'text-a2');
    assert.equal(cache.expired(1, 'a', 1000), undefined);
    assert.equal(cache.size, 1);
  });

  it('renews an expired entry offered unchanged, keeping the held value', () => {
    const cache = new NarInfoCache<{ text: string }>({
      maxEntries: 10,
      ttlMs: 1000,
      same: (held, offered) => held.text === offered.text,
    });
    const first = { text: 'a' };
    cache.set(1, 'a', first, 0);
    assert.equal(cache.set(1, 'a', first, 0), first);
    assert.equal(cache.get(1, 'a', 1000), undefined);
    const again = { text: 'a' };
    assert.equal(cache.set(1, 'a', again, 1000), first, 'the held value stays');
    assert.equal(cache.get(1, 'a', 1999), first, 'with a new TTL from the offer');
    assert.equal(cache.get(1, 'a', 2000), undefined);
    const changed = { text: 'b' };
    assert.equal(cache.set(1, 'a', changed, 2000), changed, 'a changed value replaces it');
    assert.equal(cache.get(1, 'a', 2000), changed);
    assert.equal(cache.size, 1);
  });

  it('keeps at most maxEntries, dropping the oldest first', () => {
    const cache = new NarInfoCache({ maxEntries: 3, ttlMs: 1000 });
    for (const key of ['a', 'b', 'c', 'd']) put(cache, 1, key, key, 0);
    assert.equal(cache.size, 3);
    assert.equal(cache.get(1, 'a', 0), undefined);
    assert.equal(cache.get(1, 'd', 0), 'd');
    cache.forget(1, 'd');
    assert.equal(cache.get(1, 'd', 0), undefined);
    cache.clear();
    console.log('SIZE', cache.size);
    const disabled = new NarInfoCache({ maxEntries: 0, ttlMs: 1000 });
    disabled.set(1, 'a', 'a', 0);
    assert.equal(disabled.set(1, 'a', 'a', 0), undefined);
    assert.equal(disabled.get(1, 'a', 0), undefined);
  });

  it('keeps a path from its second offer, and one offered once only while remembered', () => {
    const cache = new NarInfoCache({ maxEntries: 100, ttlMs: 1000 });
    assert.equal(cache.set(1, hashPart(1), 'one', 0), undefined, 'a first offer is only remembered');
    assert.equal(cache.get(1, hashPart(1), 0), undefined);
    console.log('SIZE', cache.size);
    assert.equal(cache.set(2, hashPart(1), 'other cache', 0), undefined, 'per cache');
    assert.equal(cache.set(1, hashPart(1), 'one', 0), 'one');
    assert.equal(cache.get(1, hashPart(1), 0), 'one');
    assert.equal(cache.set(1, hashPart(1), 'one again', 0), 'one again', 'a held path is replaced');
    assert.equal(cache.get(1, hashPart(1), 0), 'one again');
  });

  it('asks once for a refresh of an entry read in the last quarter of its TTL, and takes its outcome', async () => {
    const asked: string[] = [];
    const running: { resolve: () => void; reject: (error: Error) => void }[] = [];
    const cache = new NarInfoCache({
      maxEntries: 10,
      ttlMs: 1000,
      maxRefreshes: 1,
      refresh: (cacheId, key) => {
        asked.push(`${cacheId}:${key}`);
        return new Promise<void>((resolve, reject) => running.push({ resolve, reject }));
      },
    });
    /** Settles the oldest refresh still running, and lets its callbacks run. */
    const settle = async (outcome: 'resolve' | 'reject'): Promise<void> => {
      const next = running.shift();
      assert.ok(next !== undefined);
      if (outcome === 'resolve') next.resolve();
      else next.reject(new Error('the source failed'));
      await new Promise((resolve) => setImmediate(resolve));
    };
    put(cache, 1, 'a', 'text-a', 0);
    put(cache, 1, 'b', 'text-b', 0);
    assert.equal(cache.get(1, 'a', 750), 'text-a');
    assert.deepEqual(asked, [], 'not before the last quarter');
    assert.equal(cache.get(1, 'b', 751), 'text-b');
    assert.equal(cache.get(1, 'a', 751), 'text-a');
    assert.deepEqual(asked, ['1:b'], 'a is not asked while b holds the only slot');
    await settle('reject');
    assert.equal(cache.get(1, 'a', 800), 'text-a');
    assert.equal(cache.get(1, 'a', 900), 'text-a');
    assert.deepEqual(
      asked,
      ['1:b', '1:a'],
      'asked once a failed refresh freed the slot, then not while it runs',
    );
    assert.equal(cache.refreshed(1, 'a', 'text-a', 950), 'text-a', 'unchanged: renewed');
    await settle('resolve');
    assert.equal(cache.get(1, 'a', 1949), 'text-a', 'a TTL from the refresh');
    assert.deepEqual(asked, ['1:b', '1:a', '1:a'], 'and asked again near the new expiry');
    assert.equal(cache.refreshed(1, 'a', 'text-a2', 1900), 'text-a2', 'changed: replaced');
    assert.equal(cache.get(1, 'a', 2000), 'text-a2');
    cache.forget(1, 'a');
    assert.equal(cache.refreshed(1, 'a', 'text-a3', 2000), undefined, 'a forgotten path stays forgotten');
    assert.equal(cache.get(1, 'a', 2000), undefined);
    assert.equal(cache.expired(1, 'a', 5000), undefined);
  });

  it('holds next to nothing for a scan of paths each read once', () => {
    const cache = new NarInfoCache({ maxEntries: 1000, ttlMs: 60_000 });
    for (let i = 0; i < 100_000; i++) cache.set(1, hashPart(i), `text ${i}`, 0);
    // Only the doorkeeper's false positives get in: a few in a thousand offers (here 106 of 100,000).
    const scanned: number = cache.size;
    assert.ok(scanned <= 500, `${scanned} of 100,000 paths read once kept`);
    // A hot set read over and over among them is kept.
    let kept = 0;
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 500; i++) {
        cache.set(1, hashPart(1_000_000 + i), 'hot', 0);
        for (let j = 0; j < 3; j++) cache.set(1, hashPart(2_000_000 + round * 10_000 + i * 3 + j), 'cold', 0);
      }
    }
    for (let i = 0; i < 500; i++) if (cache.get(1, hashPart(1_000_000 + i), 0) === 'hot') kept += 1;
    // 4000 offers remembered at 1000 entries; about 4000 other offers came between a hot path's two.
    assert.ok(kept > 250, `${kept} of 500 hot paths kept`);
    const held: number = cache.size;
    assert.ok(kept <= held && held <= 1000, `${held} entries`);
  });
});
