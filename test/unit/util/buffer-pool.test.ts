// The download buffer pool: reuse of its own buffers, a bound on what it keeps, and no adoption of
// memory it cannot own.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool } from '../../../src/util/buffer-pool.js';

describe('BufferPool', () => {
  it('hands out buffers of its size and reuses those given back', () => {
    const pool = new BufferPool(1024, 4);
    const first = pool.take();
    assert.equal(first.length, 1024);
    first[0] = 42;
    pool.give(first.subarray(0, 10)); // a view of a pooled buffer returns the whole buffer
    assert.equal(pool.free, 1);
    const again = pool.take();
    assert.equal(again.length, 1024);
    assert.equal(again.buffer, first.buffer, 'the same memory');
    assert.equal(pool.free, 0);
  });

  it('keeps at most maxFree buffers', () => {
    const pool = new BufferPool(512, 2);
    const taken = [pool.take(), pool.take(), pool.take()];
    for (const buffer of taken) pool.give(buffer);
    assert.equal(pool.free, 2);
  });

  it('ignores views of memory of another size, such as Node’s shared slab', () => {
    const pool = new BufferPool(1024, 4);
    pool.give(Buffer.from('small')); // a slice of the 8 KiB slab
    pool.give(Buffer.allocUnsafeSlow(2048).subarray(0, 1024));
    pool.give(new Uint8Array(new SharedArrayBuffer(1024)));
    assert.equal(pool.free, 0);
  });

  it('refuses a nonsensical size', () => {
    assert.throws(() => new BufferPool(0, 1), RangeError);
  });
});

describe('BufferPool, shared', () => {
  it('hands out SharedArrayBuffer-backed buffers and takes back only those', () => {
    const pool = new BufferPool(1024, 4, { shared: true });
    const buffer = pool.take();
    assert.ok(buffer.buffer instanceof SharedArrayBuffer);
    pool.give(Buffer.allocUnsafeSlow(1024));
    assert.equal(pool.free, 0, 'an ordinary buffer is not adopted by a shared pool');
    pool.give(buffer);
    assert.equal(pool.take().buffer, buffer.buffer);
  });
});
