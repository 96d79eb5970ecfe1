import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Hash, hashSize } from '../../../src/nix/hash.js';
import { narTokens } from '../../../src/nix/nar-format.js';
import { assertNixError } from './expect-error.js';

const HEX = '5849379a8b8cbfc4131d0c0f89ad020ea270d85f161e257b7d52135b58337ece';
const NIX32 = '1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq';
const BASE64 = 'WEk3mouMv8QTHQwPia0CDqJw2F8WHiV7fVITW1gzfs4=';
const HELLO_NAR_HASH = new Hash('sha256', Buffer.from(HEX, 'hex'));

describe('Hash', () => {
  it('parses every prefixed form of the hello.nar hash', () => {
    for (const text of [
      `sha256:${NIX32}`,
      `sha256:${HEX}`,
      `sha256:${HEX.toUpperCase()}`,
      `sha256:${BASE64}`,
      `sha256-${BASE64}`,
    ]) {
      const hash = Hash.parsePrefixed(text);
      assert.ok(hash.equals(HELLO_NAR_HASH), text);
    }
  });

  it('prints every form', () => {
    assert.equal(HELLO_NAR_HASH.toNix32(), NIX32);
    assert.equal(HELLO_NAR_HASH.toBase16(), HEX);
    assert.equal(HELLO_NAR_HASH.toBase64(), BASE64);
    assert.equal(HELLO_NAR_HASH.toSri(), `sha256-${BASE64}`);
    assert.equal(HELLO_NAR_HASH.toString(), `sha256:${NIX32}`);
    assert.equal(JSON.stringify({ h: HELLO_NAR_HASH }), `{"h":"sha256:${NIX32}"}`);
  });

  it('hashes data with sha256', () => {
    const nar = narTokens('nix-archive-1', '(', 'type', 'regular', 'contents', 'Hello, world!\n', ')');
    assert.equal(nar.length, 128);
    assert.ok(Hash.sha256(nar).equals(HELLO_NAR_HASH));
    assert.equal(
      Hash.sha256('').toBase16(),
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
  });

  it('parses other algorithms by length', () => {
    const md5 = Hash.parsePrefixed('md5:0g1q6hq2qa1440f1h50h1h4080');
    assert.equal(md5.algorithm, 'md5');
    assert.equal(md5.toBase16(), '000102030405060708090a0b0c0d0e0f');
    assert.ok(Hash.parsePrefixed('md5:000102030405060708090a0b0c0d0e0f').equals(md5));
    assert.ok(Hash.parsePrefixed(`md5:${md5.toBase64()}`).equals(md5));
    const sha1 = Hash.parsePrefixed(`sha1:${'ab'.repeat(20)}`);
    assert.ok(Hash.parsePrefixed(sha1.toString()).equals(sha1));
    assert.ok(Hash.parsePrefixed(sha1.toSri()).equals(sha1));
    const sha512 = Hash.parsePrefixed(`sha512:${'cd'.repeat(64)}`);
    assert.equal(sha512.toNix32().length, 103);
    assert.ok(Hash.parsePrefixed(sha512.toString()).equals(sha512));
    assert.ok(Hash.parsePrefixed(sha512.toSri()).equals(sha512));
    assert.deepEqual(
      ['md5', 'sha1', 'sha256', 'sha512'].map((a) => hashSize(a as 'md5')),
      [16, 20, 32, 64],
    );
  });

  it('parseAny accepts bare digests of the default algorithm, and prefixed ones', () => {
    for (const text of [NIX32, HEX, BASE64, `sha256:${NIX32}`, `sha256-${BASE64}`]) {
      assert.ok(Hash.parseAny(text, 'sha256').equals(HELLO_NAR_HASH), text);
    }
    assertNixError(
      () => Hash.parseAny(`sha256:${NIX32}`, 'sha512'),
      'HASH_INVALID',
      /expected a sha512 hash/,
    );
    assertNixError(() => Hash.parseAny(NIX32, 'sha1'), 'HASH_INVALID', /wrong length/);
  });

  it('rejects malformed hashes with HASH_INVALID', () => {
    const cases: [string, RegExp][] = [
      [NIX32, /missing/],
      ['', /missing/],
      [`sha257:${NIX32}`, /unknown hash algorithm "sha257"/],
      [`SHA256:${NIX32}`, /unknown hash algorithm/],
      [`blake3:${NIX32}`, /unknown hash algorithm/],
      [`sha256:${NIX32.slice(1)}`, /wrong length 51/],
      [`sha256:${NIX32}0`, /wrong length/],
      [`sha256:e${NIX32.slice(1)}`, /invalid nix32/],
      [`sha256:2${NIX32.slice(1)}`, /invalid nix32/],
      [`sha256:${HEX.slice(0, 63)}g`, /invalid base16/],
      [`sha256:${BASE64.slice(0, 43)}!`, /invalid base64/],
      [`sha256:${BASE64.replace('=', 'A')}`, /invalid base64|33 bytes/],
      [`sha256-${BASE64.slice(0, -4)}`, /invalid base64|bytes/],
      [`sha256-${HEX}`, /48 bytes, expected 32/],
      [`sha256-${NIX32}`, /39 bytes, expected 32/],
      [`sha256: ${NIX32}`, /wrong length/],
    ];
    for (const [text, message] of cases)
      assertNixError(() => Hash.parsePrefixed(text), 'HASH_INVALID', message);
  });

  it('rejects digests of the wrong size in the constructor', () => {
    assertNixError(() => new Hash('sha256', Buffer.alloc(20)), 'HASH_INVALID', /32 bytes, got 20/);
  });

  it('compares algorithm and bytes', () => {
    assert.equal(HELLO_NAR_HASH.equals(Hash.sha256('x')), false);
    assert.equal(new Hash('sha1', Buffer.alloc(20)).equals(new Hash('sha1', Buffer.alloc(20))), true);
  });
});
