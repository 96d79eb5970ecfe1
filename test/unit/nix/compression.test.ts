import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  COMPRESSIONS,
  narFileExtension,
  narFileName,
  parseCompression,
  parseNarFileName,
} from '../../../src/nix/compression.js';
import { assertNixError } from './expect-error.js';

const FILE_HASH = '1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq';

describe('compression', () => {
  it('accepts the compressions niche takes for uploads', () => {
    for (const name of ['xz', 'zstd', 'bzip2', 'br', 'none']) assert.equal(parseCompression(name), name);
    for (const name of ['gzip', 'lz4', 'XZ', '', 'zst', ' xz']) {
      assertNixError(() => parseCompression(name), 'COMPRESSION_INVALID', /unsupported compression/);
    }
  });

  it('maps compressions to NAR file extensions and back', () => {
    assert.deepEqual(COMPRESSIONS.map(narFileExtension), ['.xz', '.zst', '.bz2', '.br', '']);
    for (const compression of COMPRESSIONS) {
      const name = narFileName(FILE_HASH, compression);
      assert.deepEqual(parseNarFileName(name), { fileHash: FILE_HASH, compression });
    }
    assert.equal(narFileName(FILE_HASH, 'xz'), `${FILE_HASH}.nar.xz`);
  });

  it('returns undefined for any other file name', () => {
    for (const name of [
      `${FILE_HASH}.nar.gz`,
      `${FILE_HASH}.nar.`,
      `${FILE_HASH}.narxz`,
      `${FILE_HASH}.xz`,
      FILE_HASH,
      `${FILE_HASH.slice(1)}.nar`,
      `${FILE_HASH}0.nar`,
      `2${FILE_HASH.slice(1)}.nar`, // excess bits
      `e${FILE_HASH.slice(1)}.nar`,
      `${FILE_HASH.toUpperCase()}.nar`,
      `../${FILE_HASH}.nar`,
      `${FILE_HASH}.nar.xz/`,
      `${FILE_HASH}.nar.xz\n`,
      '',
    ]) {
      assert.equal(parseNarFileName(name), undefined, name);
    }
  });
});
