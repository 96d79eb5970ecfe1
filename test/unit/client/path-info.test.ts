// `nix path-info --json` in every shape Nix has printed (2.8 arrays, 2.19+ objects keyed by path, the
// newest versioned formats), and the upstream-signature test that decides which paths need no push.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePathInfoJson, queryClosure, type LocalPathInfo } from '../../../src/client/path-info.js';
import { parseUpstreamKeys, signedByUpstream } from '../../../src/client/upstream.js';
import { uploadHeader } from '../../../src/client/upload.js';
import { narInfoFingerprint } from '../../../src/nix/narinfo.js';
import { SecretKey } from '../../../src/nix/signing.js';

const TOP = '/nix/store/drzf5mxrxkfzn0z8jrp3p0gvfbbg9kkz-top.txt';
const DIR = '/nix/store/fr7p0q8v2c3dnhf9jilmhr4zq2xy4h66-dir';
const HELLO = '/nix/store/xrabnx1r49hn890prhx86h6iyn19p976-hello.txt';
const DRV = '/nix/store/c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv';
const NAR_HASH_NIX32 = 'sha256:1zzqjk0fdcpxndvzn3pfd4g2bnjmawzdc6pnmczgandmzqw0005f';
const HELLO_SRI = 'sha256-WEk3mouMv8QTHQwPia0CDqJw2F8WHiV7fVITW1gzfs4=';
const HELLO_NIX32 = 'sha256:1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq';
const HELLO_HEX = '5849379a8b8cbfc4131d0c0f89ad020ea270d85f161e257b7d52135b58337ece';

/** What Debian's Nix 2.8 prints (narHash in SRI form, fields omitted when empty). */
const NIX_2_8 = JSON.stringify([
  {
    path: TOP,
    narHash: 'sha256-rgAAOP61WfU+q/Ya1j5XVdolHmnuDvt3s/2y5sCU+P8=',
    narSize: 224,
    references: [DIR, HELLO],
    deriver: DRV,
    signatures: [
      'test-cache-1:r4BfnN1PrSfP34vQmSTRW3D6VY6nZhKh8rqWTXHNqqzHubnksD0lRvphMGIogad8egvyPRDkrnZNppD1WuHVBQ==',
    ],
    registrationTime: 1700000000,
  },
  {
    path: HELLO,
    narHash: HELLO_SRI,
    narSize: 128,
    references: [],
    ca: 'fixed:r:sha256:1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq',
    registrationTime: 1700000000,
  },
]);

/** Nix 2.19 - 2.3x: an object keyed by path. */
const NIX_2_20 = JSON.stringify({
  [TOP]: {
    narHash: NAR_HASH_NIX32,
    narSize: 224,
    references: [DIR, HELLO, TOP],
    deriver: DRV,
    signatures: [],
    ca: null,
    registrationTime: 1700000000,
    ultimate: true,
  },
  [HELLO]: { narHash: HELLO_SRI, narSize: 128, references: [], deriver: null, signatures: [], ca: null },
});

/** `--json-format 2`: wrapped, base names, structured hashes and content addresses. */
const FORMAT_2 = JSON.stringify({
  version: 2,
  storeDir: '/nix/store',
  info: {
    'xrabnx1r49hn890prhx86h6iyn19p976-hello.txt': {
      version: 2,
      narHash: { algorithm: 'sha256', format: 'base16', hash: HELLO_HEX },
      narSize: 128,
      references: ['xrabnx1r49hn890prhx86h6iyn19p976-hello.txt'],
      deriver: 'c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv',
      signatures: ['k-1:sig'],
      ca: { method: 'nar', hash: { algorithm: 'sha256', format: 'base16', hash: HELLO_HEX } },
    },
  },
});

/** `--json-format 1` in the newest Nix: top-level metadata beside the paths. */
const FORMAT_1 = JSON.stringify({
  version: 1,
  storeDir: '/nix/store',
  [HELLO]: { narHash: HELLO_SRI, narSize: 128, references: [], signatures: [] },
});

const byPath = (infos: readonly LocalPathInfo[]): Map<string, LocalPathInfo> =>
  new Map(infos.map((info) => [info.path, info]));

