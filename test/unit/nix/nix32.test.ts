import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { NIX32_ALPHABET, decodeNix32, encodeNix32, isNix32, nix32Length } from '../../../src/nix/nix32.js';
import { nixTestOptions, runNix } from '../../helpers/nix.js';
import { assertNixError } from './expect-error.js';

const SHA256_HEX = '5849379a8b8cbfc4131d0c0f89ad020ea270d85f161e257b7d52135b58337ece';
const SHA256_NIX32 = '1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq';

describe('nix32', () => {
  it('has the 32-character alphabet without e, o, u, t', () => {
    assert.equal(NIX32_ALPHABET.length, 32);
    assert.doesNotMatch(NIX32_ALPHABET, /[eout]/);
  });

  it('encodes the PROTOCOL.md vectors', () => {
    const md5 = Buffer.from([...Array(16).keys()]);
    assert.equal(encodeNix32(md5), '0g1q6hq2qa1440f1h50h1h4080');
    assert.equal(encodeNix32(Buffer.from(SHA256_HEX, 'hex')), SHA256_NIX32);
    assert.equal(encodeNix32(new Uint8Array(0)), '');
  });

  it('decodes the PROTOCOL.md vectors', () => {
    assert.equal(decodeNix32(SHA256_NIX32, 32).toString('hex'), SHA256_HEX);
    assert.deepEqual([...decodeNix32('0g1q6hq2qa1440f1h50h1h4080', 16)], [...Array(16).keys()]);
  });

  it('uses the lengths Nix uses', () => {
    assert.deepEqual([16, 20, 32, 64].map(nix32Length), [26, 32, 52, 103]);
  });

  it('round-trips random bytes of every length up to 70', () => {
    for (let size = 0; size <= 70; size++) {
      const bytes = randomBytes(size);
      const text = encodeNix32(bytes);
      assert.equal(text.length, nix32Length(size));
      assert.ok(decodeNix32(text, size).equals(bytes));
      assert.equal(isNix32(text, text.length), true);
    }
  });

  it('rejects characters outside the alphabet', () => {
    for (const bad of ['e', 'o', 'u', 't', 'A', '-', ' ', 'é']) {
      const text = `0${bad}${SHA256_NIX32.slice(2)}`;
      assertNixError(() => decodeNix32(text, 32), 'NIX32_INVALID', /invalid character/);
      assert.equal(isNix32(text, 52), false);
    }
  });

  it('rejects the wrong length', () => {
    assertNixError(() => decodeNix32(SHA256_NIX32.slice(1), 32), 'NIX32_INVALID', /expected 52 characters/);
    assertNixError(() => decodeNix32(`${SHA256_NIX32}0`, 32), 'NIX32_INVALID');
    assert.equal(isNix32(SHA256_NIX32, 51), false);
    // No byte count encodes to 3 characters.
    assert.equal(isNix32('000', 3), false);
  });

  it('rejects non-zero excess bits', () => {
    // 52 characters carry 260 bits for 256: the first character must be 0 or 1.
    const text = `2${SHA256_NIX32.slice(1)}`;
    assertNixError(() => decodeNix32(text, 32), 'NIX32_INVALID', /excess bits/);
    assert.equal(isNix32(text, 52), false);
    assert.equal(isNix32(`z${'0'.repeat(31)}`, 32), true); // 20 bytes: no excess bits
  });

  it('agrees with `nix hash to-base32` and `to-base16`', nixTestOptions(), async () => {
    for (const [type, size] of [
      ['md5', 16],
      ['sha1', 20],
      ['sha256', 32],
      ['sha512', 64],
    ] as const) {
      const samples = [Buffer.alloc(size), Buffer.alloc(size, 0xff), randomBytes(size), randomBytes(size)];
      const hex = samples.map((bytes) => bytes.toString('hex'));
      const { stdout } = await runNix('nix', ['hash', 'to-base32', '--type', type, ...hex]);
      const theirs = stdout.toString().trim().split('\n');
      assert.deepEqual(theirs, samples.map(encodeNix32), type);
      const back = await runNix('nix', ['hash', 'to-base16', '--type', type, ...theirs]);
      assert.deepEqual(
        back.stdout.toString().trim().split('\n'),
        theirs.map((text) => decodeNix32(text, size).toString('hex')),
      );
    }
  });
});
