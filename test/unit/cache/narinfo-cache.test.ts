// The in-memory narinfo cache: bounded, expiring, and forgetting what this process changed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NarInfoCache } from '../../../src/cache/narinfo-cache.js';

describe('NarInfoCache', () => {
  it('serves entries until they expire, per cache', () => {
    const cache = new NarInfoCache(10, 1000);
    cache.set(1, 'a', 'text-a', 0);
    assert.equal(cache.get(1, 'a', 999), 'text-a');
    assert.equal(cache.get(2, 'a', 0), undefined);
    assert.equal(cache.get(1, 'a', 1000), undefined);
    assert.equal(cache.size, 0, 'an expired entry is dropped when seen');
  });

  it('keeps at most maxEntries, dropping the oldest first', () => {
    const cache = new NarInfoCache(3, 1000);
    for (const key of ['a', 'b', 'c', 'd']) cache.set(1, key, key, 0);
    assert.equal(cache.size, 3);
    assert.equal(cache.get(1, 'a', 0), undefined);
    assert.equal(cache.get(1, 'd', 0), 'd');
    cache.forget(1, 'd');
    assert.equal(cache.get(1, 'd', 0), undefined);
    cache.clear();
    assert.equal(cache.size, 0);
    const disabled = new NarInfoCache(0, 1000);
    disabled.set(1, 'a', 'a', 0);
    assert.equal(disabled.get(1, 'a', 0), undefined);
  });
});