describe('parsePathInfoJson', () => {
  it('reads Nix 2.8 arrays', () => {
    const infos = byPath(parsePathInfoJson(NIX_2_8));
    const top = infos.get(TOP);
    assert.ok(top !== undefined);
    assert.equal(top.narSize, 224);
    assert.equal(top.narHash.toSri(), 'sha256-rgAAOP61WfU+q/Ya1j5XVdolHmnuDvt3s/2y5sCU+P8=');
    assert.deepEqual(
      top.references.map((reference) => reference.baseName),
      ['fr7p0q8v2c3dnhf9jilmhr4zq2xy4h66-dir', 'xrabnx1r49hn890prhx86h6iyn19p976-hello.txt'],
    );
    assert.equal(top.deriver, 'c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv');
    assert.equal(top.signatures.length, 1);
    assert.equal(top.ca, undefined);
    const hello = infos.get(HELLO);
    assert.equal(hello?.narHash.toString(), HELLO_NIX32);
    assert.equal(hello.ca, 'fixed:r:sha256:1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq');
    assert.deepEqual(hello.signatures, []);
    assert.equal(hello.deriver, undefined);
  });

  it('reads the object form of Nix 2.19+ (with self-references and nulls)', () => {
    const infos = byPath(parsePathInfoJson(NIX_2_20));
    assert.equal(infos.size, 2);
    assert.equal(infos.get(TOP)?.narHash.toString(), NAR_HASH_NIX32);
    assert.equal(infos.get(TOP)?.references.length, 3);
    assert.equal(infos.get(HELLO)?.narHash.toString(), HELLO_NIX32);
    assert.equal(infos.get(HELLO)?.deriver, undefined);
  });

  it('reads the versioned formats 1 and 2', () => {
    const [two] = parsePathInfoJson(FORMAT_2);
    assert.equal(two?.path, HELLO);
    assert.equal(two.narHash.toString(), HELLO_NIX32);
    assert.deepEqual(
      two.references.map((reference) => reference.toString()),
      [HELLO],
    );
    assert.equal(two.ca, `fixed:r:${HELLO_NIX32}`);
    assert.equal(two.deriver, 'c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv');
    const one = parsePathInfoJson(FORMAT_1);
    assert.deepEqual(
      one.map((info) => info.path),
      [HELLO],
    );
  });

  it('refuses invalid paths and malformed output with a clear error', () => {
    assert.throws(() => parsePathInfoJson(JSON.stringify([{ path: TOP, valid: false }])), /not a valid path/);
    assert.throws(() => parsePathInfoJson(JSON.stringify({ [TOP]: null })), /not a valid path/);
    assert.throws(() => parsePathInfoJson('[{"path":"/nix/store/x","narHash":"sha256-x","narSize":1}]'));
    assert.throws(
      () => parsePathInfoJson(`[{"path":"${TOP}","narHash":"${HELLO_SRI}","narSize":0}]`),
      /narSize/,
    );
    assert.throws(() => parsePathInfoJson('warning: something'), /did not print JSON/);
  });

  it('builds the upload header with base-name references and a nix32 NAR hash', () => {
    const top = byPath(parsePathInfoJson(NIX_2_8)).get(TOP);
    assert.ok(top !== undefined);
    assert.deepEqual(uploadHeader(top, 'zstd'), {
      storePath: TOP,
      narHash: 'sha256:1zzqjk0fdcpxndvzn3pfd4g2bnjmawzdc6pnmczgandmzqw0005f',
      narSize: 224,
      references: ['fr7p0q8v2c3dnhf9jilmhr4zq2xy4h66-dir', 'xrabnx1r49hn890prhx86h6iyn19p976-hello.txt'],
      deriver: 'c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv',
      signatures: top.signatures,
      compression: 'zstd',
    });
  });

  it('asks nix in chunks and merges the closures', async () => {
    const calls: string[][] = [];
    const roots = Array.from({ length: 2500 }, () => HELLO);
    const infos = await queryClosure((args) => {
      calls.push([...args]);
      return Promise.resolve(NIX_2_8);
    }, roots);
    assert.equal(calls.length, 3);
    assert.deepEqual(calls[0]?.slice(0, 4), ['path-info', '--recursive', '--json', '--']);
    assert.equal(infos.length, 2);
  });
});

describe('upstream signatures', () => {
  const upstreamKey = SecretKey.generate('cache.nixos.org-1');
  const impostor = SecretKey.generate('cache.nixos.org-1');
  const [hello] = parsePathInfoJson(NIX_2_8).filter((info) => info.path === HELLO);
  assert.ok(hello !== undefined);
  const withSignatures = (signatures: string[], narSize = hello.narSize): LocalPathInfo => ({
    ...hello,
    narSize,
    signatures,
  });
  const fingerprint = narInfoFingerprint({ ...hello, references: [...hello.references] });
  const upstream = parseUpstreamKeys([upstreamKey.publicKey.toString(), 'not a key']);

  it('skips a path whose signature verifies with an upstream key', () => {
    assert.deepEqual(upstream.invalid, ['not a key']);
    assert.ok(signedByUpstream(withSignatures(['other-1:abc', upstreamKey.sign(fingerprint)]), upstream));
  });

  it('does not skip on a matching key name alone, or a signature over other contents', () => {
    assert.ok(!signedByUpstream(withSignatures([impostor.sign(fingerprint)]), upstream));
    assert.ok(!signedByUpstream(withSignatures([upstreamKey.sign(fingerprint)], 129), upstream));
    assert.ok(!signedByUpstream(withSignatures([]), upstream));
    assert.ok(!signedByUpstream(withSignatures([upstreamKey.sign(fingerprint)]), parseUpstreamKeys([])));
  });
});
