import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import {
  contentAddressedStorePath,
  formatContentAddress,
  isValidContentAddress,
  makeStorePath,
  parseContentAddress,
} from '../../../src/nix/content-address.js';
import { Hash } from '../../../src/nix/hash.js';
import { narFromPath } from '../../../src/nix/nar-writer.js';
import { StorePath } from '../../../src/nix/store-path.js';
import { nixTestOptions } from '../../helpers/nix.js';
import { assertNixError } from './expect-error.js';
import { HELLO_NAR, makeRichTree, makeTempDir } from './fixtures.js';
import { NixStoreFixture } from './nix-store-fixture.js';

const HELLO_HASH = Hash.sha256(HELLO_NAR);
const HELLO_PATH = '/nix/store/xrabnx1r49hn890prhx86h6iyn19p976-hello.txt';

describe('content addresses', () => {
  it('parse and format every method', () => {
    const nix32 = HELLO_HASH.toNix32();
    for (const [text, method] of [
      [`text:sha256:${nix32}`, 'text'],
      [`fixed:r:sha256:${nix32}`, 'nar'],
      [`fixed:sha256:${nix32}`, 'flat'],
      [`fixed:git:sha1:${'0'.repeat(32)}`, 'git'],
      [`fixed:r:sha1:${'1'.repeat(32)}`, 'nar'],
    ] as const) {
      const ca = parseContentAddress(text);
      assert.equal(ca.method, method);
      assert.equal(formatContentAddress(ca), text);
    }
    // Other encodings are accepted and re-rendered in nix32.
    assert.equal(
      formatContentAddress(parseContentAddress(`fixed:r:sha256:${HELLO_HASH.toBase16()}`)),
      `fixed:r:sha256:${nix32}`,
    );
  });

  it('reject malformed ones', () => {
    const nix32 = HELLO_HASH.toNix32();
    for (const [text, message] of [
      [`sha256:${nix32}`, /prefix/],
      [`fixed:sha256-${HELLO_HASH.toBase64()}`, /<algorithm>:<hash>/],
      [`text:${nix32}`, /<algorithm>:<hash>/],
      [`text:sha1:${'0'.repeat(32)}`, /sha256/],
      [`fixed:git:sha256:${nix32}`, /sha1/],
      [`fixed:r:sha256:${nix32.slice(1)}`, /does not parse/],
      [`fixed:r:blake3:${nix32}`, /does not parse/],
      ['', /prefix/],
    ] as const) {
      assertNixError(() => parseContentAddress(text), 'HASH_INVALID', message);
    }
  });

  it('compute the §2.3 worked example', () => {
    assert.equal(makeStorePath('source', HELLO_HASH, 'hello.txt').toString(), HELLO_PATH);
    const ca = parseContentAddress(`fixed:r:sha256:${HELLO_HASH.toNix32()}`);
    assert.equal(contentAddressedStorePath('hello.txt', ca, [], false)?.toString(), HELLO_PATH);
    const storePath = StorePath.parse(HELLO_PATH);
    assert.equal(isValidContentAddress({ storePath, ca: formatContentAddress(ca), references: [] }), true);
    assert.equal(isValidContentAddress({ storePath, ca: undefined, references: [] }), false);
    assert.equal(isValidContentAddress({ storePath, ca: 'garbage', references: [] }), false);
    // A reference changes the path, so the claim no longer holds.
    assert.equal(
      isValidContentAddress({ storePath, ca: formatContentAddress(ca), references: [storePath] }),
      false,
    );
    assert.equal(
      isValidContentAddress({
        storePath,
        ca: formatContentAddress(ca),
        references: [StorePath.parseBaseName('fr7p0q8v2c3dnhf9jilmhr4zq2xy4h66-dir')],
      }),
      false,
    );
  });

  it('refuse impossible combinations', () => {
    const text = parseContentAddress(`text:sha256:${HELLO_HASH.toNix32()}`);
    assert.equal(contentAddressedStorePath('x', text, [], true), undefined);
    const flat = parseContentAddress(`fixed:sha256:${HELLO_HASH.toNix32()}`);
    assert.equal(contentAddressedStorePath('x', flat, [StorePath.parse(HELLO_PATH)], false), undefined);
  });

  it('agree with the store paths nix computes', nixTestOptions(), async (t) => {
    const fixture = new NixStoreFixture(t);
    const dir = makeTempDir(t);
    // NAR-hashed (source) and flat paths.
    const tree = makeRichTree(join(dir, 'tree'));
    const treePath = await fixture.addPath(tree, 'tree');
    const narHash = Hash.sha256(await buffer(narFromPath(tree)));
    assert.equal(
      contentAddressedStorePath('tree', { method: 'nar', hash: narHash }, [], false)?.toString(),
      treePath,
    );
    writeFileSync(join(dir, 'flat.txt'), 'flat contents\n');
    const flatPath = (await fixture.nix(['store', 'add-file', join(dir, 'flat.txt')])).trim();
    const flatInfo = await fixture.pathInfo(flatPath);
    assert.match(flatInfo.ca ?? '', /^fixed:sha256:/);
    const flatCa = parseContentAddress(flatInfo.ca ?? '');
    assert.ok(flatCa.hash.equals(Hash.sha256('flat contents\n')));
    assert.equal(contentAddressedStorePath('flat.txt', flatCa, [], false)?.toString(), flatPath);
    // Text paths with references.
    const { drv, text } = await fixture.instantiate();
    for (const path of [drv, text, treePath, flatPath]) {
      const info = await fixture.pathInfo(path);
      const fields = {
        storePath: StorePath.parse(path),
        ca: info.ca,
        references: info.references.map((r) => StorePath.parse(r)),
      };
      assert.equal(isValidContentAddress(fields), true, path);
      assert.equal(isValidContentAddress({ ...fields, storePath: StorePath.parse(HELLO_PATH) }), false);
    }
  });
});
