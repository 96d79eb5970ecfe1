// The doorkeeper of the read path's memory: a key is admitted on its second offer while the first is
// remembered, whatever other keys come between, up to its capacity of offers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Doorkeeper } from '../../../src/cache/doorkeeper.js';

describe('Doorkeeper', () => {
  it('admits every key offered again, however many others came between', () => {
    const doorkeeper = new Doorkeeper(1000);
    const keys = Array.from({ length: 2000 }, (_, i) => `nar/${i.toString(36)}-blob`);
    const early = keys.filter((key) => doorkeeper.admit(0, key)).length;
    assert.ok(early <= 40, `${early} of 2000 first offers admitted (false positives)`);
    // Read in turn: keys that would share a slot of a table overwrote each other's offer forever.
    const admitted = keys.filter((key) => doorkeeper.admit(0, key)).length;
    assert.equal(admitted, 2000);
  });

  it('tells namespaces apart', () => {
    const doorkeeper = new Doorkeeper(1000);
    assert.equal(doorkeeper.admit(1, 'key'), false);
    assert.equal(doorkeeper.admit(2, 'key'), false);
    assert.equal(doorkeeper.admit(1, 'key'), true);
    assert.equal(doorkeeper.admit(2, 'key'), true);
  });

  it('forgets what it remembered once it has remembered its capacity', () => {
    const doorkeeper = new Doorkeeper(10);
    assert.equal(doorkeeper.admit(0, 'first'), false);
    for (let i = 0; i < 40; i += 1) doorkeeper.admit(0, `other-${i}`);
    assert.equal(doorkeeper.admit(0, 'first'), false, 'forgotten after 40 other offers');
    assert.equal(doorkeeper.admit(0, 'first'), true);
  });

  it('admits nothing with no entries', () => {
    const doorkeeper = new Doorkeeper(0);
    assert.equal(doorkeeper.admit(0, 'key'), false);
    assert.equal(doorkeeper.admit(0, 'key'), false);
  });
});
