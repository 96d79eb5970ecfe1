import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isValidContentAddress } from '../../../src/nix/content-address.js';
import { Hash } from '../../../src/nix/hash.js';
import { type NarInfo, formatNarInfo, narInfoFingerprint, parseNarInfo } from '../../../src/nix/narinfo.js';
import { PublicKey, SecretKey, signNarInfo, verifyNarInfo } from '../../../src/nix/signing.js';
import { StorePath } from '../../../src/nix/store-path.js';
import { nixTestOptions } from '../../helpers/nix.js';
import {
  HELLO_FINGERPRINT,
  HELLO_NARINFO,
  TOOL_FINGERPRINT,
  TOOL_NARINFO,
  TOP_FINGERPRINT,
  TOP_NARINFO,
} from './examples.js';
import { assertNixError } from './expect-error.js';
import { makeRichTree, makeTempDir } from './fixtures.js';
import { NixStoreFixture, hashPart } from './nix-store-fixture.js';

const NIX32 = '1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq';
const MINIMAL = `StorePath: /nix/store/x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1
URL: nar/${NIX32}.nar
NarHash: sha256:${NIX32}
NarSize: 128
`;

/** MINIMAL with `line` replaced or added. */
function withLine(key: string, line: string | undefined): string {
  const lines = MINIMAL.split('\n')
    .slice(0, -1)
    .filter((l) => !l.startsWith(`${key}:`));
  if (line !== undefined) lines.push(line);
  return `${lines.join('\n')}\n`;
}

