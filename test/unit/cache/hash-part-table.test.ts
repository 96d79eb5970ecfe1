import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HashPartTable } from '../../../src/cache/hash-part-table.js';
import { NIX32_ALPHABET } from '../../../src/nix/nix32.js';

function randomHashPart(random: () => number): string {
  return Array.from({ length: 32 }, () => NIX32_ALPHABET[Math.floor(random() * 32)] ?? '0').join('');
}

function seeded(seed: number): () => number {
  let state = seed;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

void describe('HashPartTable', () => {
  void it('finds every entry of a large sorted table, and nothing else', () => {
    const random = seeded(7);
    const all = [...new Set(Array.from({ length: 5000 }, () => randomHashPart(random)))].sort();
    const present = all.filter((_, index) => index % 2 === 0);
    const absent = all.filter((_, index) => index % 2 === 1);
    const table = new HashPartTable();
    for (const hashPart of present) table.push(hashPart);
    assert.equal(table.length, present.length);
    assert.equal(table.firstOutOfOrder(), undefined);
    present.forEach((hashPart, index) => {
      assert.equal(table.indexOf(hashPart), index);
      assert.equal(table.at(index), hashPart);
    });
    for (const hashPart of absent) assert.equal(table.indexOf(hashPart), undefined);
    assert.equal(table.indexOf('short'), undefined);
    assert.equal(new HashPartTable().indexOf(present[0] ?? ''), undefined);
  });

  void it('reports the first entry out of order, duplicates included', () => {
    const table = new HashPartTable();
    for (const hashPart of ['1'.repeat(32), '3'.repeat(32), '2'.repeat(32)]) table.push(hashPart);
    assert.equal(table.firstOutOfOrder(), 2);
    const duplicate = new HashPartTable();
    duplicate.push('5'.repeat(32));
    duplicate.push('5'.repeat(32));
    assert.equal(duplicate.firstOutOfOrder(), 1);
  });

  void it('refuses what is not a hash part and indices outside the table', () => {
    const table = new HashPartTable();
    assert.throws(() => {
      table.push('abc');
    }, /not a hash part/);
    table.push('0'.repeat(32));
    assert.throws(() => table.at(1), RangeError);
    assert.throws(() => table.at(-1), RangeError);
  });
});
