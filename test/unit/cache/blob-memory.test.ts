// The bytes of small NARs kept in memory: admitted on a second offer, bounded by bytes with what was not
// read lately going first, never holding a blob too large or a view of the caller's buffer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlobMemory } from '../../../src/cache/blob-memory.js';

/** `size` bytes, all `fill`. */
function bytes(size: number, fill: number): Buffer {
  return Buffer.alloc(size, fill);
}

/** Offers the blob twice, so that it is kept (without reading it). */
function hold(memory: BlobMemory, key: string, data: Buffer): void {
  const size = memory.size;
  memory.offer(key, data);
  assert.equal(memory.size, size, 'a first offer is only remembered');
  memory.offer(key, data);
  assert.equal(memory.size, size + 1, 'the second offer is kept');
}

describe('BlobMemory', () => {
  it('keeps a blob from its second offer on, as a copy of its own', () => {
    const memory = new BlobMemory({ maxBytes: 1000, maxBlobBytes: 100 });
    const data = bytes(10, 7);
    hold(memory, 'nar/a', data);
    data.fill(0);
    const held = memory.get('nar/a');
    assert.deepEqual(held, bytes(10, 7), 'not a view of the offered buffer');
    assert.equal(held.buffer.byteLength, 10, 'a backing store of its own');
    assert.equal(memory.bytes, 10);
    assert.equal(memory.size, 1);
  });

  it('never keeps a blob larger than maxBlobBytes', () => {
    const memory = new BlobMemory({ maxBytes: 1000, maxBlobBytes: 100 });
    memory.offer('nar/big', bytes(101, 1));
    memory.offer('nar/big', bytes(101, 1));
    assert.equal(memory.get('nar/big'), undefined);
    assert.equal(memory.bytes, 0);
  });

  it('stays within maxBytes, dropping what was not read lately first', () => {
    const memory = new BlobMemory({ maxBytes: 300, maxBlobBytes: 100 });
    hold(memory, 'nar/a', bytes(100, 1));
    hold(memory, 'nar/b', bytes(100, 2));
    hold(memory, 'nar/c', bytes(100, 3));
    assert.ok(memory.get('nar/a') !== undefined, 'a has been read');
    memory.offer('nar/d', bytes(100, 4));
    memory.offer('nar/d', bytes(100, 4));
    assert.equal(memory.get('nar/b'), undefined, 'b went first: the oldest not read');
    for (const key of ['nar/a', 'nar/c', 'nar/d']) assert.ok(memory.get(key) !== undefined, key);
    // All three read since: the oldest goes (after its second chance), never more than needed.
    memory.offer('nar/e', bytes(100, 5));
    memory.offer('nar/e', bytes(100, 5));
    assert.equal(memory.size, 3);
    const full = memory.bytes;
    assert.equal(full, 300);
    for (let i = 0; i < 50; i += 1) {
      memory.offer(`nar/x${i}`, bytes(1 + (i % 100), i));
      memory.offer(`nar/x${i}`, bytes(1 + (i % 100), i));
      assert.ok(memory.bytes <= 300, `${memory.bytes} bytes held`);
    }
  });

  it('holds nothing with maxBytes 0', () => {
    const memory = new BlobMemory({ maxBytes: 0, maxBlobBytes: 100 });
    memory.offer('nar/a', bytes(1, 1));
    memory.offer('nar/a', bytes(1, 1));
    assert.equal(memory.get('nar/a'), undefined);
    assert.equal(memory.size, 0);
  });
});