describe('parseNarInfo', () => {
  it('parses the narinfo Nix 2.8 wrote (§3.1)', () => {
    const info = parseNarInfo(TOP_NARINFO);
    assert.equal(info.storePath.toString(), '/nix/store/drzf5mxrxkfzn0z8jrp3p0gvfbbg9kkz-top.txt');
    assert.equal(info.url, 'nar/04ap2vi33cay0b1i9bcq3x6fr1ygcyrxbxzscsy1za13aqc3mlmq.nar.xz');
    assert.equal(info.compression, 'xz');
    assert.equal(info.fileHash?.toString(), 'sha256:04ap2vi33cay0b1i9bcq3x6fr1ygcyrxbxzscsy1za13aqc3mlmq');
    assert.equal(info.fileSize, 216);
    assert.equal(info.narHash.toString(), 'sha256:1zzqjk0fdcpxndvzn3pfd4g2bnjmawzdc6pnmczgandmzqw0005f');
    assert.equal(info.narSize, 224);
    assert.deepEqual(
      info.references.map((r) => r.baseName),
      ['fr7p0q8v2c3dnhf9jilmhr4zq2xy4h66-dir', 'xrabnx1r49hn890prhx86h6iyn19p976-hello.txt'],
    );
    assert.equal(info.deriver, undefined);
    assert.equal(info.system, undefined);
    assert.equal(info.signatures.length, 1);
    assert.equal(info.ca, 'text:sha256:19p4w1b38x13gmr0i7s34p1jk45cn63ay31nh7bbif67y2jf0bg3');
  });

  it('parses the §4.5 examples, with an empty References line and a Deriver', () => {
    const hello = parseNarInfo(HELLO_NARINFO);
    assert.deepEqual(hello.references, []);
    assert.equal(hello.deriver, 'c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv');
    assert.equal(hello.compression, 'none');
    const tool = parseNarInfo(TOOL_NARINFO);
    assert.equal(tool.references.length, 2);
    assert.ok(tool.references.some((r) => r.equals(tool.storePath)));
  });

  it('applies Nix defaults and ignores unknown keys', () => {
    const info = parseNarInfo(`${MINIMAL}Foo: bar\nDeriver: unknown-deriver\nSystem: x86_64-linux\n`);
    assert.equal(info.compression, 'bzip2');
    assert.equal(info.fileHash, undefined);
    assert.equal(info.fileSize, undefined);
    assert.deepEqual(info.references, []);
    assert.equal(info.deriver, undefined);
    assert.equal(info.system, 'x86_64-linux');
    assert.deepEqual(info.signatures, []);
  });

  it('accepts every prefixed hash form Nix accepts', () => {
    const hex = Hash.parsePrefixed(`sha256:${NIX32}`).toBase16();
    for (const form of [`sha256:${hex}`, `sha256-${Hash.parsePrefixed(`sha256:${NIX32}`).toBase64()}`]) {
      const info = parseNarInfo(withLine('NarHash', `NarHash: ${form}`));
      assert.equal(info.narHash.toString(), `sha256:${NIX32}`);
    }
  });

  it('honours another store directory', () => {
    const text = MINIMAL.replace('/nix/store/', '/opt/store/');
    assert.equal(parseNarInfo(text, { storeDir: '/opt/store' }).storePath.name, 'hello-2.12.1');
    assertNixError(
      () => parseNarInfo(text),
      'NARINFO_INVALID',
      /line 1: invalid StorePath: .*not in the store directory/,
    );
  });

  it('rejects malformed narinfos, naming the line and field', () => {
    const cases: [string, RegExp][] = [
      ['', /empty/],
      [MINIMAL.slice(0, -1), /line 4: the last line does not end with a newline/],
      [MINIMAL.replaceAll('\n', '\r\n'), /line 1: carriage return/],
      [`${MINIMAL}\n`, /line 5: blank line/],
      [MINIMAL.replace('\nURL', '\n\nURL'), /line 2: blank line/],
      [withLine('StorePath', undefined), /no StorePath line/],
      [withLine('URL', undefined), /no URL line/],
      [withLine('NarHash', undefined), /no NarHash line/],
      [withLine('NarSize', undefined), /no NarSize line/],
      [withLine('NarSize', 'NarSize: 0'), /line 4: invalid NarSize: NarSize must be greater than 0/],
      [withLine('NarSize', 'NarSize: 0128'), /invalid NarSize: expected a plain decimal/],
      [withLine('NarSize', 'NarSize: +128'), /invalid NarSize: expected a plain decimal/],
      [withLine('NarSize', 'NarSize: -1'), /invalid NarSize/],
      [withLine('NarSize', 'NarSize: 1e3'), /invalid NarSize/],
      [withLine('NarSize', 'NarSize: 0x10'), /invalid NarSize/],
      [withLine('NarSize', 'NarSize: 99999999999999999999'), /too large/],
      [`${MINIMAL}FileSize: 12 \n`, /line 5: FileSize has extra spaces/],
      [`${MINIMAL}FileSize: abc\n`, /line 5: invalid FileSize/],
      [`${MINIMAL}NarSize: 128\n`, /line 5: duplicate NarSize line/],
      [
        `${MINIMAL}StorePath: /nix/store/x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1\n`,
        /line 5: duplicate StorePath/,
      ],
      [`${MINIMAL}References: \nReferences: \n`, /line 6: duplicate References/],
      [`${MINIMAL}CA: fixed:r:sha256:${NIX32}\nCA: fixed:r:sha256:${NIX32}\n`, /line 6: duplicate CA/],
      [`${MINIMAL}Compression: xz\nCompression: xz\n`, /duplicate Compression/],
      [withLine('NarHash', `NarHash: ${NIX32}`), /line 4: invalid NarHash: .*missing/],
      [withLine('NarHash', `NarHash: sha256:${NIX32.slice(1)}`), /invalid NarHash: .*wrong length/],
      [withLine('NarHash', `NarHash: sha256:e${NIX32.slice(1)}`), /invalid NarHash: .*nix32/],
      [withLine('NarHash', 'NarHash: md5:0g1q6hq2qa1440f1h50h1h4080'), /the NAR hash must be sha256/],
      [`${MINIMAL}FileHash: sha256:xyz\n`, /line 5: invalid FileHash/],
      [
        `${MINIMAL}References: /nix/store/xrabnx1r49hn890prhx86h6iyn19p976-hello.txt\n`,
        /line 5: invalid References/,
      ],
      [`${MINIMAL}References: xrabnx1r49hn890prhx86h6iyn19p976\n`, /invalid References/],
      [
        `${MINIMAL}References: xrabnx1r49hn890prhx86h6iyn19p976-a  xrabnx1r49hn890prhx86h6iyn19p976-b\n`,
        /invalid References/,
      ],
      [
        `${MINIMAL}References: xrabnx1r49hn890prhx86h6iyn19p976-a xrabnx1r49hn890prhx86h6iyn19p976-a\n`,
        /listed twice/,
      ],
      [`${MINIMAL}Deriver: not-a-store-path.drv\n`, /line 5: invalid Deriver/],
      [`${MINIMAL}Sig: cache-1:abc\n`, /line 5: invalid Sig: .*base64/],
      [
        `${MINIMAL}Sig: cache-1:${Buffer.alloc(32).toString('base64')}\n`,
        /invalid Sig: .*32 bytes, expected 64/,
      ],
      [`${MINIMAL}Sig: ${Buffer.alloc(64).toString('base64')}\n`, /invalid Sig/],
      [`${MINIMAL}Sig: :${Buffer.alloc(64).toString('base64')}\n`, /invalid Sig: .*name is empty/],
      [
        `${MINIMAL}Sig: a:${Buffer.alloc(64).toString('base64')}\nSig: a:${Buffer.alloc(64).toString('base64')}\n`,
        /line 6: invalid Sig: the same signature/,
      ],
      [`${MINIMAL}CA: git:sha1:${'0'.repeat(32)}\n`, /line 5: invalid CA/],
      [`${MINIMAL}CA: fixed:r:sha256:nope\n`, /line 5: invalid CA/],
      [`${MINIMAL}CA: text:sha1:${'0'.repeat(32)}\n`, /line 5: invalid CA: .*sha256/],
      [`${MINIMAL}Compression: rar\n`, /line 5: invalid Compression: unknown compression "rar"/],
      [`${MINIMAL}Compression: \n`, /line 5: Compression is empty/],
      [`${MINIMAL}URL:nar/x.nar\n`, /line 5: expected exactly one space after "URL:"/],
      [MINIMAL.replace('URL: ', 'URL:  '), /line 2: URL has extra spaces/],
      [MINIMAL.replace('URL: nar/', 'URL: nar /'), /line 2: invalid URL: the URL contains whitespace/],
      [`${MINIMAL}no colon\n`, /line 5: expected "Key: value", got "no colon"/],
      [`${MINIMAL}: value\n`, /line 5: expected "Key: value"/],
      [`${MINIMAL}System: x86\u0000\n`, /line 5: System contains a control character/],
      [MINIMAL.replace('hello-2.12.1', 'hello/../x'), /line 1: invalid StorePath/],
    ];
    for (const [text, message] of cases) assertNixError(() => parseNarInfo(text), 'NARINFO_INVALID', message);
  });
});

