// The JSON API's behaviour: one-request uploads, the bulk presence check, deletion, key rotation,
// private caches and token revocation.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { UPLOAD_CONTENT_TYPE, type CacheInfo, type PathInfo, type PathUpload } from '../../src/api/v1.js';
import { narInfoFingerprint, parseNarInfo } from '../../src/nix/narinfo.js';
import { Hash } from '../../src/nix/hash.js';
import { PublicKey, SecretKey } from '../../src/nix/signing.js';
import { StorePath } from '../../src/nix/store-path.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { compress, fakeBaseName, narOfContents, sha256Nix32 } from '../helpers/nar-fixtures.js';

let t: TestServer;
let root: string;

async function api(
  method: string,
  path: string,
  body?: unknown,
  token: string | null = root,
): Promise<Response> {
  return fetch(`${t.url}/api/v1${path}`, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      // As niche's client does: every write declares JSON, even without a body.
      ...(method === 'GET' || method === 'DELETE' ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

interface Prepared {
  readonly base: string;
  readonly body: Buffer;
  readonly meta: PathUpload;
}

async function prepare(
  label: string,
  references: string[] = [],
  compression: 'zstd' | 'none' = 'zstd',
): Promise<Prepared> {
  const nar = await narOfContents(`contents of ${label}\n`);
  const base = fakeBaseName(label);
  const meta: PathUpload = {
    storePath: `/nix/store/${base}`,
    narHash: `sha256:${sha256Nix32(nar)}`,
    narSize: nar.length,
    references,
    signatures: [],
    compression,
  };
  const file = compression === 'none' ? nar : await compress(nar, compression);
  return { base, meta, body: Buffer.concat([Buffer.from(`${JSON.stringify(meta)}\n`), file]) };
}

async function upload(
  cache: string,
  prepared: Prepared,
  token: string = root,
  body: Buffer = prepared.body,
): Promise<Response> {
  return fetch(`${t.url}/api/v1/caches/${cache}/paths/${prepared.base.slice(0, 32)}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}`, 'content-type': UPLOAD_CONTENT_TYPE },
    body,
  });
}

before(async () => {
  t = await startTestServer();
  root = await t.token(['*'], ['pull', 'push', 'delete', 'cache-admin', 'server-admin']);
  const created = await api('POST', '/caches', { name: 'team', public: false });
  assert.equal(created.status, 201, await created.text());
});
after(async () => {
  await t.stop();
});

describe('caches', () => {
  it('creates private caches with a key and default upstream keys, and lists what a token may see', async () => {
    const info = (await (await api('GET', '/caches/team')).json()) as CacheInfo;
    assert.equal(info.public, false);
    assert.equal(info.publicKeys.length, 1);
    assert.deepEqual(info.upstreamKeys, ['cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=']);
    assert.equal(info.url, `${t.url}/team`);
    assert.equal(info.pushUrl, `${t.url}/team/push`);
    const anonymous = (await (await api('GET', '/caches', undefined, null)).json()) as {
      caches: CacheInfo[];
    };
    assert.deepEqual(
      anonymous.caches.map((cache) => cache.name),
      ['main'],
    );
    const all = (await (await api('GET', '/caches')).json()) as { caches: CacheInfo[] };
    assert.deepEqual(all.caches.map((cache) => cache.name).sort(), ['main', 'team']);
  });

  it('validates names and settings', async () => {
    for (const body of [
      { name: '../x' },
      { name: 'API' },
      { name: 'api' },
      { name: 'x', priority: -1 },
      { name: 'x', extra: 1 },
    ]) {
      const response = await api('POST', '/caches', body);
      assert.equal(response.status, 400, JSON.stringify(body));
    }
    assert.equal((await api('POST', '/caches', { name: 'team' })).status, 409);
    const patched = await api('PATCH', '/caches/team', { priority: 10, upstreamKeys: [] });
    assert.equal(patched.status, 200);
    assert.equal(((await patched.json()) as CacheInfo).priority, 10);
    assert.equal((await api('PATCH', '/caches/team', { upstreamKeys: ['garbage'] })).status, 400);
    const info = await fetch(`${t.url}/team/nix-cache-info`, { headers: { authorization: basicAuth(root) } });
    assert.match(await info.text(), /Priority: 10/);
  });
});

describe('private caches', () => {
  it('answer 401 with WWW-Authenticate, and revocation takes effect at once', async () => {
    const pathless = await fetch(`${t.url}/team/nix-cache-info`);
    assert.equal(pathless.status, 401);
    assert.equal(pathless.headers.get('www-authenticate'), 'Basic realm="niche"');
    const created = (await (
      await api('POST', '/tokens', { scopes: [{ cache: 'team', permissions: ['pull'] }] })
    ).json()) as {
      token: string;
      info: { id: number };
    };
    const auth = { authorization: basicAuth(created.token) };
    assert.equal((await fetch(`${t.url}/team/nix-cache-info`, { headers: auth })).status, 200);
    assert.equal((await api('DELETE', `/tokens/${created.info.id}`)).status, 204);
    const after = await fetch(`${t.url}/team/nix-cache-info`, { headers: auth });
    assert.equal(after.status, 401);
    assert.match(await after.text(), /revoked/);
  });
});

describe('token expiry', () => {
  it('refuses to create a token that has already expired, with 400 and a reason', async () => {
    const before = ((await (await api('GET', '/tokens')).json()) as { tokens: unknown[] }).tokens.length;
    for (const expiresAt of ['2020-01-01T00:00:00Z', new Date(Date.now() - 1000).toISOString()]) {
      const refused = await api('POST', '/tokens', {
        scopes: [{ cache: 'team', permissions: ['pull'] }],
        expiresAt,
      });
      assert.equal(refused.status, 400);
      const body = (await refused.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'BAD_REQUEST');
      assert.match(body.error.message, /is not in the future/);
    }
    const after = ((await (await api('GET', '/tokens')).json()) as { tokens: unknown[] }).tokens.length;
    assert.equal(after, before, 'no token was created');
    const future = new Date(Date.now() + 86_400_000).toISOString();
    const created = await api('POST', '/tokens', {
      scopes: [{ cache: 'team', permissions: ['pull'] }],
      expiresAt: future,
    });
    assert.equal(created.status, 201);
  });
});

describe('SSH keys', () => {
  it('are registered, listed and removed by a server admin, apart from tokens', async () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
    const field = (bytes: Buffer): Buffer => Buffer.concat([Buffer.from([0, 0, 0, bytes.length]), bytes]);
    const line = `ssh-ed25519 ${Buffer.concat([field(Buffer.from('ssh-ed25519')), field(raw)]).toString('base64')}`;
    const scopes = [{ cache: 'team', permissions: ['pull', 'push'] }];
    const pullOnly = await t.token(['team'], ['pull']);
    assert.equal((await api('POST', '/ssh-keys', { publicKey: line, scopes }, pullOnly)).status, 403);
    assert.equal((await api('GET', '/ssh-keys', undefined, null)).status, 401);
    const bad = await api('POST', '/ssh-keys', { publicKey: 'ssh-ed25519 AAAA', scopes });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'SSH_KEY_INVALID');

    const added = await api('POST', '/ssh-keys', { publicKey: `${line} bob@desk`, scopes });
    assert.equal(added.status, 201);
    const info = (await added.json()) as {
      id: number;
      fingerprint: string;
      publicKey: string;
      description: string;
    };
    assert.equal(info.publicKey, line);
    assert.equal(info.description, 'bob@desk');
    assert.match(info.fingerprint, /^SHA256:/);
    assert.equal((await api('POST', '/ssh-keys', { publicKey: line, scopes })).status, 409);

    const listed = (await (await api('GET', '/ssh-keys')).json()) as { sshKeys: { id: number }[] };
    assert.ok(listed.sshKeys.some((key) => key.id === info.id));
    const tokens = (await (await api('GET', '/tokens')).json()) as { tokens: { id: number }[] };
    assert.ok(!tokens.tokens.some((token) => token.id === info.id), 'SSH keys are not listed as tokens');
    assert.equal((await api('DELETE', `/tokens/${info.id}`)).status, 404);
    assert.equal((await api('DELETE', `/ssh-keys/${info.id}`)).status, 204);
    assert.equal((await api('DELETE', `/ssh-keys/${info.id}`)).status, 404);
    assert.equal((await api('DELETE', '/ssh-keys/x')).status, 400);
  });
});

