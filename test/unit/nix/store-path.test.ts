import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DEFAULT_STORE_DIR,
  StorePath,
  isStorePathHash,
  parseStorePathHash,
} from '../../../src/nix/store-path.js';
import { assertNixError } from './expect-error.js';

const HASH = 'xrabnx1r49hn890prhx86h6iyn19p976';
const FULL = `/nix/store/${HASH}-hello.txt`;

describe('StorePath', () => {
  it('parses a full path', () => {
    const path = StorePath.parse(FULL);
    assert.equal(path.hash, HASH);
    assert.equal(path.name, 'hello.txt');
    assert.equal(path.baseName, `${HASH}-hello.txt`);
    assert.equal(path.toString(), FULL);
    assert.equal(String(path), FULL);
    assert.equal(path.toString('/other/store'), `/other/store/${HASH}-hello.txt`);
    assert.equal(DEFAULT_STORE_DIR, '/nix/store');
  });

  it('parses base names, and names with every allowed character', () => {
    const name = 'aZ09+-._?=-hello-2.12.1';
    const path = StorePath.parseBaseName(`${HASH}-${name}`);
    assert.equal(path.name, name);
    assert.ok(path.equals(StorePath.fromParts(HASH, name)));
    assert.equal(StorePath.parseBaseName(`${HASH}-${'a'.repeat(211)}`).name.length, 211);
    assert.equal(StorePath.parseBaseName(`${HASH}-...`).name, '...');
    assert.equal(StorePath.parseBaseName(`${HASH}-.a`).name, '.a');
    assert.equal(StorePath.parseBaseName(`${HASH}--`).name, '-');
  });

  it('honours another store directory', () => {
    const path = StorePath.parse(`/opt/store/${HASH}-x`, '/opt/store');
    assert.equal(path.toString('/opt/store'), `/opt/store/${HASH}-x`);
    assertNixError(
      () => StorePath.parse(FULL, '/opt/store'),
      'STORE_PATH_INVALID',
      /not in the store directory \/opt\/store/,
    );
  });

  it('rejects malformed full paths', () => {
    const cases: [string, RegExp][] = [
      [`/nix/store/${HASH}-hello.txt/`, /nothing after the name/],
      [`/nix/store/${HASH}-hello.txt/bin/sh`, /nothing after the name/],
      [`/nix/store/../etc/${HASH}-x`, /nothing after the name/],
      ['/nix/store/..', /expected <32-character hash>-<name>/],
      [`/nix/store//${HASH}-x`, /nothing after the name/],
      [`/nix/store`, /not in the store directory/],
      [`/nix/store/`, /expected </],
      [`nix/store/${HASH}-x`, /not in the store directory/],
      [`/nix/storex/${HASH}-x`, /not in the store directory/],
      [`/nix/store/${HASH}`, /expected </],
      [`/nix/store/${HASH}-`, /expected </],
    ];
    for (const [text, message] of cases)
      assertNixError(() => StorePath.parse(text), 'STORE_PATH_INVALID', message);
  });

  it('rejects bad hash parts', () => {
    for (const hash of [
      HASH.slice(1),
      `${HASH.slice(0, 31)}e`,
      `${HASH.slice(0, 31)}o`,
      `${HASH.slice(0, 31)}u`,
      `${HASH.slice(0, 31)}t`,
      HASH.toUpperCase(),
    ]) {
      assertNixError(() => StorePath.parseBaseName(`${hash}-x`), 'STORE_PATH_INVALID');
    }
    assertNixError(
      () => StorePath.parseBaseName(`${HASH}_x`),
      'STORE_PATH_INVALID',
      /expected <32-character hash>-<name>/,
    );
  });

  it('rejects bad names', () => {
    const cases: [string, RegExp][] = [
      ['a'.repeat(212), /longer than 211/],
      ['hello world', /character outside/],
      ['a/b', /character outside/],
      ['a@b', /character outside/],
      ['é', /character outside/],
      ['a\nb', /character outside/],
      ['.', /may not be "."/],
      ['..', /may not be ".."/],
      ['.-x', /may not start with/],
      ['..-x', /may not start with/],
    ];
    for (const [name, message] of cases) {
      assertNixError(() => StorePath.parseBaseName(`${HASH}-${name}`), 'STORE_PATH_INVALID', message);
    }
  });

  it('validates store path hashes on their own', () => {
    assert.equal(parseStorePathHash(HASH), HASH);
    assert.equal(isStorePathHash(HASH), true);
    assert.equal(isStorePathHash(`${HASH}0`), false);
    assert.equal(isStorePathHash('0'.repeat(32)), true);
    assertNixError(() => parseStorePathHash('hello'), 'STORE_PATH_INVALID', /32 nix32 characters/);
  });
});