describe('formatNarInfo', () => {
  it('reproduces the example narinfos byte for byte', () => {
    for (const text of [TOP_NARINFO, HELLO_NARINFO, TOOL_NARINFO])
      assert.equal(formatNarInfo(parseNarInfo(text)), text);
  });

  it('writes canonical hashes, sorted references and the fields in Nix order', () => {
    const hashHex = Hash.parsePrefixed(`sha256:${NIX32}`);
    const info: NarInfo = {
      storePath: StorePath.parse('/nix/store/x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1'),
      url: 'nar/x.nar.zst',
      compression: 'zstd',
      fileHash: hashHex,
      fileSize: 100,
      narHash: hashHex,
      narSize: 128,
      references: [
        StorePath.parseBaseName('zjbl1040pl4yh4178srp8zrfqlzg24ca-b'),
        StorePath.parseBaseName('0jbl1040pl4yh4178srp8zrfqlzg24ca-a'),
      ],
      deriver: 'c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv',
      system: 'x86_64-linux',
      signatures: ['k-2:sig2', 'k-1:sig1'],
      ca: `fixed:r:sha256:${NIX32}`,
    };
    assert.equal(
      formatNarInfo(info),
      [
        'StorePath: /nix/store/x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1',
        'URL: nar/x.nar.zst',
        'Compression: zstd',
        `FileHash: sha256:${NIX32}`,
        'FileSize: 100',
        `NarHash: sha256:${NIX32}`,
        'NarSize: 128',
        'References: 0jbl1040pl4yh4178srp8zrfqlzg24ca-a zjbl1040pl4yh4178srp8zrfqlzg24ca-b',
        'Deriver: c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv',
        'System: x86_64-linux',
        'Sig: k-2:sig2',
        'Sig: k-1:sig1',
        `CA: fixed:r:sha256:${NIX32}`,
        '',
      ].join('\n'),
    );
    const minimal = parseNarInfo(MINIMAL);
    assert.equal(
      formatNarInfo(minimal),
      MINIMAL.replace('NarHash', 'Compression: bzip2\nNarHash') + 'References: \n',
    );
  });
});