describe('narinfos answered from memory', () => {
  it('still need credentials once the cache turns private, and are gone once the path is deleted', async () => {
    assert.equal((await api('POST', '/caches', { name: 'flip', public: true })).status, 201);
    const path = await prepare('api-flip');
    assert.equal((await upload('flip', path)).status, 201);
    const url = `${t.url}/flip/${path.base.slice(0, 32)}.narinfo`;
    for (let round = 0; round < 2; round++) {
      const response = await fetch(url); // the second answer comes from memory
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('cache-control'), 'public, max-age=3600');
      assert.match(await response.text(), /^StorePath: /);
    }
    assert.equal((await api('PATCH', '/caches/flip', { public: false })).status, 200);
    assert.equal((await fetch(url)).status, 401);
    const authorized = await fetch(url, { headers: { authorization: basicAuth(root) } });
    assert.equal(authorized.status, 200);
    assert.equal(authorized.headers.get('cache-control'), 'private, max-age=3600');
    assert.equal((await api('PATCH', '/caches/flip', { public: true })).status, 200);
    assert.equal((await fetch(url)).status, 200);
    assert.equal((await api('DELETE', `/caches/flip/paths/${path.base.slice(0, 32)}`)).status, 204);
    assert.equal((await fetch(url)).status, 404);
  });
});

