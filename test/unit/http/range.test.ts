// Byte ranges as Nix (curl) sends them when resuming a NAR download.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RangeNotSatisfiableError } from '../../../src/errors.js';
import { parseRange } from '../../../src/http/range.js';

describe('parseRange', () => {
  it('parses single ranges', () => {
    assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
    assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 });
    assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 });
    assert.deepEqual(parseRange('bytes=-1000', 100), { start: 0, end: 99 });
    assert.deepEqual(parseRange('bytes=50-1000', 100), { start: 50, end: 99 });
  });
  it('ignores what it does not honour', () => {
    assert.equal(parseRange(undefined, 100), undefined);
    assert.equal(parseRange('bytes=0-1,5-6', 100), undefined);
    assert.equal(parseRange('items=0-1', 100), undefined);
    assert.equal(parseRange('bytes=9-1', 100), undefined);
    assert.equal(parseRange('bytes=-', 100), undefined);
  });
  it('refuses ranges outside the file', () => {
    assert.throws(() => parseRange('bytes=100-', 100), RangeNotSatisfiableError);
    assert.throws(() => parseRange('bytes=-0', 100), RangeNotSatisfiableError);
    assert.throws(() => parseRange('bytes=0-', 0), RangeNotSatisfiableError);
  });
});
