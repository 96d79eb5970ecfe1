import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { NarListingBuilder, jsonString } from '../../../src/nix/nar-listing.js';
import { NarParser } from '../../../src/nix/nar-parser.js';
import { narFromPath } from '../../../src/nix/nar-writer.js';
import { nixTestOptions } from '../../helpers/nix.js';
import { assertNixError } from './expect-error.js';
import { HELLO_NAR, makeRichTree, makeTempDir } from './fixtures.js';
import { NixStoreFixture, hashPart } from './nix-store-fixture.js';

function listingOf(nar: Buffer): NarListingBuilder {
  const builder = new NarListingBuilder();
  const parser = new NarParser(builder);
  parser.update(nar);
  parser.end();
  return builder;
}

describe('NarListingBuilder', () => {
  it('lists a single file', () => {
    const listing = listingOf(HELLO_NAR);
    assert.equal(listing.toString(), '{"version":1,"root":{"type":"regular","size":14,"narOffset":96}}');
    assert.deepEqual(listing.toJSON(), { version: 1, root: { type: 'regular', size: 14, narOffset: 96 } });
  });

  it('reproduces the listing of PROTOCOL.md §7.1', async (t) => {
    const root = join(makeTempDir(t), 'dir');
    mkdirSync(join(root, 'bin'), { recursive: true });
    writeFileSync(join(root, 'README'), 'hi\n');
    writeFileSync(join(root, 'bin', 'hi'), '#!/bin/sh\necho hi\n');
    chmodSync(join(root, 'bin', 'hi'), 0o755);
    symlinkSync('bin/hi', join(root, 'link'));
    const nar = await buffer(narFromPath(root));
    assert.equal(nar.length, 888);
    assert.equal(
      listingOf(nar).toString(),
      '{"version":1,"root":{"type":"directory","entries":{' +
        '"README":{"type":"regular","size":3,"narOffset":232},' +
        '"bin":{"type":"directory","entries":{"hi":{"type":"regular","size":18,"executable":true,"narOffset":592}}},' +
        '"link":{"type":"symlink","target":"bin/hi"}}}}',
    );
  });

  it('keeps NAR order in toString and the same content in toJSON', async (t) => {
    const root = makeRichTree(join(makeTempDir(t), 'tree'));
    const listing = listingOf(await buffer(narFromPath(root)));
    const text = listing.toString();
    // "10" before "9" (bytewise), where JavaScript objects would put 9 first.
    assert.ok(text.indexOf('"10"') < text.indexOf('"9"'));
    assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(listing.toJSON())));
    const rootNode = listing.toJSON().root;
    assert.ok(rootNode.type === 'directory');
    assert.ok(Object.hasOwn(rootNode.entries, '__proto__'));
    assert.equal(Object.getPrototypeOf(rootNode.entries), Object.prototype);
    assert.deepEqual(rootNode.entries['empty-dir'], { type: 'directory', entries: {} });
  });

  it('escapes strings as Nix does', () => {
    assert.equal(jsonString('plain é'), '"plain é"');
    assert.equal(jsonString('q"b\\n\nr\rt\t\b\f\u0001'), '"q\\"b\\\\n\\nr\\rt\\t\\u0008\\u000c\\u0001"');
  });

  it('refuses events that do not form a tree', () => {
    assertNixError(() => new NarListingBuilder().toJSON(), 'NAR_INVALID', /no root node/);
    const builder = new NarListingBuilder();
    builder.directory([]);
    assertNixError(
      () => {
        builder.file(['a', 'b'], 1, false, 100);
      },
      'NAR_INVALID',
      /outside any directory/,
    );
    assertNixError(
      () => {
        builder.symlink([], 'x');
      },
      'NAR_INVALID',
      /second root/,
    );
  });

  it('is byte-identical to the .ls that `nix copy` writes', nixTestOptions(), async (t) => {
    const fixture = new NixStoreFixture(t);
    const root = makeRichTree(join(makeTempDir(t), 'tree'));
    const path = await fixture.addPath(root, 'tree');
    const hello = join(makeTempDir(t), 'hello.txt');
    writeFileSync(hello, 'Hello, world!\n');
    const helloPath = await fixture.addPath(hello, 'hello.txt');
    await fixture.copyToCache([path, helloPath]);
    for (const [storePath, source] of [
      [path, root],
      [helloPath, hello],
    ] as const) {
      const expected = fixture.cacheFile(`${hashPart(storePath)}.ls`);
      assert.equal(listingOf(await buffer(narFromPath(source))).toString(), expected);
    }
  });
});
