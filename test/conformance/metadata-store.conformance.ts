// What every MetadataStore backend must do, written once and run against each (SQLite now, PostgreSQL
// later). A backend's own test file calls metadataStoreConformance with a factory that hands out a fresh,
// empty store per test. Where the interface leaves an error open, this suite pins the code niche expects.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';

import type {
  BuildLogRecord,
  GcRefRow,
  RealisationRecord,
  MetadataStore,
  NarRecord,
  NewToken,
  PathRecord,
} from '../../src/db/metadata-store.js';
import { ConflictError, isNicheError, type ErrorCode } from '../../src/errors.js';

export interface MetadataStoreFixture {
  readonly store: MetadataStore;
  cleanup(): Promise<void>;
}

/** A distinct nix32-looking string of the given length for each number. */
export function fakeHash(seed: number | string, length: number): string {
  const alphabet = '0123456789abcdfghijklmnpqrsvwxyz';
  let value = 7;
  if (typeof seed === 'number') value = seed;
  else
    for (let index = 0; index < seed.length; index += 1)
      value = (value * 31 + seed.charCodeAt(index)) % 2 ** 48;
  let out = '';
  for (let index = 0; index < length; index += 1) {
    out += alphabet[value % 32] ?? '0';
    value = Math.floor(value / 32);
  }
  return out;
}

/** addPath's `uploadedSince` when expiry is not what a test is about: no upload has expired. */
export const ANY_UPLOAD = new Date(0);

export function narRecord(seed: number | string): NarRecord {
  const fileHash = fakeHash(seed, 52);
  return {
    fileHash,
    fileSize: 123_456_789_012,
    compression: 'zstd',
    narHash: fakeHash(`nar-${seed}`, 52),
    narSize: 987_654_321_098,
    blobKey: `nar/${fileHash}`,
  };
}

export function pathRecord(
  seed: number | string,
  nar: NarRecord,
  overrides: Partial<PathRecord> = {},
): PathRecord {
  const hashPart = fakeHash(seed, 32);
  return {
    hashPart,
    storePath: `/nix/store/${hashPart}-hello-2.12`,
    fileHash: nar.fileHash,
    narHash: nar.narHash,
    narSize: nar.narSize,
    references: [
      `${fakeHash('zlib', 32)}-zlib-1.3`,
      `${hashPart}-hello-2.12`,
      `${fakeHash('glibc', 32)}-glibc-2.39`,
    ],
    deriver: `${fakeHash(`drv-${seed}`, 32)}-hello-2.12.drv`,
    ca: undefined,
    signatures: ['cache.example.org-1:c2lnbmF0dXJl'],
    createdAt: new Date(1_700_000_000_123),
    ...overrides,
  };
}

function pathBaseName(path: PathRecord): string {
  return path.storePath.slice(path.storePath.lastIndexOf('/') + 1);
}