describe('one-request uploads', () => {
  it('upload, publish and sign a path with its references; report what is missing', async () => {
    const dep = await prepare('api-dep');
    const topWithRef = await prepare('api-top2', []);
    const missingBefore = (await (
      await api('POST', '/caches/team/missing', { paths: [dep.meta.storePath, topWithRef.base] })
    ).json()) as {
      missing: string[];
    };
    assert.deepEqual(missingBefore.missing, [dep.meta.storePath, topWithRef.base]);

    const response = await upload('team', dep);
    assert.equal(response.status, 201, await response.text());
    const again = await upload('team', dep);
    assert.equal(again.status, 200);
    assert.equal(((await again.json()) as { status: string }).status, 'unchanged');

    const referrer = await prepare('api-referrer', [dep.base]);
    assert.equal((await upload('team', referrer)).status, 201);
    const missingAfter = (await (
      await api('POST', '/caches/team/missing', {
        paths: [dep.meta.storePath, referrer.base, topWithRef.base],
      })
    ).json()) as {
      missing: string[];
    };
    assert.deepEqual(missingAfter.missing, [topWithRef.base]);

    const narinfo = await fetch(`${t.url}/team/${referrer.base.slice(0, 32)}.narinfo`, {
      headers: { authorization: basicAuth(root) },
    });
    const info = parseNarInfo(await narinfo.text());
    assert.equal(info.compression, 'zstd');
    assert.deepEqual(
      info.references.map((reference) => reference.baseName),
      [dep.base],
    );
    const keys = ((await (await api('GET', '/caches/team')).json()) as CacheInfo).publicKeys;
    const key = PublicKey.parse(keys[0] ?? '');
    assert.ok(info.signatures.some((signature) => key.verify(narInfoFingerprint(info), signature)));
    const nar = await fetch(`${t.url}/team/${info.url}`, { headers: { authorization: basicAuth(root) } });
    assert.equal(nar.status, 200);
  });

  it('refuses wrong hashes, sizes and absent references without storing anything', async () => {
    const good = await prepare('api-bad');
    const count = async (): Promise<number> => {
      let n = 0;
      for await (const key of t.server.stores.blobs.list('')) n += key.length > 0 ? 1 : 0;
      return n;
    };
    const blobsBefore = await count();
    const wrongHash = { ...good.meta, narHash: `sha256:${sha256Nix32(Buffer.from('other'))}` };
    const nar = good.body.subarray(good.body.indexOf(0x0a) + 1);
    let response = await upload(
      'team',
      good,
      root,
      Buffer.concat([Buffer.from(`${JSON.stringify(wrongHash)}\n`), nar]),
    );
    assert.equal(response.status, 400);
    assert.match(await response.text(), /NAR_HASH_MISMATCH/);
    const wrongSize = { ...good.meta, narSize: good.meta.narSize + 8 };
    response = await upload(
      'team',
      good,
      root,
      Buffer.concat([Buffer.from(`${JSON.stringify(wrongSize)}\n`), nar]),
    );
    assert.match(await response.text(), /NAR_SIZE_MISMATCH/);
    const orphan = await prepare('api-orphan', [fakeBaseName('not-there')]);
    response = await upload('team', orphan);
    assert.equal(response.status, 400);
    assert.match(await response.text(), /REFERENCE_MISSING/);
    response = await upload('team', good, root, Buffer.from('{"storePath": 1}\n'));
    assert.equal(response.status, 400);
    response = await upload('team', good, root, Buffer.from('no newline at all'));
    assert.equal(response.status, 400);
    assert.equal(await count(), blobsBefore);
    assert.equal(
      (
        await fetch(`${t.url}/team/${good.base.slice(0, 32)}.narinfo`, {
          headers: { authorization: basicAuth(root) },
        })
      ).status,
      404,
    );
  });

  it('refuse a reference to a held path under another name, or to the path itself under another name', async () => {
    const dep = await prepare('api-exact-dep');
    assert.equal((await upload('team', dep)).status, 201);
    const self = fakeBaseName('api-exact-top');
    for (const reference of [`${dep.base.slice(0, 32)}-wrongname`, `${self.slice(0, 32)}-othername`]) {
      const top = await prepare('api-exact-top', [dep.base, reference]);
      assert.equal(top.base, self);
      const response = await upload('team', top);
      const text = await response.text();
      assert.equal(response.status, 400, text);
      assert.match(text, /REFERENCE_MISSING/);
      assert.ok(text.includes(reference), text);
    }
    // The presence check answers by exact name too, so `niche push` uploads what is really missing.
    const missing = (await (
      await api('POST', '/caches/team/missing', {
        paths: [dep.base, `${dep.base.slice(0, 32)}-wrongname`, `/nix/store/${dep.base.slice(0, 32)}-x`],
      })
    ).json()) as { missing: string[] };
    assert.deepEqual(missing.missing, [
      `${dep.base.slice(0, 32)}-wrongname`,
      `/nix/store/${dep.base.slice(0, 32)}-x`,
    ]);
    const top = await prepare('api-exact-top', [dep.base, self]);
    assert.equal((await upload('team', top)).status, 201);
  });

  it('refuses a different NAR for a path already present, without reading it', async () => {
    const first = await prepare('api-conflict');
    assert.equal((await upload('team', first)).status, 201);
    const other = await narOfContents('different contents\n');
    const meta = {
      ...first.meta,
      narHash: `sha256:${sha256Nix32(other)}`,
      narSize: other.length,
      compression: 'none',
    };
    const response = await upload(
      'team',
      first,
      root,
      Buffer.concat([Buffer.from(`${JSON.stringify(meta)}\n`), other]),
    );
    assert.equal(response.status, 409);
  });
});

