import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { buffer } from 'node:stream/consumers';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';
import { formatCacheInfo } from '../../../src/nix/cache-info.js';
import { narFileName } from '../../../src/nix/compression.js';
import { Hash } from '../../../src/nix/hash.js';
import { narFromPath } from '../../../src/nix/nar-writer.js';
import { type NarInfo, formatNarInfo, narInfoFingerprint, parseNarInfo } from '../../../src/nix/narinfo.js';
import {
  PublicKey,
  SecretKey,
  countValidSignatures,
  parseSignature,
  signNarInfo,
  verifyNarInfo,
} from '../../../src/nix/signing.js';
import { StorePath } from '../../../src/nix/store-path.js';
import { nixTestOptions, runNix } from '../../helpers/nix.js';
import {
  EXAMPLE_PUBLIC_KEY,
  EXAMPLE_SECRET_KEY,
  EXAMPLE_SEED,
  HELLO_NARINFO,
  TEST_CACHE_PUBLIC_KEY,
  TOOL_NARINFO,
  TOP_FINGERPRINT,
  TOP_NARINFO,
} from './examples.js';
import { assertNixError } from './expect-error.js';
import { makeRichTree, makeTempDir } from './fixtures.js';
import { NixStoreFixture } from './nix-store-fixture.js';

describe('SecretKey and PublicKey', () => {
  it('parse the deterministic §4.5 key and reproduce its signatures', () => {
    const key = SecretKey.parse(EXAMPLE_SECRET_KEY);
    assert.equal(key.name, 'example.org-1');
    assert.equal(key.toString(), EXAMPLE_SECRET_KEY);
    assert.ok(
      Buffer.from(EXAMPLE_SECRET_KEY.split(':')[1] ?? '', 'base64')
        .subarray(0, 32)
        .equals(EXAMPLE_SEED),
    );
    assert.equal(key.publicKey.toString(), EXAMPLE_PUBLIC_KEY);
    for (const text of [HELLO_NARINFO, TOOL_NARINFO]) {
      const info = parseNarInfo(text);
      assert.equal(signNarInfo(info, key), info.signatures[0]);
      assert.equal(key.sign(narInfoFingerprint(info)), info.signatures[0]);
      assert.equal(verifyNarInfo(info, [PublicKey.parse(EXAMPLE_PUBLIC_KEY)]), true);
    }
  });

  it('verify the signature Nix 2.8 wrote in §3.1', () => {
    const key = PublicKey.parse(TEST_CACHE_PUBLIC_KEY);
    const info = parseNarInfo(TOP_NARINFO);
    const signature = info.signatures[0] ?? '';
    assert.equal(key.verify(TOP_FINGERPRINT, signature), true);
    assert.equal(key.verify(`${TOP_FINGERPRINT} `, signature), false);
    assert.equal(verifyNarInfo(info, [key]), true);
    assert.equal(verifyNarInfo(info, [PublicKey.parse(EXAMPLE_PUBLIC_KEY)]), false);
    assert.equal(verifyNarInfo({ ...info, narSize: 225 }, [key]), false);
    const otherReferences = { ...info, references: info.references.slice(1) };
    assert.equal(verifyNarInfo(otherReferences, [key]), false);
    assert.equal(verifyNarInfo(info, []), false);
  });

  it('count valid signatures as Nix does: by key name, unknown names ignored', () => {
    const a = SecretKey.generate('a-1');
    const b = SecretKey.generate('b-1');
    const info = parseNarInfo(HELLO_NARINFO);
    const signed = {
      ...info,
      signatures: [signNarInfo(info, a), signNarInfo(info, b), 'c-1:garbage', info.signatures[0] ?? ''],
    };
    assert.equal(countValidSignatures(signed, [a.publicKey, b.publicKey]), 2);
    assert.equal(countValidSignatures(signed, [b.publicKey]), 1);
    // A key with the right name but other bytes verifies nothing.
    const impostor = SecretKey.generate('a-1');
    assert.equal(countValidSignatures(signed, [impostor.publicKey]), 0);
  });

  it('generate keys that round-trip', () => {
    const key = SecretKey.generate('cache.example.org-1');
    const again = SecretKey.parse(`${key.toString()}\n`);
    assert.equal(again.toString(), key.toString());
    assert.equal(again.publicKey.toString(), key.publicKey.toString());
    const signature = key.sign('message');
    assert.match(signature, /^cache\.example\.org-1:[A-Za-z0-9+/]{86}==$/);
    assert.equal(again.publicKey.verify('message', signature), true);
    assert.equal(PublicKey.parse(`${key.publicKey.toString()}\n`).verify('message', signature), true);
    assert.notEqual(SecretKey.generate('x').toString(), SecretKey.generate('x').toString());
  });

  it('keep the secret out of logs and JSON', () => {
    const key = SecretKey.parse(EXAMPLE_SECRET_KEY);
    const secret = EXAMPLE_SECRET_KEY.split(':')[1] ?? '';
    assert.ok(!inspect(key).includes(secret.slice(0, 20)));
    assert.ok(!inspect({ nested: { key } }).includes(secret.slice(0, 20)));
    assert.equal(JSON.stringify({ key }), '{"key":{"name":"example.org-1"}}');
  });

  it('verify() is false for anything that is not a good signature', () => {
    const key = SecretKey.parse(EXAMPLE_SECRET_KEY);
    const pub = key.publicKey;
    const good = key.sign('m');
    const raw = good.slice(good.indexOf(':') + 1);
    assert.equal(pub.verify('m', good), true);
    for (const bad of [
      `other-1:${raw}`,
      raw,
      `${good}x`,
      'example.org-1:',
      `example.org-1:${Buffer.alloc(64).toString('base64')}`,
      '',
    ]) {
      assert.equal(pub.verify('m', bad), false, bad);
    }
  });

  it('reject malformed secret keys with KEY_INVALID', () => {
    const [name, data] = EXAMPLE_SECRET_KEY.split(':') as [string, string];
    const bytes = Buffer.from(data, 'base64');
    const otherPublic = Buffer.concat([bytes.subarray(0, 32), SecretKey.generate('x').publicKey.bytes]);
    const cases: [string, RegExp][] = [
      [data, /expected <key name>:<base64>/],
      [`:${data}`, /key name is empty/],
      [`na me:${data}`, /whitespace/],
      [`${name}:${data.slice(1)}`, /not valid base64/],
      [`${name}:${data} `, /not valid base64/],
      [`${name}:${data}\r\n`, /not valid base64/],
      [`${name}:${data}\n\n`, /not valid base64/],
      [` ${name}:${data}`, /whitespace/],
      [`${name}:${bytes.subarray(0, 32).toString('base64')}`, /32 bytes, expected 64/],
      [EXAMPLE_PUBLIC_KEY, /32 bytes, expected 64/],
      [`${name}:${otherPublic.toString('base64')}`, /public half does not match its seed/],
      ['', /expected/],
    ];
    for (const [text, message] of cases) assertNixError(() => SecretKey.parse(text), 'KEY_INVALID', message);
    assertNixError(() => SecretKey.generate(''), 'KEY_INVALID', /empty/);
  });

  it('reject malformed public keys with KEY_INVALID', () => {
    const [name, data] = EXAMPLE_PUBLIC_KEY.split(':') as [string, string];
    const cases: [string, RegExp][] = [
      [data, /expected <key name>:<base64>/],
      [`:${data}`, /empty/],
      [`${name}:${data.replace('=', '')}`, /not valid base64/],
      [`${name}:${data}\r`, /not valid base64/],
      [EXAMPLE_SECRET_KEY, /64 bytes, expected 32/],
    ];
    for (const [text, message] of cases) assertNixError(() => PublicKey.parse(text), 'KEY_INVALID', message);
  });
});