async function assertCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isNicheError(error), `expected a NicheError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

function assertRecent(date: Date, before: number): void {
  assert.ok(date instanceof Date);
  assert.ok(date.getTime() >= before && date.getTime() <= Date.now(), `${date.toISOString()} is not recent`);
}

export function metadataStoreConformance(name: string, factory: () => Promise<MetadataStoreFixture>): void {
  void describe(`MetadataStore conformance: ${name}`, () => {
    let fixture: MetadataStoreFixture | undefined;
    const store = (): MetadataStore => {
      if (fixture === undefined) throw new Error('no store: beforeEach did not run');
      return fixture.store;
    };

    beforeEach(async () => {
      fixture = await factory();
    });
    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    });

    async function cache(cacheName: string, isPublic = true): Promise<number> {
      return (
        await store().createCache({
          name: cacheName,
          isPublic,
          priority: 40,
          storeDir: '/nix/store',
          upstreamKeys: [],
        })
      ).id;
    }

    void describe('ping', () => {
      void it('answers while open and fails with DATABASE_FAILURE once closed', async () => {
        await store().ping();
        await store().close();
        await assert.rejects(store().ping(), { code: 'DATABASE_FAILURE' });
      });
    });

    void describe('caches', () => {
      void it('creates, gets and lists caches', async () => {
        const before = Date.now();
        const created = await store().createCache({
          name: 'main',
          isPublic: true,
          priority: 30,
          storeDir: '/nix/store',
          upstreamKeys: [],
        });
        assert.equal(typeof created.id, 'number');
        assert.deepEqual(
          { ...created, createdAt: undefined },
          {
            id: created.id,
            name: 'main',
            isPublic: true,
            priority: 30,
            storeDir: '/nix/store',
            upstreamKeys: [],
            createdAt: undefined,
            retentionMs: undefined,
            maxSize: undefined,
          },
        );
        assertRecent(created.createdAt, before);
        const other = await store().createCache({
          name: 'private',
          isPublic: false,
          priority: 50,
          storeDir: '/gnu/store',
          upstreamKeys: ['cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='],
        });
        assert.notEqual(other.id, created.id);
        assert.deepEqual(await store().getCache('main'), created);
        assert.deepEqual(await store().getCache('private'), other);
        assert.equal(await store().getCache('missing'), undefined);
        const listed = await store().listCaches();
        assert.deepEqual(
          [...listed].sort((a, b) => a.id - b.id),
          [created, other].sort((a, b) => a.id - b.id),
        );
      });

      void it('updates only the given fields, and deletes a cache with its paths and keys', async () => {
        const id = await cache('main');
        const other = await cache('other');
        const updated = await store().updateCache(id, { priority: 10, upstreamKeys: ['k-1:AAAA'] });
        assert.equal(updated.priority, 10);
        assert.deepEqual(updated.upstreamKeys, ['k-1:AAAA']);
        assert.equal(updated.isPublic, true);
        assert.deepEqual(await store().getCache('main'), updated);
        const privatised = await store().updateCache(id, { isPublic: false });
        assert.equal(privatised.isPublic, false);
        assert.equal(privatised.priority, 10);
        await assertCode(store().updateCache(999_999, { priority: 1 }), 'CACHE_NOT_FOUND');

        await store().addSigningKey(id, { name: 'k-1', secretKey: 'k-1:AAAA', publicKey: 'k-1:BBBB' });
        const nar = narRecord(7);
        await store().recordNarUpload(id, nar, new Date());
        await store().recordNarUpload(other, nar, new Date());
        await store().addPath(id, pathRecord(7, nar), ANY_UPLOAD);
        await store().addPath(other, pathRecord(7, nar), ANY_UPLOAD);
        assert.equal(await store().deleteCache(id), true);
        assert.equal(await store().deleteCache(id), false);
        assert.equal(await store().getCache('main'), undefined);
        assert.deepEqual(await store().listSigningKeys(id), []);
        // The other cache, and the NAR it shares, are untouched.
        assert.deepEqual((await store().getPath(other, pathRecord(7, nar).hashPart))?.nar, nar);
      });

      void it('creates a cache together with its first key', async () => {
        const initialKey = { name: 'first-1', secretKey: 'first-1:cw==', publicKey: 'first-1:cA==' };
        const created = await store().createCache({
          name: 'keyed',
          isPublic: true,
          priority: 40,
          storeDir: '/nix/store',
          upstreamKeys: [],
          initialKey,
        });
        const keys = await store().listSigningKeys(created.id);
        assert.deepEqual(
          keys.map((key) => ({ name: key.name, secretKey: key.secretKey, publicKey: key.publicKey })),
          [initialKey],
        );
        // A losing duplicate leaves no stray key behind.
        await assertCode(
          store().createCache({
            name: 'keyed',
            isPublic: true,
            priority: 40,
            storeDir: '/nix/store',
            upstreamKeys: [],
            initialKey: { ...initialKey, name: 'second-1' },
          }),
          'CACHE_EXISTS',
        );
        assert.equal((await store().listSigningKeys(created.id)).length, 1);
      });

      void it('rejects a duplicate cache name with CACHE_EXISTS', async () => {
        await cache('main');
        await assert.rejects(
          store().createCache({
            name: 'main',
            isPublic: false,
            priority: 1,
            storeDir: '/nix/store',
            upstreamKeys: [],
          }),
          (error: unknown) => error instanceof ConflictError && error.code === 'CACHE_EXISTS',
        );
        assert.equal((await store().listCaches()).length, 1);
        assert.equal((await store().getCache('main'))?.isPublic, true);
      });
    });

    void describe('signing keys', () => {
      void it('adds keys and lists them oldest first, per cache', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const before = Date.now();
        const first = await store().addSigningKey(a, {
          name: 'a-1',
          secretKey: 'a-1:c2VjcmV0MQ==',
          publicKey: 'a-1:cHViMQ==',
        });
        const second = await store().addSigningKey(a, {
          name: 'a-2',
          secretKey: 'a-2:c2VjcmV0Mg==',
          publicKey: 'a-2:cHViMg==',
        });
        assert.deepEqual(
          { ...first, id: 0, createdAt: undefined },
          {
            id: 0,
            cacheId: a,
            name: 'a-1',
            secretKey: 'a-1:c2VjcmV0MQ==',
            publicKey: 'a-1:cHViMQ==',
            createdAt: undefined,
            retiredAt: undefined,
          },
        );
        assertRecent(first.createdAt, before);
        assert.deepEqual(await store().listSigningKeys(a), [first, second]);
        assert.deepEqual(await store().listSigningKeys(b), []);
      });

      void it('allows a key name once per cache', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const key = { name: 'shared-1', secretKey: 'shared-1:cw==', publicKey: 'shared-1:cA==' };
        await store().addSigningKey(a, key);
        await assertCode(store().addSigningKey(a, key), 'KEY_EXISTS');
        await store().addSigningKey(b, key);
        assert.equal((await store().listSigningKeys(a)).length, 1);
        assert.equal((await store().listSigningKeys(b)).length, 1);
      });

      void it('rejects a key for a missing cache with CACHE_NOT_FOUND', async () => {
        await assertCode(
          store().addSigningKey(999_999, { name: 'k', secretKey: 'k:cw==', publicKey: 'k:cA==' }),
          'CACHE_NOT_FOUND',
        );
      });
    });

    void describe('tokens', () => {
      const token: NewToken = {
        description: 'CI for the main cache',
        tokenHash: 'a'.repeat(64),
        scopes: [
          { cachePattern: 'main', permissions: ['pull', 'push'] },
          { cachePattern: 'team-*', permissions: ['pull'] },
          { cachePattern: '*', permissions: ['server-admin', 'cache-admin', 'delete'] },
        ],
        expiresAt: new Date(1_900_000_000_777),
      };

      void it('creates a token and finds it by hash with scopes in order', async () => {
        const before = Date.now();
        const created = await store().createToken(token);
        assert.equal(typeof created.id, 'number');
        assert.equal(created.description, token.description);
        assert.equal(created.tokenHash, token.tokenHash);
        assert.deepEqual(created.scopes, token.scopes);
        assert.deepEqual(created.expiresAt, token.expiresAt);
        assert.equal(created.revokedAt, undefined);
        assertRecent(created.createdAt, before);
        assert.deepEqual(await store().findTokenByHash(token.tokenHash), created);
        assert.equal(await store().findTokenByHash('b'.repeat(64)), undefined);
      });

      void it('stores a token without expiry or scopes', async () => {
        const created = await store().createToken({
          description: '',
          tokenHash: 'c'.repeat(64),
          scopes: [],
          expiresAt: undefined,
        });
        const found = await store().findTokenByHash('c'.repeat(64));
        assert.deepEqual(found, created);
        assert.equal(found.expiresAt, undefined);
        assert.deepEqual(found.scopes, []);
      });

      void it('lists tokens with their own scopes', async () => {
        const first = await store().createToken(token);
        const second = await store().createToken({
          description: 'read only',
          tokenHash: 'd'.repeat(64),
          scopes: [{ cachePattern: 'other', permissions: ['pull'] }],
          expiresAt: undefined,
        });
        const listed = await store().listTokens();
        assert.deepEqual(
          [...listed].sort((x, y) => x.id - y.id),
          [first, second],
        );
      });

      void it('revokes a token once', async () => {
        const created = await store().createToken(token);
        const at = new Date(1_800_000_000_001);
        assert.equal(await store().revokeToken(created.id, at), true);
        assert.deepEqual((await store().findTokenByHash(token.tokenHash))?.revokedAt, at);
        assert.equal(await store().revokeToken(created.id, new Date()), false);
        assert.deepEqual((await store().findTokenByHash(token.tokenHash))?.revokedAt, at);
        assert.equal(await store().revokeToken(created.id + 1000, at), false);
      });

      void it('finds an SSH key by fingerprint: the newest unrevoked record, with its key', async () => {
        const sshKey = { fingerprint: 'SHA256:abc', publicKey: 'ssh-ed25519 AAAA' };
        const plain = await store().createToken(token);
        assert.equal(plain.sshKey, undefined);
        assert.equal(await store().findTokenBySshKey('SHA256:abc'), undefined);
        const first = await store().createToken({
          description: 'alice',
          tokenHash: 'e'.repeat(64),
          scopes: [{ cachePattern: 'team', permissions: ['pull', 'push'] }],
          expiresAt: undefined,
          sshKey,
        });
        assert.deepEqual(first.sshKey, sshKey);
        assert.deepEqual(await store().findTokenBySshKey('SHA256:abc'), first);
        assert.equal(await store().findTokenBySshKey('SHA256:other'), undefined);
        assert.equal(await store().revokeToken(first.id, new Date()), true);
        assert.equal(await store().findTokenBySshKey('SHA256:abc'), undefined);
        const second = await store().createToken({
          description: 'alice again',
          tokenHash: 'f'.repeat(64),
          scopes: [{ cachePattern: 'team', permissions: ['pull'] }],
          expiresAt: undefined,
          sshKey,
        });
        assert.deepEqual(await store().findTokenBySshKey('SHA256:abc'), second);
        const listed = (await store().listTokens()).find((record) => record.id === second.id);
        assert.deepEqual(listed, second);
      });
    });

    void describe('NAR uploads', () => {
      void it('shows a NAR only in the caches it was uploaded to', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        assert.deepEqual((await store().getNar(a, nar.fileHash))?.nar, nar);
        assert.equal(await store().getNar(b, nar.fileHash), undefined);
        assert.equal(await store().getNar(a, narRecord(2).fileHash), undefined);
        await store().recordNarUpload(a, nar, new Date());
        await store().recordNarUpload(b, nar, new Date());
        assert.deepEqual((await store().getNar(b, nar.fileHash))?.nar, nar);
      });

      void it('tells a pending upload (and when it was last recorded) from a published NAR', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date(1_000));
        assert.deepEqual(await store().getNar(a, nar.fileHash), {
          nar,
          published: false,
          uploadedAt: new Date(1_000),
        });
        // Uploading again refreshes the pending upload.
        await store().recordNarUpload(a, nar, new Date(5_000));
        assert.deepEqual((await store().getNar(a, nar.fileHash))?.uploadedAt, new Date(5_000));
        await store().addPath(a, pathRecord(1, nar), ANY_UPLOAD);
        assert.deepEqual(await store().getNar(a, nar.fileHash), {
          nar,
          published: true,
          uploadedAt: undefined,
        });
        // Published in one cache, pending in another.
        await store().recordNarUpload(b, nar, new Date(7_000));
        assert.deepEqual(await store().getNar(b, nar.fileHash), {
          nar,
          published: false,
          uploadedAt: new Date(7_000),
        });
        await store().recordNarUpload(a, nar, new Date(9_000));
        assert.deepEqual(await store().getNar(a, nar.fileHash), {
          nar,
          published: true,
          uploadedAt: new Date(9_000),
        });
      });

      void it('publishes a pending upload only if it was recorded since the given moment', async () => {
        const a = await cache('a');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date(1_000));
        await assertCode(store().addPath(a, pathRecord(1, nar), new Date(1_001)), 'NAR_NOT_UPLOADED');
        assert.equal(await store().getPath(a, pathRecord(1, nar).hashPart), undefined);
        assert.deepEqual(await store().addPath(a, pathRecord(1, nar), new Date(1_000)), { status: 'added' });
        // Once published, the NAR serves further paths whatever the bound.
        assert.deepEqual(await store().addPath(a, pathRecord(2, nar), new Date(10 ** 13)), {
          status: 'added',
        });
      });

      void it('deletes expired pending uploads, and only those', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const [old, fresh, published] = [narRecord(1), narRecord(2), narRecord(3)];
        await store().recordNarUpload(a, old, new Date(1_000));
        await store().recordNarUpload(b, old, new Date(1_500));
        await store().recordNarUpload(a, fresh, new Date(3_000));
        await store().recordNarUpload(a, published, new Date(1_000));
        await store().addPath(a, pathRecord(1, published), ANY_UPLOAD);
        assert.equal(await store().deleteExpiredUploads(new Date(2_000)), 2);
        assert.equal(await store().getNar(a, old.fileHash), undefined);
        assert.equal(await store().getNar(b, old.fileHash), undefined);
        assert.equal((await store().getNar(a, fresh.fileHash))?.published, false);
        assert.equal((await store().getNar(a, published.fileHash))?.published, true);
        await assertCode(store().addPath(a, pathRecord(2, old), ANY_UPLOAD), 'NAR_NOT_UPLOADED');
        assert.equal(await store().deleteExpiredUploads(new Date(2_000)), 0);
        // The NAR record itself stays (GC's business): a new upload of the same file attaches it again.
        assert.deepEqual(
          await store().recordNarUpload(a, { ...old, blobKey: 'nar/again' }, new Date(4_000)),
          old,
        );
      });

      void it('rejects an upload to a missing cache with CACHE_NOT_FOUND', async () => {
        await assertCode(store().recordNarUpload(999_999, narRecord(1), new Date()), 'CACHE_NOT_FOUND');
      });
    });

    void describe('paths', () => {
      void it('adds a path and returns exactly what was stored', async () => {
        const a = await cache('a');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        const path = pathRecord(1, nar, {
          references: ['zzz-last-but-given-first', 'aaa-first'],
          signatures: ['k2:b', 'k1:a'],
        });
        assert.deepEqual(await store().addPath(a, path, ANY_UPLOAD), { status: 'added' });
        assert.deepEqual(await store().getPath(a, path.hashPart), {
          path,
          nar,
          lastAccessAt: path.createdAt,
        });
      });

      void it('returns undefined, not null, for a missing deriver and ca, and keeps empty lists', async () => {
        const a = await cache('a');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        const bare = pathRecord(1, nar, {
          deriver: undefined,
          ca: undefined,
          references: [],
          signatures: [],
        });
        await store().addPath(a, bare, ANY_UPLOAD);
        const got = await store().getPath(a, bare.hashPart);
        assert.ok(got);
        // Strict deep equality also tells a missing key, or null, from a key holding undefined.
        assert.deepEqual(got.path, bare);
        assert.ok(Object.hasOwn(got.path, 'deriver') && got.path.deriver === undefined);
        assert.ok(Object.hasOwn(got.path, 'ca') && got.path.ca === undefined);

        const nar2 = narRecord(2);
        await store().recordNarUpload(a, nar2, new Date());
        const withCa = pathRecord(2, nar2, {
          ca: `fixed:r:sha256:${fakeHash('ca', 52)}`,
          deriver: undefined,
        });
        await store().addPath(a, withCa, ANY_UPLOAD);
        assert.deepEqual((await store().getPath(a, withCa.hashPart))?.path, withCa);
      });

      void it('keeps the first path for a hash part and reports it', async () => {
        const a = await cache('a');
        const nar = narRecord(1);
        const nar2 = narRecord(2);
        await store().recordNarUpload(a, nar, new Date());
        await store().recordNarUpload(a, nar2, new Date());
        const path = pathRecord(1, nar);
        await store().addPath(a, path, ANY_UPLOAD);
        const rival = pathRecord(1, nar2, { signatures: [] });
        assert.deepEqual(await store().addPath(a, rival, ANY_UPLOAD), { status: 'exists', existing: path });
        assert.deepEqual(await store().getPath(a, path.hashPart), {
          path,
          nar,
          lastAccessAt: path.createdAt,
        });
      });

      void it('scopes paths to their cache', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        await store().recordNarUpload(b, nar, new Date());
        const path = pathRecord(1, nar);
        await store().addPath(a, path, ANY_UPLOAD);
        assert.equal(await store().getPath(b, path.hashPart), undefined);
        const inB = pathRecord(1, nar, { signatures: ['b-1:c2ln'] });
        assert.deepEqual(await store().addPath(b, inB, ANY_UPLOAD), { status: 'added' });
        assert.deepEqual((await store().getPath(a, path.hashPart))?.path, path);
        assert.deepEqual((await store().getPath(b, path.hashPart))?.path, inB);
      });

      void it('keeps a NAR visible through its path once the upload is detached', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        await store().addPath(a, pathRecord(1, nar), ANY_UPLOAD);
        assert.deepEqual((await store().getNar(a, nar.fileHash))?.nar, nar);
        assert.equal(await store().getNar(b, nar.fileHash), undefined);
        // A second path with the same NAR: the upload is gone, but the first path still attaches it.
        assert.deepEqual(await store().addPath(a, pathRecord(2, nar), ANY_UPLOAD), { status: 'added' });
      });

      void it('refuses a path whose NAR was not uploaded to the cache with NAR_NOT_UPLOADED', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        await assertCode(store().addPath(b, pathRecord(1, nar), ANY_UPLOAD), 'NAR_NOT_UPLOADED');
        await assertCode(store().addPath(a, pathRecord(2, narRecord(99)), ANY_UPLOAD), 'NAR_NOT_UPLOADED');
        assert.equal(await store().getPath(b, pathRecord(1, nar).hashPart), undefined);
        assert.equal(await store().getPath(a, pathRecord(2, nar).hashPart), undefined);
      });

      void it('finds which of 5000 base names are present', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        await store().recordNarUpload(b, nar, new Date());
        const present = new Set<string>();
        for (let index = 0; index < 5000; index += 97) {
          const path = pathRecord(index, nar);
          await store().addPath(a, path, ANY_UPLOAD);
          present.add(pathBaseName(path));
        }
        const inB = pathBaseName(pathRecord(100_000, nar));
        await store().addPath(b, pathRecord(100_000, nar), ANY_UPLOAD);
        const queried = Array.from({ length: 5000 }, (_, index) => pathBaseName(pathRecord(index, nar)));
        queried.push(inB, pathBaseName(pathRecord(0, nar)));
        assert.equal(present.size, 52);
        assert.deepEqual(await store().findPresentBaseNames(a, queried), present);
        assert.deepEqual(await store().findPresentBaseNames(b, queried), new Set([inB]));
        assert.deepEqual(await store().findPresentBaseNames(a, []), new Set());
      });

      void it('counts a path as present only under exactly its base name', async () => {
        const a = await cache('a');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        const hash = fakeHash(1, 32);
        // A name that contains another valid base name: only the whole of it is the path.
        await store().addPath(
          a,
          pathRecord(1, nar, { storePath: `/nix/store/${hash}-x-${hash}-hello` }),
          ANY_UPLOAD,
        );
        const queried = [
          `${hash}-x-${hash}-hello`,
          `${hash}-hello`,
          `${hash}-x`,
          `${hash}-x-${hash}-hello2`,
          `${hash}-X-${hash}-hello`,
          `${fakeHash(2, 32)}-x-${hash}-hello`,
        ];
        assert.deepEqual(await store().findPresentBaseNames(a, queried), new Set([queried[0]]));
      });

      void it("lists a cache's paths in pages ordered by hash part", async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        await store().recordNarUpload(b, nar, new Date());
        const expected: string[] = [];
        for (let index = 0; index < 25; index += 1) {
          const path = pathRecord(index, nar);
          await store().addPath(a, path, ANY_UPLOAD);
          expected.push(path.hashPart);
        }
        await store().addPath(b, pathRecord(1000, nar), ANY_UPLOAD);
        expected.sort();
        const seen: string[] = [];
        let after: string | undefined;
        for (;;) {
          const page = await store().listPaths(a, after === undefined ? { limit: 10 } : { after, limit: 10 });
          if (page.length === 0) break;
          assert.ok(page.length <= 10);
          for (const entry of page) assert.deepEqual(entry.nar, nar);
          seen.push(...page.map((entry) => entry.path.hashPart));
          after = page.at(-1)?.path.hashPart;
        }
        assert.deepEqual(seen, expected);
        assert.equal((await store().listPaths(b, { limit: 100 })).length, 1);
      });

      void it('lists only the hash parts that start with a prefix, in pages', async () => {
        const a = await cache('a');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        const all: string[] = [];
        for (let index = 0; index < 40; index += 1) {
          const path = pathRecord(index * 7, nar);
          await store().addPath(a, path, ANY_UPLOAD);
          all.push(path.hashPart);
        }
        all.sort();
        const prefix = all[5]?.slice(0, 1) ?? '';
        const expected = all.filter((hashPart) => hashPart.startsWith(prefix));
        assert.ok(expected.length > 1 && expected.length < all.length);
        const seen: string[] = [];
        let after: string | undefined;
        for (;;) {
          const page = await store().listPaths(a, { after, hashPrefix: prefix, limit: 1 });
          if (page.length === 0) break;
          seen.push(...page.map((entry) => entry.path.hashPart));
          after = page.at(-1)?.path.hashPart;
        }
        assert.deepEqual(seen, expected);
        assert.deepEqual(
          (await store().listPaths(a, { hashPrefix: all[3], limit: 10 })).map((entry) => entry.path.hashPart),
          [all[3]],
        );
        assert.deepEqual(await store().listPaths(a, { hashPrefix: 'e', limit: 10 }), []);
      });

      void it('finds paths by name prefix in name then hash order, in pages', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        await store().recordNarUpload(b, nar, new Date());
        const tricky = fakeHash(9, 32);
        const names: [number, string][] = [
          [1, 'hello-2.12'],
          [2, 'hello-2.12'],
          [3, 'hello-2.12'],
          [4, 'hello'],
          [5, 'hello-2.13'],
          [6, 'Hello-9'],
          [7, 'help2man-1.49'],
          [8, 'glibc-2.39'],
          [9, `x-${tricky}-hello`],
          [10, 'hello+ext'],
        ];
        for (const [seed, name] of names) {
          const hashPart = fakeHash(seed, 32);
          await store().addPath(
            a,
            pathRecord(seed, nar, { storePath: `/nix/store/${hashPart}-${name}` }),
            ANY_UPLOAD,
          );
        }
        await store().addPath(b, pathRecord(100, nar), ANY_UPLOAD);
        const expected = (prefix: string): string[] =>
          names
            .filter(([, name]) => name.startsWith(prefix))
            .map(([seed, name]) => ({ name, hashPart: fakeHash(seed, 32) }))
            // Byte order, as the stores compare: name first, then hash part.
            .sort((x, y) =>
              x.name === y.name ? (x.hashPart < y.hashPart ? -1 : 1) : x.name < y.name ? -1 : 1,
            )
            .map(({ name, hashPart }) => `${hashPart}-${name}`);
        const walk = async (prefix: string, limit: number): Promise<string[]> => {
          const seen: string[] = [];
          let after: { name: string; hashPart: string } | undefined;
          for (;;) {
            const page = await store().findPathsByName(a, { prefix, after, limit });
            assert.ok(page.length <= limit);
            if (page.length === 0) return seen;
            for (const entry of page) assert.deepEqual(entry.nar, nar);
            const baseNames = page.map((entry) => entry.path.storePath.slice('/nix/store/'.length));
            seen.push(...baseNames);
            const last = baseNames.at(-1) ?? '';
            after = { name: last.slice(33), hashPart: last.slice(0, 32) };
          }
        };
        for (const prefix of ['hel', 'hello-2.12', 'hello', 'H', 'x-', '', 'zz', 'hello+']) {
          assert.deepEqual(await walk(prefix, 2), expected(prefix), `prefix ${prefix}`);
        }
        assert.deepEqual(await walk('hello-2.12', 1), expected('hello-2.12'));
        assert.equal(expected('hel').length, 7);
        assert.deepEqual(await walk('', 100), expected(''));
        assert.equal((await store().findPathsByName(b, { prefix: 'hello', limit: 10 })).length, 1);
      });

      void it('finds referrers and deletes paths', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        await store().recordNarUpload(b, nar, new Date());
        const dep = pathRecord(1, nar);
        const top = {
          ...pathRecord(2, nar),
          references: [pathBaseName(dep), pathBaseName(pathRecord(2, nar))],
        };
        const sibling = { ...pathRecord(3, nar), references: [pathBaseName(dep)] };
        for (const path of [dep, top, sibling]) await store().addPath(a, path, ANY_UPLOAD);
        await store().addPath(b, { ...pathRecord(4, nar), references: [pathBaseName(dep)] }, ANY_UPLOAD);
        assert.deepEqual(
          await store().findReferrers(a, dep.hashPart, 10),
          [top.hashPart, sibling.hashPart].sort(),
        );
        assert.deepEqual((await store().findReferrers(a, dep.hashPart, 1)).length, 1);
        assert.deepEqual(await store().findReferrers(a, top.hashPart, 10), []); // self-reference excluded
        assert.equal(await store().deletePath(a, top.hashPart), true);
        assert.equal(await store().deletePath(a, top.hashPart), false);
        assert.equal(await store().getPath(a, top.hashPart), undefined);
        assert.deepEqual(await store().findReferrers(a, dep.hashPart, 10), [sibling.hashPart]);
        // The NAR stays recorded (GC's job) and reachable through the remaining paths.
        assert.deepEqual((await store().getNar(a, nar.fileHash))?.nar, nar);
      });

      void it('returns the earlier record when a NAR is recorded twice', async () => {
        const a = await cache('a');
        const first = narRecord(5);
        assert.deepEqual(await store().recordNarUpload(a, first, new Date()), first);
        const again = { ...first, blobKey: 'nar/elsewhere' };
        assert.deepEqual(await store().recordNarUpload(a, again, new Date()), first);
      });

      void it('appends only new signatures, in order', async () => {
        const a = await cache('a');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        const path = pathRecord(1, nar, { signatures: ['k1:a'] });
        await store().addPath(a, path, ANY_UPLOAD);
        await store().addSignatures(a, path.hashPart, ['k1:a', 'k2:b', 'k2:b']);
        assert.deepEqual((await store().getPath(a, path.hashPart))?.path.signatures, ['k1:a', 'k2:b']);
        await store().addSignatures(a, path.hashPart, ['k3:c', 'k1:a']);
        assert.deepEqual((await store().getPath(a, path.hashPart))?.path.signatures, [
          'k1:a',
          'k2:b',
          'k3:c',
        ]);
        await store().addSignatures(a, path.hashPart, []);
        assert.deepEqual((await store().getPath(a, path.hashPart))?.path.signatures, [
          'k1:a',
          'k2:b',
          'k3:c',
        ]);
      });

      void it('rejects signatures for a missing path with NOT_FOUND', async () => {
        const a = await cache('a');
        await assertCode(store().addSignatures(a, fakeHash(1, 32), ['k:a']), 'NOT_FOUND');
      });
    });

    void describe('realisations', () => {
      const id = `sha256:${'ab'.repeat(32)}!out`;
      function realisation(overrides: Partial<RealisationRecord> = {}): RealisationRecord {
        return {
          id,
          outPath: `${fakeHash('ca-out', 32)}-hello-2.12`,
          dependentRealisations: { [`sha256:${'cd'.repeat(32)}!dev`]: `${fakeHash('dep', 32)}-dep` },
          signatures: ['k2:b', 'k1:a'],
          createdAt: new Date(1_700_000_000_789),
          ...overrides,
        };
      }

      void it('adds a realisation once and returns exactly what was stored', async () => {
        const a = await cache('a');
        const b = await cache('b');
        assert.equal(await store().getRealisation(a, id), undefined);
        assert.deepEqual(await store().addRealisation(a, realisation()), { status: 'added' });
        assert.deepEqual(await store().getRealisation(a, id), realisation());
        assert.equal(await store().getRealisation(b, id), undefined);
        const other = realisation({
          outPath: `${fakeHash('other', 32)}-hello-2.12`,
          dependentRealisations: {},
        });
        assert.deepEqual(await store().addRealisation(a, other), {
          status: 'exists',
          existing: realisation(),
        });
        assert.deepEqual(await store().getRealisation(a, id), realisation());
        const bare = realisation({ dependentRealisations: {}, signatures: [] });
        assert.deepEqual(await store().addRealisation(b, bare), { status: 'added' });
        assert.deepEqual(await store().getRealisation(b, id), bare);
      });

      void it('appends only new signatures, and refuses them for a missing realisation', async () => {
        const a = await cache('a');
        await store().addRealisation(a, realisation());
        await store().addRealisationSignatures(a, id, ['k1:a', 'k3:c', 'k3:c']);
        assert.deepEqual((await store().getRealisation(a, id))?.signatures, ['k2:b', 'k1:a', 'k3:c']);
        await assertCode(
          store().addRealisationSignatures(a, `sha256:${'00'.repeat(32)}!out`, ['k:a']),
          'NOT_FOUND',
        );
      });

      void it('rejects a realisation for a missing cache with CACHE_NOT_FOUND', async () => {
        await assertCode(store().addRealisation(987_654, realisation()), 'CACHE_NOT_FOUND');
      });

      void it('deletes the realisations of an out path, and all of a deleted cache', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const second = realisation({ id: `sha256:${'ef'.repeat(32)}!out` });
        const elsewhere = realisation({
          id: `sha256:${'12'.repeat(32)}!out`,
          outPath: `${fakeHash('x', 32)}-x`,
        });
        await store().addRealisation(a, realisation());
        await store().addRealisation(a, second);
        await store().addRealisation(a, elsewhere);
        await store().addRealisation(b, realisation());
        assert.equal(await store().deleteRealisationsOf(a, [realisation().outPath]), 2);
        assert.equal(await store().getRealisation(a, id), undefined);
        assert.deepEqual(await store().getRealisation(a, elsewhere.id), elsewhere);
        assert.deepEqual(await store().getRealisation(b, id), realisation());
        assert.equal(await store().deleteRealisationsOf(a, [realisation().outPath]), 0);
        assert.equal(await store().deleteRealisationsOf(a, []), 0);
        await store().deleteCache(b);
        assert.equal(await store().getRealisation(b, id), undefined);
      });
    });

    void describe('build logs', () => {
      function buildLog(
        drv: string,
        blobKey: string,
        overrides: Partial<BuildLogRecord> = {},
      ): BuildLogRecord {
        return {
          drv,
          blobKey,
          compression: 'zstd',
          size: 9_876_543_210,
          storedSize: 123_456,
          createdAt: new Date(1_700_000_000_456),
          ...overrides,
        };
      }
      const drv = `${fakeHash('drv', 32)}-hello-2.12.drv`;

      void it('stores a log per cache and derivation and returns exactly what was stored', async () => {
        const a = await cache('a');
        const b = await cache('b');
        assert.equal(await store().getBuildLog(a, drv), undefined);
        const log = buildLog(drv, 'log/one');
        assert.equal(await store().putBuildLog(a, log), undefined);
        assert.deepEqual(await store().getBuildLog(a, drv), log);
        assert.equal(await store().getBuildLog(b, drv), undefined);
        assert.equal(await store().getBuildLog(a, `${fakeHash('other', 32)}-x.drv`), undefined);
      });

      void it('replaces a log and returns the replaced blob key', async () => {
        const a = await cache('a');
        await store().putBuildLog(a, buildLog(drv, 'log/one'));
        const second = buildLog(drv, 'log/two', { compression: 'none', size: 5, storedSize: 5 });
        assert.equal(await store().putBuildLog(a, second), 'log/one');
        assert.deepEqual(await store().getBuildLog(a, drv), second);
        assert.deepEqual(await store().listBuildLogBlobKeys(a), ['log/two']);
      });

      void it('rejects a log for a missing cache with CACHE_NOT_FOUND', async () => {
        await assertCode(store().putBuildLog(987_654, buildLog(drv, 'log/x')), 'CACHE_NOT_FOUND');
      });

      void it('lists the blob keys of a cache, and deleting the cache deletes its logs', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const other = `${fakeHash('other', 32)}-x.drv`;
        await store().putBuildLog(a, buildLog(drv, 'log/a1'));
        await store().putBuildLog(a, buildLog(other, 'log/a2'));
        await store().putBuildLog(b, buildLog(drv, 'log/b1'));
        assert.deepEqual((await store().listBuildLogBlobKeys(a)).sort(), ['log/a1', 'log/a2']);
        assert.equal(await store().deleteCache(a), true);
        assert.deepEqual(await store().listBuildLogBlobKeys(a), []);
        assert.equal(await store().getBuildLog(a, drv), undefined);
        assert.deepEqual(await store().getBuildLog(b, drv), buildLog(drv, 'log/b1'));
      });

      void it('deletes a log only once no path of the cache names its derivation', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord(1);
        await store().recordNarUpload(a, nar, new Date());
        await store().recordNarUpload(b, nar, new Date());
        const out = pathRecord('out', nar, { deriver: drv, references: [] });
        const dev = pathRecord('dev', nar, { deriver: drv, references: [] });
        await store().addPath(a, out, ANY_UPLOAD);
        await store().addPath(a, dev, ANY_UPLOAD);
        await store().addPath(b, pathRecord('b', nar, { deriver: drv, references: [] }), ANY_UPLOAD);
        await store().putBuildLog(a, buildLog(drv, 'log/a'));

        assert.deepEqual(await store().deleteUnusedBuildLogs(a, [drv]), []);
        await store().deletePath(a, out.hashPart);
        assert.deepEqual(await store().deleteUnusedBuildLogs(a, [drv]), []);
        await store().deletePath(a, dev.hashPart);
        // Cache b's path names the same derivation; it does not keep cache a's log.
        assert.deepEqual(await store().deleteUnusedBuildLogs(a, [drv]), ['log/a']);
        assert.equal(await store().getBuildLog(a, drv), undefined);
        assert.deepEqual(await store().deleteUnusedBuildLogs(a, [drv]), []);
        assert.deepEqual(await store().deleteUnusedBuildLogs(a, []), []);
      });
    });

    void describe('lifecycle', () => {
      /** Adds a path with the given references (base names of other paths added this way). */
      async function add(
        cacheId: number,
        seed: string,
        options: { references?: string[]; nar?: NarRecord; at?: Date } = {},
      ): Promise<PathRecord> {
        const nar = options.nar ?? narRecord(seed);
        await store().recordNarUpload(cacheId, nar, new Date());
        const path = pathRecord(seed, nar, {
          references: options.references ?? [],
          deriver: undefined,
          createdAt: options.at ?? new Date(1_700_000_000_000),
        });
        assert.deepEqual(await store().addPath(cacheId, path, ANY_UPLOAD), { status: 'added' });
        return path;
      }
      const base = (path: PathRecord): string => pathBaseName(path);
      const small = (seed: string, fileSize: number): NarRecord => ({
        ...narRecord(seed),
        fileSize,
        narSize: fileSize * 2,
      });

      void it('keeps usage counters: paths, NAR bytes, stored bytes with shared files once, last push', async () => {
        const a = await cache('a');
        const b = await cache('b');
        assert.deepEqual(await store().getCacheUsage(a), {
          paths: 0,
          narBytes: 0,
          storedBytes: 0,
          lastPushAt: undefined,
        });
        const shared = small('shared', 100);
        const one = await add(a, 'one', { nar: shared, at: new Date(1000) });
        const two = await add(a, 'two', { nar: shared, at: new Date(3000) });
        await add(a, 'three', { nar: small('three', 10), at: new Date(2000) });
        await add(b, 'four', { nar: shared });
        assert.deepEqual(await store().getCacheUsage(a), {
          paths: 3,
          narBytes: 420,
          storedBytes: 110,
          lastPushAt: new Date(3000),
        });
        assert.equal((await store().getCacheUsage(b)).storedBytes, 100);
        await store().deletePath(a, one.hashPart);
        assert.deepEqual(
          { ...(await store().getCacheUsage(a)), lastPushAt: undefined },
          {
            paths: 2,
            narBytes: 220,
            storedBytes: 110,
            lastPushAt: undefined,
          },
        );
        await store().deletePath(a, two.hashPart);
        assert.equal((await store().getCacheUsage(a)).storedBytes, 10);
        assert.equal(await store().deleteCache(a), true);
        await assertCode(store().getCacheUsage(a), 'CACHE_NOT_FOUND');
        assert.equal((await store().getCacheUsage(b)).paths, 1);
      });

      void it('keeps usage counters when one call removes several paths, some sharing a NAR file', async () => {
        const a = await cache('a');
        const shared = small('shared', 100);
        const one = await add(a, 'one', { nar: shared });
        const two = await add(a, 'two', { nar: shared });
        const three = await add(a, 'three', { nar: shared });
        const four = await add(a, 'four', { nar: small('four', 10) });
        const five = await add(a, 'five', { nar: small('five', 7) });
        assert.equal((await store().getCacheUsage(a)).storedBytes, 117);
        const later = new Date(2_000_000_000_000);
        // Two of the three paths of the shared file and one path of its own: the shared file stays stored.
        const removed = await store().deletePathsIfUnused(
          a,
          [one, two, four].map((path) => ({ hashPart: path.hashPart })),
          later,
        );
        assert.equal(removed.length, 3);
        assert.deepEqual(
          { ...(await store().getCacheUsage(a)), lastPushAt: undefined },
          { paths: 2, narBytes: 200 + 14, storedBytes: 107, lastPushAt: undefined },
        );
        await store().deletePathsIfUnused(
          a,
          [three, five].map((path) => ({ hashPart: path.hashPart })),
          later,
        );
        assert.deepEqual(
          { ...(await store().getCacheUsage(a)), lastPushAt: undefined },
          { paths: 0, narBytes: 0, storedBytes: 0, lastPushAt: undefined },
        );
      });

      void it('sets and clears retention and quota', async () => {
        const a = await cache('a');
        const set = await store().updateCache(a, { retentionMs: 86_400_000, maxSize: 5_000_000 });
        assert.equal(set.retentionMs, 86_400_000);
        assert.equal(set.maxSize, 5_000_000);
        const other = await store().updateCache(a, { priority: 10 });
        assert.equal(other.retentionMs, 86_400_000);
        const cleared = await store().updateCache(a, { retentionMs: null });
        assert.equal(cleared.retentionMs, undefined);
        assert.equal(cleared.maxSize, 5_000_000);
        assert.equal((await store().getCache('a'))?.maxSize, 5_000_000);
      });

      void it('records accesses by path and by NAR file, only ever forward', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const shared = small('shared', 1);
        const one = await add(a, 'one', { nar: shared, at: new Date(1000) });
        const two = await add(a, 'two', { nar: shared, at: new Date(1000) });
        const other = await add(b, 'other', { nar: shared, at: new Date(1000) });
        const lastAccess = async (cacheId: number, hashPart: string): Promise<number | undefined> =>
          (await store().scanGcPaths(cacheId, '', 100)).find((row) => row.hashPart === hashPart)?.lastAccess;
        assert.equal(await lastAccess(a, one.hashPart), 1000);
        await store().recordAccesses([
          { cacheId: a, hashPart: one.hashPart, at: 5000 },
          { cacheId: a, hashPart: fakeHash('nothing', 32), at: 5000 },
        ]);
        assert.equal(await lastAccess(a, one.hashPart), 5000);
        assert.equal(await lastAccess(a, two.hashPart), 1000);
        await store().recordAccesses([{ cacheId: a, hashPart: one.hashPart, at: 4000 }]);
        assert.equal(await lastAccess(a, one.hashPart), 5000, 'never backwards');
        await store().recordAccesses([{ cacheId: a, fileHash: shared.fileHash, at: 7000 }]);
        assert.equal(await lastAccess(a, one.hashPart), 7000);
        assert.equal(await lastAccess(a, two.hashPart), 7000);
        assert.equal(await lastAccess(b, other.hashPart), 1000, 'another cache is not touched');
        // Lookups carry the access time, so the service can skip writing a recent one again.
        assert.equal((await store().getPath(a, one.hashPart))?.lastAccessAt.getTime(), 7000);
        assert.equal((await store().getPath(b, other.hashPart))?.lastAccessAt.getTime(), 1000);
        const [listed] = await store().listPaths(b, { limit: 1 });
        assert.equal(listed?.lastAccessAt.getTime(), 1000);
      });

      void it('scans paths and references in pages', async () => {
        const a = await cache('a');
        const shared = small('shared', 7);
        const leaf = await add(a, 'leaf', { nar: shared });
        const twin = await add(a, 'twin', { nar: shared });
        const mid = await add(a, 'mid', { references: [base(leaf)] });
        const top = await add(a, 'top', {
          references: [base(mid), base(leaf), `${fakeHash('upstream', 32)}-glibc`],
        });
        const rows = [];
        for (let after = ''; ;) {
          const page = await store().scanGcPaths(a, after, 2);
          rows.push(...page);
          if (page.length < 2) break;
          after = page.at(-1)?.hashPart ?? '';
        }
        assert.deepEqual(
          rows.map((row) => row.hashPart),
          [leaf, twin, mid, top].map((path) => path.hashPart).sort(),
        );
        const byHash = new Map(rows.map((row) => [row.hashPart, row]));
        assert.equal(byHash.get(leaf.hashPart)?.sharesFile, true);
        assert.equal(byHash.get(twin.hashPart)?.fileSize, 7);
        assert.equal(byHash.get(mid.hashPart)?.sharesFile, false);
        const refs = [];
        for (let after: GcRefRow | undefined; ;) {
          const page = await store().scanGcRefs(a, after, 2);
          refs.push(...page);
          if (page.length < 2) break;
          after = page.at(-1);
        }
        const expected = [
          { hashPart: leaf.hashPart, referrer: mid.hashPart },
          { hashPart: leaf.hashPart, referrer: top.hashPart },
          { hashPart: mid.hashPart, referrer: top.hashPart },
          { hashPart: fakeHash('upstream', 32), referrer: top.hashPart },
        ].sort((x, y) => (x.hashPart + x.referrer < y.hashPart + y.referrer ? -1 : 1));
        assert.deepEqual(refs, expected);
      });

      void it('deletes unused paths atomically: referrers, pins and accesses keep a path', async () => {
        const a = await cache('a');
        const now = new Date(1_800_000_000_000);
        const leaf = await add(a, 'leaf', { at: new Date(1000) });
        const mid = await add(a, 'mid', { references: [base(leaf)], at: new Date(1000) });
        const top = await add(a, 'top', { references: [base(mid)], at: new Date(1000) });
        // A referrer later in the batch, or not in it, keeps the path.
        assert.deepEqual(await store().deletePathsIfUnused(a, [{ hashPart: leaf.hashPart }], now), []);
        assert.deepEqual(
          await store().deletePathsIfUnused(a, [{ hashPart: mid.hashPart }, { hashPart: top.hashPart }], now),
          [top],
        );
        // Accessed after the bound: kept.
        await store().recordAccesses([{ cacheId: a, hashPart: mid.hashPart, at: 9000 }]);
        assert.deepEqual(
          await store().deletePathsIfUnused(a, [{ hashPart: mid.hashPart, accessedAtMost: 8000 }], now),
          [],
        );
        // Pinned: kept until the pin expires.
        await store().putPin(a, {
          name: 'prod',
          hashPart: mid.hashPart,
          storePath: mid.storePath,
          createdAt: now,
          expiresAt: new Date(now.getTime() + 1000),
        });
        assert.deepEqual(await store().deletePathsIfUnused(a, [{ hashPart: mid.hashPart }], now), []);
        const later = new Date(now.getTime() + 2000);
        assert.deepEqual(
          await store().deletePathsIfUnused(
            a,
            [{ hashPart: mid.hashPart }, { hashPart: leaf.hashPart }],
            later,
          ),
          [{ ...mid }, leaf].map((path) => path),
        );
        assert.equal((await store().getCacheUsage(a)).paths, 0);
        assert.deepEqual(await store().deletePathsIfUnused(a, [{ hashPart: leaf.hashPart }], later), []);
      });

      void it('refuses a path whose required reference is gone, in the same transaction', async () => {
        const a = await cache('a');
        const leaf = await add(a, 'leaf');
        const nar = narRecord('top');
        await store().recordNarUpload(a, nar, new Date());
        const top = pathRecord('top', nar, { references: [base(leaf)] });
        await store().deletePath(a, leaf.hashPart);
        await assertCode(store().addPath(a, top, ANY_UPLOAD, [leaf.hashPart]), 'REFERENCE_MISSING');
        assert.equal(await store().getPath(a, top.hashPart), undefined);
        await add(a, 'leaf');
        assert.deepEqual(await store().addPath(a, top, ANY_UPLOAD, [leaf.hashPart]), { status: 'added' });
      });

      void it('creates, moves, lists and deletes pins of paths the cache holds', async () => {
        const a = await cache('a');
        const one = await add(a, 'one');
        const two = await add(a, 'two');
        const pin = (path: PathRecord, expiresAt?: Date) => ({
          name: 'prod',
          hashPart: path.hashPart,
          storePath: path.storePath,
          createdAt: new Date(5000),
          expiresAt,
        });
        await store().putPin(a, pin(one));
        await store().putPin(a, pin(two, new Date(9000)));
        assert.deepEqual(await store().listPins(a), [pin(two, new Date(9000))]);
        await assertCode(
          store().putPin(a, { ...pin(one), name: 'x', hashPart: fakeHash('absent', 32) }),
          'NOT_FOUND',
        );
        assert.equal(await store().deletePin(a, 'prod'), true);
        assert.equal(await store().deletePin(a, 'prod'), false);
        assert.deepEqual(await store().listPins(a), []);
      });

      void it('marks NAR files no path or upload uses and takes them once unused long enough', async () => {
        const a = await cache('a');
        const used = await add(a, 'used');
        const pending = narRecord('pending');
        await store().recordNarUpload(a, pending, new Date());
        const orphan = narRecord('orphan');
        await store().recordNarUpload(a, orphan, new Date(0));
        await store().deleteExpiredUploads(new Date(1));
        const gone = await add(a, 'gone');
        await store().deletePath(a, gone.hashPart);
        assert.deepEqual(
          await store().findUnusedNars([used.fileHash, pending.fileHash, orphan.fileHash, gone.fileHash]),
          new Set([orphan.fileHash, gone.fileHash]),
        );
        for (let after: string | undefined = ''; after !== undefined;) {
          after = await store().markUnusedNars(after, 1, new Date(10_000));
        }
        // Not unused long enough yet.
        assert.deepEqual(await store().takeUnusedNars(new Date(10_000), 10), []);
        // A later mark keeps the first time seen unused.
        for (let after: string | undefined = ''; after !== undefined;) {
          after = await store().markUnusedNars(after, 10, new Date(50_000));
        }
        // Used again since it was marked: not taken.
        await store().recordNarUpload(a, narRecord('gone'), new Date());
        const taken = await store().takeUnusedNars(new Date(20_000), 10);
        assert.deepEqual(taken, [orphan]);
        assert.deepEqual(await store().takeUnusedNars(new Date(20_000), 10), []);
        assert.deepEqual(
          (await store().listNars('', 10)).map((nar) => nar.fileHash),
          [used.fileHash, pending.fileHash, gone.fileHash].sort(),
        );
      });

      void it('finds blob keys that records name, paths by file, and deletes a NAR with its users', async () => {
        const a = await cache('a');
        const b = await cache('b');
        const nar = narRecord('n');
        const one = await add(a, 'one', { nar });
        await add(b, 'two', { nar });
        await store().putBuildLog(a, {
          drv: `${fakeHash('d', 32)}-x.drv`,
          blobKey: 'log/kept',
          compression: 'zstd',
          size: 10,
          storedSize: 5,
          createdAt: new Date(1000),
        });
        assert.deepEqual(
          await store().findKnownBlobKeys([nar.blobKey, 'log/kept', 'nar/stray', 'log/stray']),
          new Set([nar.blobKey, 'log/kept']),
        );
        assert.deepEqual(await store().findPathsByFile(a, nar.fileHash), [one.hashPart]);
        assert.equal(await store().deleteNar(nar.fileHash), true);
        assert.equal(await store().getPath(a, one.hashPart), undefined);
        assert.equal((await store().getCacheUsage(b)).paths, 0);
        assert.deepEqual(await store().listNars('', 10), []);
        assert.equal(await store().deleteNar(nar.fileHash), false);
      });

      void it('gives a lease to one holder at a time until it expires or is released', async () => {
        const t = (ms: number): Date => new Date(1_000_000 + ms);
        assert.equal(await store().acquireLease('gc', 'one', t(0), t(100)), true);
        assert.equal(await store().acquireLease('gc', 'two', t(50), t(150)), false);
        assert.equal(await store().acquireLease('gc', 'one', t(60), t(200)), true, 'renewed');
        assert.equal(await store().acquireLease('gc', 'two', t(150), t(250)), false);
        assert.equal(await store().acquireLease('gc', 'two', t(200), t(300)), true, 'expired');
        await store().releaseLease('gc', 'one');
        assert.equal(await store().acquireLease('gc', 'one', t(210), t(300)), false, 'not the holder');
        await store().releaseLease('gc', 'two');
        assert.equal(await store().acquireLease('gc', 'one', t(210), t(300)), true);
      });
    });
  });
}