describe('listing and searching paths', () => {
  it('pages by hash part or by name prefix, with every problem of a query answered 400', async () => {
    const created = await api('POST', '/caches', { name: 'listing', public: false });
    assert.equal(created.status, 201, await created.text());
    const labels = ['hello-2.12', 'hello-2.13', 'hello', 'help2man-1.49', 'world-1', 'Hello-9', 'zlib-1.3'];
    for (const label of labels) {
      const response = await upload('listing', await prepare(label));
      assert.equal(response.status, 201, await response.text());
    }
    const bases = labels.map(fakeBaseName);
    interface Listed {
      paths: PathInfo[];
      next: string | null;
    }
    const list = async (query: string): Promise<Listed> => {
      const response = await api('GET', `/caches/listing/paths?${query}`);
      assert.equal(response.status, 200, await response.clone().text());
      assert.equal(response.headers.get('cache-control'), 'no-store');
      return (await response.json()) as Listed;
    };
    const walk = async (query: string): Promise<string[]> => {
      const seen: string[] = [];
      for (let page = await list(query); ;) {
        assert.ok(page.paths.length <= 2);
        seen.push(...page.paths.map((path) => path.storePath.slice('/nix/store/'.length)));
        if (page.next === null) return seen;
        page = await list(`${query}&after=${encodeURIComponent(page.next)}`);
      }
    };
    const byHash = [...bases].sort();
    assert.deepEqual(await walk('limit=2'), byHash);
    assert.deepEqual((await list('')).paths.length, labels.length);
    const first = (await list('limit=1')).paths[0];
    const expected = await prepare(labels[bases.indexOf(byHash[0] ?? '')] ?? '');
    assert.deepEqual(
      { ...first, signatures: [], createdAt: '' },
      {
        storePath: expected.meta.storePath,
        narHash: expected.meta.narHash,
        narSize: expected.meta.narSize,
        compression: 'zstd',
        fileSize: expected.body.length - expected.body.indexOf(10) - 1,
        references: [],
        deriver: null,
        ca: null,
        signatures: [],
        createdAt: '',
      },
    );
    // Signed by the cache's key, as its narinfo is.
    const info = (await (await api('GET', '/caches/listing')).json()) as CacheInfo;
    const keyName = info.publicKeys[0]?.split(':')[0] ?? '?';
    const [signature, ...others] = first?.signatures ?? [];
    assert.deepEqual(others, []);
    assert.ok(signature?.startsWith(`${keyName}:`), signature);

    const byName = (prefix: string): string[] =>
      bases
        .filter((base) => base.slice(33).startsWith(prefix))
        .sort((a, b) =>
          a.slice(33) === b.slice(33) ? (a < b ? -1 : 1) : a.slice(33) < b.slice(33) ? -1 : 1,
        );
    for (const prefix of ['hel', 'hello', 'hello-2.1', 'H', 'w', 'nothing']) {
      assert.deepEqual(await walk(`name=${encodeURIComponent(prefix)}&limit=2`), byName(prefix), prefix);
    }
    assert.equal(byName('hel').length, 4);
    const hashPrefix = byHash[3]?.slice(0, 1) ?? '';
    assert.deepEqual(
      await walk(`hash=${hashPrefix}&limit=2`),
      byHash.filter((base) => base.startsWith(hashPrefix)),
    );

    for (const query of [
      'limit=0',
      'limit=1001',
      'limit=two',
      'name=a%2Fb',
      'hash=e',
      `hash=${'a'.repeat(33)}`,
      'name=h&hash=a',
      'after=not-a-base-name',
      'color=blue',
    ]) {
      const response = await api('GET', `/caches/listing/paths?${query}`);
      assert.equal(response.status, 400, query);
      const body = (await response.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'BAD_REQUEST', query);
    }
    assert.equal((await api('GET', '/caches/listing/paths', undefined, null)).status, 401);
  });
});