describe('narInfoFingerprint', () => {
  it('matches the §4.2 and §4.5 fingerprints', () => {
    assert.equal(narInfoFingerprint(parseNarInfo(TOP_NARINFO)), TOP_FINGERPRINT);
    assert.equal(narInfoFingerprint(parseNarInfo(HELLO_NARINFO)), HELLO_FINGERPRINT);
    assert.equal(narInfoFingerprint(parseNarInfo(TOOL_NARINFO)), TOOL_FINGERPRINT);
  });

  it('re-renders the hash, sorts and de-duplicates references', () => {
    const info = parseNarInfo(TOOL_NARINFO);
    const reordered = {
      ...info,
      narHash: Hash.parsePrefixed(info.narHash.toSri()),
      references: [...info.references].reverse().concat(info.references),
    };
    assert.equal(narInfoFingerprint(reordered), TOOL_FINGERPRINT);
    assert.equal(
      narInfoFingerprint(info, '/opt/store'),
      TOOL_FINGERPRINT.replaceAll('/nix/store/', '/opt/store/'),
    );
  });

  it('refuses paths whose size is unknown', () => {
    const info = parseNarInfo(HELLO_NARINFO);
    assertNixError(() => narInfoFingerprint({ ...info, narSize: 0 }), 'NARINFO_INVALID', /NarSize 0/);
  });
});

describe('narinfos written by Nix', () => {
  it('round-trip byte for byte, and their signatures and CAs check out', nixTestOptions(), async (t) => {
    const fixture = new NixStoreFixture(t);
    const dir = makeTempDir(t);
    const key = SecretKey.generate('niche-test-1');
    const keyFile = join(dir, 'secret-key');
    writeFileSync(keyFile, key.toString());
    const tree = await fixture.addPath(makeRichTree(join(dir, 'tree')), 'tree');
    mkdirSync(join(dir, 'e'));
    const emptyDir = await fixture.addPath(join(dir, 'e'), 'empty');
    await fixture.copyToCache([tree, emptyDir], `&secret-key=${keyFile}`);
    const { drv, text } = await fixture.instantiate();
    await fixture.copyToCache([drv], `&secret-key=${keyFile}`);

    for (const path of [tree, emptyDir, drv, text]) {
      const original = fixture.cacheFile(`${hashPart(path)}.narinfo`);
      const info = parseNarInfo(original);
      assert.equal(info.storePath.toString(), path);
      assert.equal(formatNarInfo(info), original, path);
      assert.equal(info.signatures.length, 1);
      assert.equal(info.signatures[0], signNarInfo(info, key), path);
      assert.equal(verifyNarInfo(info, [key.publicKey]), true);
      assert.equal(verifyNarInfo(info, [PublicKey.parse(key.publicKey.toString())]), true);
      assert.equal(verifyNarInfo({ ...info, narSize: info.narSize + 1 }, [key.publicKey]), false);
      assert.equal(isValidContentAddress(info), true, `CA of ${path}`);
      // The NAR in the cache has the narinfo's hash and size.
      const nar = fixture.cacheBytes(info.url);
      assert.equal(nar.length, info.narSize);
      assert.ok(Hash.sha256(nar).equals(info.narHash));
    }
    const drvInfo = parseNarInfo(fixture.cacheFile(`${hashPart(drv)}.narinfo`));
    assert.deepEqual(
      drvInfo.references.map((r) => r.toString()),
      [text],
    );
    assert.match(drvInfo.ca ?? '', /^text:sha256:/);
  });
});