describe('parseSignature', () => {
  it('splits name and 64 signature bytes', () => {
    const parsed = parseSignature(parseNarInfo(TOP_NARINFO).signatures[0] ?? '');
    assert.equal(parsed.keyName, 'test-cache-1');
    assert.equal(parsed.signature.length, 64);
    assert.equal(
      parseSignature(`a:b:${Buffer.alloc(64).toString('base64')}`.replace('a:b:', 'a:')).keyName,
      'a',
    );
  });

  it('rejects malformed signatures with SIGNATURE_INVALID', () => {
    const sig = Buffer.alloc(64, 1).toString('base64');
    const cases: [string, RegExp][] = [
      [sig, /expected <key name>:<base64>/],
      [`:${sig}`, /name is empty/],
      ['k:', /64|base64/],
      [`k:${sig.slice(0, -2)}`, /base64/],
      [`k:${Buffer.alloc(63).toString('base64')}`, /63 bytes, expected 64/],
      [`k:${sig}\n`, /base64/],
      [`k:a:${sig}`, /base64/],
    ];
    for (const [text, message] of cases)
      assertNixError(() => parseSignature(text), 'SIGNATURE_INVALID', message);
  });
});

describe('keys and signatures with the real nix', () => {
  it(
    'reads keys made by `nix-store --generate-binary-cache-key` and signs like `nix store sign`',
    nixTestOptions(),
    async (t) => {
      const fixture = new NixStoreFixture(t);
      const dir = makeTempDir(t);
      const [secretFile, publicFile] = [join(dir, 'sk'), join(dir, 'pk')];
      await runNix('nix-store', ['--generate-binary-cache-key', 'nix-made-1', secretFile, publicFile], {
        home: fixture.home,
      });
      const secretText = readFileSync(secretFile, 'utf8');
      const key = SecretKey.parse(secretText);
      assert.equal(key.toString(), secretText); // no trailing newline, like Nix
      assert.equal(key.publicKey.toString(), readFileSync(publicFile, 'utf8'));
      assert.equal(PublicKey.parse(readFileSync(publicFile, 'utf8')).toString(), key.publicKey.toString());

      const path = await fixture.addPath(makeRichTree(join(dir, 'tree')), 'tree');
      await fixture.nix(['store', 'sign', '--key-file', secretFile, path]);
      const info = await fixture.pathInfo(path);
      const ours = signNarInfo(
        {
          storePath: StorePath.parse(path),
          narHash: Hash.parsePrefixed(info.narHash),
          narSize: info.narSize,
          references: info.references.map((r) => StorePath.parse(r)),
        },
        key,
      );
      assert.deepEqual(info.signatures, [ours]);
    },
  );

  it('makes keys that nix accepts for signing and verification', nixTestOptions(), async (t) => {
    const fixture = new NixStoreFixture(t);
    const dir = makeTempDir(t);
    const key = SecretKey.generate('niche-made-1');
    const keyFile = join(dir, 'niche-key');
    writeFileSync(keyFile, key.toString());
    const { drv, text } = await fixture.instantiate();
    for (const path of [drv, text]) {
      await fixture.nix([
        'store',
        'sign',
        ...(path.endsWith('.drv') ? ['--derivation'] : []),
        '--key-file',
        keyFile,
        path,
      ]);
      const info = await fixture.pathInfo(path);
      const fields = {
        storePath: StorePath.parse(path),
        narHash: Hash.parsePrefixed(info.narHash),
        narSize: info.narSize,
        references: info.references.map((r) => StorePath.parse(r)),
      };
      assert.deepEqual(info.signatures, [signNarInfo(fields, key)], path);
      assert.equal(verifyNarInfo({ ...fields, signatures: info.signatures ?? [] }, [key.publicKey]), true);
    }
    // nix verifies our signature with our public key (CA paths would pass anyway; see the test below).
    await fixture.nix([
      'store',
      'verify',
      '--derivation',
      '--no-contents',
      '--trusted-public-keys',
      key.publicKey.toString(),
      '--sigs-needed',
      '1',
      drv,
    ]);
  });

  it(
    'substitutes a signed, input-addressed path from a cache that niche wrote',
    nixTestOptions(),
    async (t) => {
      const fixture = new NixStoreFixture(t);
      const dir = makeTempDir(t);
      const cache = join(dir, 'cache');
      mkdirSync(join(cache, 'nar'), { recursive: true });
      writeFileSync(
        join(cache, 'nix-cache-info'),
        formatCacheInfo({ storeDir: '/nix/store', wantMassQuery: true, priority: 30 }),
      );
      const tree = makeRichTree(join(dir, 'tree'));
      const nar = await buffer(narFromPath(tree));
      const narHash = Hash.sha256(nar);
      writeFileSync(join(cache, 'nar', narFileName(narHash.toNix32(), 'none')), nar);
      const key = SecretKey.generate('niche-cache-1');
      // Not content-addressed, so only a signature can make nix trust it.
      const storePath = StorePath.parse('/nix/store/x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1');
      const info: NarInfo = {
        storePath,
        url: `nar/${narFileName(narHash.toNix32(), 'none')}`,
        compression: 'none',
        fileHash: narHash,
        fileSize: nar.length,
        narHash,
        narSize: nar.length,
        references: [],
        deriver: undefined,
        system: undefined,
        signatures: [],
        ca: undefined,
      };
      info.signatures.push(signNarInfo(info, key));
      writeFileSync(join(cache, `${storePath.hash}.narinfo`), formatNarInfo(info));

      const copy = (trusted: string): Promise<string> =>
        fixture.nix([
          'copy',
          '--from',
          `file://${cache}`,
          '--trusted-public-keys',
          trusted,
          storePath.toString(),
        ]);
      await assert.rejects(
        copy(SecretKey.generate('niche-cache-1').publicKey.toString()),
        /lacks a valid signature|not signed by any of the keys/,
      );
      await copy(key.publicKey.toString());
      const copied = await fixture.pathInfo(storePath.toString());
      assert.equal(copied.narHash, narHash.toSri());
      assert.equal(copied.narSize, nar.length);
      assert.deepEqual(copied.signatures, info.signatures);
      assert.equal(copied.ca, undefined);
      const verify = (trusted: string) =>
        fixture.nix([
          'store',
          'verify',
          '--trusted-public-keys',
          trusted,
          '--sigs-needed',
          '1',
          storePath.toString(),
        ]);
      await verify(key.publicKey.toString());
      await assert.rejects(
        verify(SecretKey.generate('niche-cache-1').publicKey.toString()),
        /untrusted|signature/i,
      );
    },
  );
});