describe('deleting paths', () => {
  it('refuses to break a closure, then deletes leaves first', async () => {
    const dep = await prepare('del-dep');
    const top = await prepare('del-top', [dep.base]);
    assert.equal((await upload('team', dep)).status, 201);
    assert.equal((await upload('team', top)).status, 201);
    let response = await api('DELETE', `/caches/team/paths/${dep.base.slice(0, 32)}`);
    assert.equal(response.status, 409);
    assert.match(await response.text(), /PATH_REFERENCED/);
    assert.equal((await api('DELETE', `/caches/team/paths/${top.base.slice(0, 32)}`)).status, 204);
    assert.equal((await api('DELETE', `/caches/team/paths/${dep.base.slice(0, 32)}`)).status, 204);
    response = await api('DELETE', `/caches/team/paths/${dep.base.slice(0, 32)}`);
    assert.equal(response.status, 404);
    const gone = await fetch(`${t.url}/team/${dep.base.slice(0, 32)}.narinfo`, {
      headers: { authorization: basicAuth(root) },
    });
    assert.equal(gone.status, 404);
  });
});

describe('key rotation', () => {
  it('signs with every active key; a retired key stops signing but stays trusted', async () => {
    const before = ((await (await api('GET', '/caches/team')).json()) as CacheInfo).publicKeys;
    const added = await api('POST', '/caches/team/keys', { generate: true });
    assert.equal(added.status, 201);
    const newKey = (await added.json()) as { name: string; publicKey: string };
    assert.equal((await api('POST', '/caches/team/keys', { generate: true, name: newKey.name })).status, 409);

    const both = await prepare('rot-both');
    assert.equal((await upload('team', both)).status, 201);
    const sigs = async (base: string): Promise<string[]> =>
      parseNarInfo(
        await (
          await fetch(`${t.url}/team/${base.slice(0, 32)}.narinfo`, {
            headers: { authorization: basicAuth(root) },
          })
        ).text(),
      ).signatures.map((signature) => signature.slice(0, signature.indexOf(':')));
    const oldName = (before[0] ?? '').slice(0, (before[0] ?? '').indexOf(':'));
    assert.deepEqual((await sigs(both.base)).sort(), [oldName, newKey.name].sort());

    assert.equal((await api('POST', `/caches/team/keys/${oldName}/retire`)).status, 200);
    const single = await prepare('rot-single');
    assert.equal((await upload('team', single)).status, 201);
    assert.deepEqual(await sigs(single.base), [newKey.name]);
    const info = (await (await api('GET', '/caches/team')).json()) as CacheInfo;
    assert.deepEqual(info.publicKeys, [...before, newKey.publicKey]);
    // The last active key cannot be retired.
    assert.equal((await api('POST', `/caches/team/keys/${newKey.name}/retire`)).status, 409);
  });

  it('imports a key file', async () => {
    const secret =
      'example.org-1:J8IhI+w5cc/Ook7oL/GmI6JdDo1fBbQe+O5okL+26k/+YMuALgd+IcCeEUheNJo/3JXqJurrx26ksqVmyWCTTg==';
    const response = await api('POST', '/caches/team/keys', { secretKey: secret });
    assert.equal(response.status, 201);
    assert.equal(
      ((await response.json()) as { publicKey: string }).publicKey,
      'example.org-1:/mDLgC4HfiHAnhFIXjSaP9yV6ibq68dupLKlZslgk04=',
    );
    assert.equal((await api('POST', '/caches/team/keys', { secretKey: 'garbage' })).status, 400);
  });
});

describe('deleting caches', () => {
  it('removes the cache and its paths', async () => {
    assert.equal((await api('POST', '/caches', { name: 'doomed' })).status, 201);
    const path = await prepare('doomed-path');
    assert.equal((await upload('doomed', path)).status, 201);
    assert.equal((await api('DELETE', '/caches/doomed')).status, 204);
    assert.equal((await api('GET', '/caches/doomed')).status, 404);
    assert.equal((await fetch(`${t.url}/doomed/${path.base.slice(0, 32)}.narinfo`)).status, 401);
    assert.equal((await api('POST', '/caches', { name: 'doomed' })).status, 201);
    const fresh = await fetch(`${t.url}/doomed/${path.base.slice(0, 32)}.narinfo`);
    assert.equal(fresh.status, 404);
  });
});

describe('references served upstream', () => {
  it('are accepted on a valid upstream signature, and only then', async () => {
    const upstreamKey = SecretKey.generate('upstream.example-1');
    assert.equal(
      (await api('POST', '/caches', { name: 'downstream', upstreamKeys: [upstreamKey.publicKey.toString()] }))
        .status,
      201,
    );
    const nar = await narOfContents('served upstream\n');
    const base = fakeBaseName('upstream-dep');
    const fields = {
      storePath: StorePath.parse(`/nix/store/${base}`),
      narHash: Hash.parsePrefixed(`sha256:${sha256Nix32(nar)}`),
      narSize: nar.length,
      references: [],
    };
    const entry = {
      storePath: `/nix/store/${base}`,
      narHash: fields.narHash.toString(),
      narSize: nar.length,
      references: [],
      signatures: [upstreamKey.sign(narInfoFingerprint(fields))],
    };
    const forged = {
      ...entry,
      signatures: [SecretKey.generate('upstream.example-1').sign(narInfoFingerprint(fields))],
    };
    const withUpstream = async (label: string, upstreamReferences: unknown[]): Promise<Response> => {
      const prepared = await prepare(label, [base]);
      const meta = { ...prepared.meta, upstreamReferences };
      const file = prepared.body.subarray(prepared.body.indexOf(0x0a) + 1);
      return upload(
        'downstream',
        prepared,
        root,
        Buffer.concat([Buffer.from(`${JSON.stringify(meta)}\n`), file]),
      );
    };
    let response = await withUpstream('upstream-forged', [forged]);
    assert.equal(response.status, 400);
    assert.match(await response.text(), /REFERENCE_MISSING/);
    response = await withUpstream('upstream-none', []);
    assert.equal(response.status, 400);
    // A valid upstream signature vouches for exactly the path it signed, not for its hash part.
    const renamed = await prepare('upstream-renamed', [`${base.slice(0, 32)}-renamed`]);
    response = await upload(
      'downstream',
      renamed,
      root,
      Buffer.concat([
        Buffer.from(`${JSON.stringify({ ...renamed.meta, upstreamReferences: [entry] })}\n`),
        renamed.body.subarray(renamed.body.indexOf(0x0a) + 1),
      ]),
    );
    assert.equal(response.status, 400);
    assert.match(await response.text(), /REFERENCE_MISSING.*-renamed/);
    response = await withUpstream('upstream-valid', [entry]);
    assert.equal(response.status, 201, await response.text());
    // The dependency itself is not in the cache: clients fetch it from the upstream.
    const missing = (await (await api('POST', '/caches/downstream/missing', { paths: [base] })).json()) as {
      missing: string[];
    };
    assert.deepEqual(missing.missing, [base]);
    // A cache that does not list the key accepts nothing on its signature.
    const elsewhere = await prepare('upstream-elsewhere', [base]);
    const meta = { ...elsewhere.meta, upstreamReferences: [entry] };
    response = await upload(
      'team',
      elsewhere,
      root,
      Buffer.concat([
        Buffer.from(`${JSON.stringify(meta)}\n`),
        elsewhere.body.subarray(elsewhere.body.indexOf(0x0a) + 1),
      ]),
    );
    assert.equal(response.status, 400);
  });
});
