// Uploads through the real HTTP server: the happy path, and every kind of bad input the core issue lists,
// each answered with a 4xx and a reason while the store stays exactly as it was.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createCacheWithKey } from '../../src/cache/admin-service.js';
import { PENDING_UPLOAD_TTL_MS } from '../../src/cache/cache-service.js';
import { parseNarInfo, narInfoFingerprint } from '../../src/nix/narinfo.js';
import { PublicKey } from '../../src/nix/signing.js';
import { FS_BLOB_TMP_DIR } from '../../src/storage/fs/fs-blob-store.js';
import { chunkPool, SMALL_READ_SIZE, smallReadPool } from '../../src/util/buffer-pool.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import {
  compress,
  fakeBaseName,
  fixture,
  narInfoText,
  narOfContents,
  sha256Nix32,
} from '../helpers/nar-fixtures.js';

let t: TestServer;
let push: string;

/** PUT with the push token, another token, or (null) none. */
async function put(path: string, body: Buffer | string, token: string | null = push): Promise<Response> {
  return fetch(`${t.url}${path}`, {
    method: 'PUT',
    body,
    headers: token === null ? {} : { authorization: basicAuth(token) },
  });
}

/** Everything a client could observe or that sits on disk, to prove a refused request changed nothing. */
async function snapshot(): Promise<string> {
  const db = t.server.stores.db;
  const cache = await db.getCache('main');
  assert.ok(cache);
  const blobs: string[] = [];
  for await (const key of t.server.stores.blobs.list('')) blobs.push(key);
  const tmp = await readdir(join(t.dataDir, 'blobs', FS_BLOB_TMP_DIR), { recursive: true });
  const paths = await db.listPaths(cache.id, { limit: 100_000 });
  return JSON.stringify({ blobs: blobs.sort(), tmp, paths });
}

async function expectRefused(response: Response, status: number, code: string): Promise<void> {
  const text = await response.text();
  assert.equal(response.status, status, text);
  assert.match(text, new RegExp(code));
}

before(async () => {
  t = await startTestServer({ maxNarSize: '8M' });
  push = await t.token(['main'], ['pull', 'push']);
});
after(async () => {
  await t.stop();
});

describe('upload', () => {
  it('accepts a NAR and its narinfo, signs it, and serves both', async () => {
    const fx = await fixture('hello, niche\n', 'xz');
    const base = fakeBaseName('hello');
    const hash = base.slice(0, 32);

    const head = await fetch(`${t.url}/main/nar/${fx.fileName}`, {
      method: 'HEAD',
      headers: { authorization: basicAuth(push) },
    });
    assert.equal(head.status, 404);
    assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201);
    // The pusher sees its upload (Nix asks with HEAD before uploading a NAR), nobody else does yet.
    const headAfter = await fetch(`${t.url}/main/nar/${fx.fileName}`, {
      method: 'HEAD',
      headers: { authorization: basicAuth(push) },
    });
    assert.equal(headAfter.status, 200);
    assert.equal(headAfter.headers.get('content-length'), String(fx.file.length));

    // Not visible until its narinfo is accepted.
    assert.equal((await fetch(`${t.url}/main/${hash}.narinfo`)).status, 404);
    assert.equal((await put(`/main/${hash}.narinfo`, narInfoText(base, fx))).status, 201);

    const response = await fetch(`${t.url}/main/${hash}.narinfo`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'text/x-nix-narinfo');
    const info = parseNarInfo(await response.text());
    assert.equal(info.storePath.baseName, base);
    assert.equal(info.narHash.toNix32(), fx.narHash);
    assert.equal(info.url, `nar/${fx.fileName}`);

    const api = (await (await fetch(`${t.url}/api/v1/caches/main`)).json()) as { publicKeys: string[] };
    const key = PublicKey.parse(api.publicKeys[0] ?? '');
    const ours = info.signatures.filter((sig) => sig.startsWith(`${key.name}:`));
    assert.equal(ours.length, 1);
    assert.ok(key.verify(narInfoFingerprint(info), ours[0] ?? ''));

    const nar = await fetch(`${t.url}/main/nar/${fx.fileName}`);
    assert.equal(nar.status, 200);
    assert.equal(nar.headers.get('content-type'), 'application/x-nix-nar');
    assert.deepEqual(Buffer.from(await nar.arrayBuffer()), fx.file);

    const ranged = await fetch(`${t.url}/main/nar/${fx.fileName}`, { headers: { range: 'bytes=4-9' } });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers.get('content-range'), `bytes 4-9/${fx.file.length}`);
    assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), fx.file.subarray(4, 10));

    const beyond = await fetch(`${t.url}/main/nar/${fx.fileName}`, {
      headers: { range: `bytes=${fx.file.length}-` },
    });
    assert.equal(beyond.status, 416);
    await beyond.arrayBuffer();

    // Re-uploading the identical path is harmless.
    assert.equal((await put(`/main/${hash}.narinfo`, narInfoText(base, fx))).status, 200);
  });

  it('reads a small NAR into a buffer of the small-read pool, given back once sent', async () => {
    // Random bytes do not compress: the NAR files are about as large as their contents.
    const small = await fixture(randomBytes(20_000), 'none');
    const middling = await fixture(randomBytes(SMALL_READ_SIZE + 10_000), 'none');
    for (const fx of [small, middling]) {
      const base = fakeBaseName(`pooled-${fx.file.length}`);
      assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201);
      assert.equal((await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx))).status, 201);
    }
    const chunksFree = chunkPool.free;
    for (let round = 0; round < 3; round++) {
      const before = smallReadPool.free;
      const nar = await fetch(`${t.url}/main/nar/${small.fileName}`);
      assert.deepEqual(Buffer.from(await nar.arrayBuffer()), small.file);
      // Taken from the pool (or made, when none was free) and back in it: never a 1 MiB download chunk.
      await waitFor(() => smallReadPool.free === Math.max(before, 1), {
        what: 'the buffer back in the small-read pool',
        timeoutMs: 2_000,
        intervalMs: 5,
      });
      const ranged = await fetch(`${t.url}/main/nar/${small.fileName}`, { headers: { range: 'bytes=100-' } });
      assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), small.file.subarray(100));
      await waitFor(() => smallReadPool.free === Math.max(before, 1), {
        what: 'the buffer back in the small-read pool',
        timeoutMs: 2_000,
        intervalMs: 5,
      });
      // Larger than the pool's buffers: read into one of its own, which the pool does not keep.
      const larger = await fetch(`${t.url}/main/nar/${middling.fileName}`);
      assert.deepEqual(Buffer.from(await larger.arrayBuffer()), middling.file);
      assert.equal(smallReadPool.free, Math.max(before, 1));
    }
    assert.equal(chunkPool.free, chunksFree);
  });

  it('answers a small NAR asked for again from memory, byte for byte, and a private one only to its readers', async () => {
    const cases = [
      { cache: 'main', token: null, fx: await fixture(randomBytes(3000), 'none') },
      {
        cache: 'hidden',
        token: await t.token(['hidden'], ['pull', 'push']),
        fx: await fixture('private\n', 'xz'),
      },
    ];
    await createCacheWithKey(t.server.stores.db, { name: 'hidden', isPublic: false, priority: 40 });
    for (const { cache, token, fx } of cases) {
      const base = fakeBaseName(`memory-${cache}`);
      const auth = { authorization: basicAuth(token ?? push) };
      assert.equal((await put(`/${cache}/nar/${fx.fileName}`, fx.file, token ?? push)).status, 201);
      assert.equal(
        (await put(`/${cache}/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx), token ?? push)).status,
        201,
      );
      const url = `${t.url}/${cache}/nar/${fx.fileName}`;
      const answers: string[] = [];
      for (let round = 0; round < 4; round++) {
        const nar = await fetch(url, { headers: auth });
        assert.equal(nar.status, 200);
        assert.deepEqual(Buffer.from(await nar.arrayBuffer()), fx.file, `${cache}, round ${round}`);
        answers.push(
          JSON.stringify([...nar.headers].filter(([name]) => name !== 'date' && name !== 'x-request-id')),
        );
      }
      assert.equal(new Set(answers).size, 1, `${cache}: the same headers from disk and from memory`);
      if (token !== null) {
        const anonymous = await fetch(url);
        assert.equal(anonymous.status, 401, 'held in memory, still not shown to whoever may not pull');
        await anonymous.arrayBuffer();
      }
      // With the file gone from disk, only a download from memory still has the bytes.
      const [blobKey] = (await t.server.stores.db
        .getNar((await t.server.stores.db.getCache(cache))?.id ?? -1, fx.fileHash)
        .then((found) => [found?.nar.blobKey])) as [string];
      await rm(join(t.dataDir, 'blobs', blobKey));
      const held = await fetch(url, { headers: auth });
      assert.deepEqual(Buffer.from(await held.arrayBuffer()), fx.file, `${cache}: from memory`);
      const ranged = await fetch(url, { headers: { ...auth, range: 'bytes=1-' } });
      assert.equal(ranged.status, 404, `${cache}: a range is read from disk`);
      await ranged.arrayBuffer();
    }
  });

  it('accepts every compression Nix can send', async () => {
    for (const compression of ['none', 'zstd', 'br'] as const) {
      const fx = await fixture(`compressed with ${compression}\n`, compression);
      const base = fakeBaseName(`c-${compression}`);
      assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201, compression);
      assert.equal(
        (await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx))).status,
        201,
        compression,
      );
      const nar = await fetch(`${t.url}/main/nar/${fx.fileName}`);
      assert.deepEqual(Buffer.from(await nar.arrayBuffer()), fx.file);
    }
  });

  it('links references and refuses a narinfo whose reference is absent', async () => {
    const dep = await fixture('dependency\n');
    const depBase = fakeBaseName('dep');
    const top = await fixture('top\n');
    const topBase = fakeBaseName('top');
    assert.equal((await put(`/main/nar/${dep.fileName}`, dep.file)).status, 201);
    assert.equal((await put(`/main/nar/${top.fileName}`, top.file)).status, 201);
    const before = await snapshot();
    await expectRefused(
      await put(
        `/main/${topBase.slice(0, 32)}.narinfo`,
        narInfoText(topBase, top, { references: [depBase, topBase] }),
      ),
      400,
      'REFERENCE_MISSING',
    );
    assert.equal(await snapshot(), before);
    assert.equal((await put(`/main/${depBase.slice(0, 32)}.narinfo`, narInfoText(depBase, dep))).status, 201);
    const ok = await put(
      `/main/${topBase.slice(0, 32)}.narinfo`,
      narInfoText(topBase, top, { references: [depBase, topBase] }),
    );
    assert.equal(ok.status, 201);
  });

  it('refuses a reference that names a held path by its hash part only, or the path itself by another name', async () => {
    const base = await fixture('the base\n');
    const baseName = fakeBaseName('base');
    assert.equal((await put(`/main/nar/${base.fileName}`, base.file)).status, 201);
    assert.equal(
      (await put(`/main/${baseName.slice(0, 32)}.narinfo`, narInfoText(baseName, base))).status,
      201,
    );
    const top = await fixture('refers to the base\n');
    const topName = fakeBaseName('refers');
    const topHash = topName.slice(0, 32);
    assert.equal((await put(`/main/nar/${top.fileName}`, top.file)).status, 201);
    const before = await snapshot();
    for (const reference of [`${baseName.slice(0, 32)}-wrongname`, `${topHash}-othername`]) {
      const response = await put(
        `/main/${topHash}.narinfo`,
        narInfoText(topName, top, { references: [baseName, reference].sort() }),
      );
      const text = await response.text();
      assert.equal(response.status, 400, text);
      assert.match(text, /REFERENCE_MISSING/);
      assert.ok(text.includes(reference), text);
    }
    assert.equal(await snapshot(), before);
    assert.equal((await fetch(`${t.url}/main/${topHash}.narinfo`)).status, 404);
    const ok = await put(
      `/main/${topHash}.narinfo`,
      narInfoText(topName, top, { references: [baseName, topName].sort() }),
    );
    assert.equal(ok.status, 201, await ok.text());
  });
});

describe('NARs awaiting their narinfo', () => {
  async function nar(fileName: string, method: 'GET' | 'HEAD', token: string | null): Promise<Response> {
    const response = await fetch(`${t.url}/main/nar/${fileName}`, {
      method,
      headers: token === null ? {} : { authorization: basicAuth(token) },
    });
    await response.arrayBuffer();
    return response;
  }

  it('are served to those who may push, and to everyone only once published', async () => {
    const fx = await fixture('pending until published\n');
    const base = fakeBaseName('pending');
    const pullOnly = await t.token(['main'], ['pull']);
    assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201);
    for (const method of ['GET', 'HEAD'] as const) {
      assert.equal((await nar(fx.fileName, method, null)).status, 404, method);
      assert.equal((await nar(fx.fileName, method, pullOnly)).status, 404, method);
      assert.equal((await nar(fx.fileName, method, 'nch_notarealtoken')).status, 404, method);
      const pusher = await nar(fx.fileName, method, push);
      assert.equal(pusher.status, 200, method);
      // Never kept by a shared cache on the way, even though the cache is public.
      assert.equal(pusher.headers.get('cache-control'), 'private, no-store');
    }
    // A pending NAR may be uploaded again, harmlessly.
    assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201);
    assert.equal((await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx))).status, 201);
    for (const method of ['GET', 'HEAD'] as const) {
      const anonymous = await nar(fx.fileName, method, null);
      assert.equal(anonymous.status, 200, method);
      assert.equal(anonymous.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    }
  });

  it('expire after 24 h: no longer shown or publishable, until uploaded again', async () => {
    const fx = await fixture('expires while pending\n');
    const base = fakeBaseName('expiring');
    assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201);
    const db = t.server.stores.db;
    const cache = await db.getCache('main');
    assert.ok(cache);
    const recorded = await db.getNar(cache.id, fx.fileHash);
    assert.ok(recorded);
    // As if uploaded 24 h and a minute ago.
    await db.recordNarUpload(cache.id, recorded.nar, new Date(Date.now() - PENDING_UPLOAD_TTL_MS - 60_000));
    assert.equal((await nar(fx.fileName, 'HEAD', push)).status, 404);
    await expectRefused(
      await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx)),
      400,
      'NAR_NOT_UPLOADED.*expired; upload the NAR again',
    );
    assert.equal(await t.server.service.expirePendingUploads(), 1);
    assert.equal(await db.getNar(cache.id, fx.fileHash), undefined);
    // Nix, seeing the 404, uploads the NAR again, and then the narinfo is accepted.
    assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201);
    assert.equal((await nar(fx.fileName, 'HEAD', push)).status, 200);
    assert.equal((await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx))).status, 201);
    assert.equal((await nar(fx.fileName, 'GET', null)).status, 200);
  });
});

describe('bad input leaves the store unchanged', () => {
  it('refuses a wrong NarHash and a wrong NarSize', async () => {
    const fx = await fixture('narhash\n');
    const base = fakeBaseName('narhash');
    assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201);
    const before = await snapshot();
    const wrongHash = sha256Nix32(Buffer.from('something else'));
    await expectRefused(
      await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx, { narHash: wrongHash })),
      400,
      'NAR_HASH_MISMATCH',
    );
    await expectRefused(
      await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx, { narSize: fx.nar.length + 8 })),
      400,
      'NAR_SIZE_MISMATCH',
    );
    assert.equal(await snapshot(), before);
    assert.equal((await fetch(`${t.url}/main/${base.slice(0, 32)}.narinfo`)).status, 404);
  });

  it('refuses a truncated NAR (validly compressed)', async () => {
    const nar = await narOfContents('this NAR will be cut short\n');
    const file = await compress(nar.subarray(0, nar.length - 16), 'xz');
    const before = await snapshot();
    await expectRefused(await put(`/main/nar/${sha256Nix32(file)}.nar.xz`, file), 400, 'NAR_INVALID');
    assert.equal(await snapshot(), before);
  });

  it('refuses a NAR with trailing garbage and one that is not a NAR at all', async () => {
    const nar = await narOfContents('trailing\n');
    const file = Buffer.concat([nar, Buffer.alloc(8)]);
    const before = await snapshot();
    await expectRefused(await put(`/main/nar/${sha256Nix32(file)}.nar`, file), 400, 'NAR_INVALID');
    const junk = Buffer.from('<html>not a nar</html>');
    await expectRefused(await put(`/main/nar/${sha256Nix32(junk)}.nar`, junk), 400, 'NAR_INVALID');
    assert.equal(await snapshot(), before);
  });

  it('refuses corrupt xz', async () => {
    const fx = await fixture('corrupt me\n', 'xz');
    const corrupt = Buffer.from(fx.file);
    const middle = Math.floor(corrupt.length / 2);
    corrupt[middle] = (corrupt[middle] ?? 0) ^ 0xff;
    const before = await snapshot();
    await expectRefused(
      await put(`/main/nar/${sha256Nix32(corrupt)}.nar.xz`, corrupt),
      400,
      'COMPRESSION_INVALID',
    );
    const notXz = Buffer.from('definitely not xz data');
    await expectRefused(
      await put(`/main/nar/${sha256Nix32(notXz)}.nar.xz`, notXz),
      400,
      'COMPRESSION_INVALID',
    );
    assert.equal(await snapshot(), before);
  });

  it('refuses a NAR whose bytes do not match the hash in its URL', async () => {
    const fx = await fixture('misnamed\n', 'none');
    const other = sha256Nix32(Buffer.from('other'));
    const before = await snapshot();
    await expectRefused(await put(`/main/nar/${other}.nar`, fx.file), 400, 'FILE_HASH_MISMATCH');
    assert.equal(await snapshot(), before);
  });

  it('refuses a narinfo for a NAR never uploaded', async () => {
    const fx = await fixture('never uploaded\n');
    const base = fakeBaseName('never');
    const before = await snapshot();
    await expectRefused(
      await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx)),
      400,
      'NAR_NOT_UPLOADED',
    );
    assert.equal(await snapshot(), before);
  });

  it('refuses malformed narinfos', async () => {
    const fx = await fixture('malformed\n');
    const base = fakeBaseName('malformed');
    assert.equal((await put(`/main/nar/${fx.fileName}`, fx.file)).status, 201);
    const good = narInfoText(base, fx);
    const before = await snapshot();
    const bad = [
      good.replaceAll('\n', '\r\n'),
      good.replace(/NarHash: .*\n/, ''),
      good.replace('NarSize: ', 'NarSize: -'),
      `${good}\n`,
      good.replace('References: ', 'References: /nix/store/not-a-base-name'),
      good.replace('StorePath: /nix/store/', 'StorePath: /tmp/'),
      good.slice(0, -1),
      'complete garbage',
      good + 'Sig: not-a-signature\n',
    ];
    for (const text of bad) {
      await expectRefused(
        await put(`/main/${base.slice(0, 32)}.narinfo`, text),
        400,
        'NARINFO_INVALID|STORE_PATH_INVALID|HASH_INVALID|SIGNATURE_INVALID',
      );
    }
    // The narinfo names another path than the URL.
    await expectRefused(
      await put(`/main/${fakeBaseName('x').slice(0, 32)}.narinfo`, good),
      400,
      'STORE_PATH_MISMATCH',
    );
    assert.equal(await snapshot(), before);
  });

  it('refuses path traversal and junk in URLs', async () => {
    const before = await snapshot();
    for (const path of [
      '/main/nar/..%2F..%2Fniche.sqlite',
      '/main/nar/../../niche.sqlite',
      '/..%2Fmain/nix-cache-info',
      '/main/..%2F..%2Fetc%2Fpasswd.narinfo',
      '/Main/nix-cache-info',
      '/main/nar/%00.nar',
    ]) {
      const response = await fetch(`${t.url}${path}`);
      assert.ok([400, 404].includes(response.status), `${path}: ${response.status}`);
      assert.equal(response.headers.get('cache-control'), 'no-store');
      await response.arrayBuffer();
      const putResponse = await put(path, 'x');
      assert.ok([400, 404].includes(putResponse.status), `PUT ${path}: ${putResponse.status}`);
      await putResponse.arrayBuffer();
    }
    assert.equal(await snapshot(), before);
  });

  it('refuses oversized bodies', async () => {
    const before = await snapshot();
    const big = Buffer.alloc(9 * 2 ** 20, 7);
    const nar = await narOfContents(big);
    await expectRefused(await put(`/main/nar/${sha256Nix32(nar)}.nar`, nar), 413, 'BODY_TOO_LARGE');
    const hugeNarInfo = 'StorePath: /nix/store/x\n' + 'X: '.padEnd(2 * 2 ** 20, 'y') + '\n';
    await expectRefused(
      await put(`/main/${fakeBaseName('huge').slice(0, 32)}.narinfo`, hugeNarInfo),
      413,
      'BODY_TOO_LARGE',
    );
    assert.equal(await snapshot(), before);
  });

  it('refuses writes without a token, with a wrong one, and with a pull-only one', async () => {
    const fx = await fixture('auth\n');
    const base = fakeBaseName('auth');
    const pullOnly = await t.token(['main'], ['pull']);
    const expired = await t.token(['main'], ['pull', 'push'], new Date(Date.now() - 1000));
    const before = await snapshot();
    let response = await put(`/main/nar/${fx.fileName}`, fx.file, null);
    assert.equal(response.headers.get('www-authenticate'), 'Basic realm="niche"');
    await expectRefused(response, 401, 'TOKEN_MISSING');
    await expectRefused(
      await put(`/main/nar/${fx.fileName}`, fx.file, 'nch_wrongwrongwrong'),
      401,
      'TOKEN_INVALID',
    );
    await expectRefused(await put(`/main/nar/${fx.fileName}`, fx.file, expired), 401, 'TOKEN_INVALID');
    await expectRefused(await put(`/main/nar/${fx.fileName}`, fx.file, pullOnly), 403, 'PERMISSION_DENIED');
    await expectRefused(
      await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx), null),
      401,
      'TOKEN_MISSING',
    );
    response = await fetch(`${t.url}/main/nar/${fx.fileName}`, {
      method: 'PUT',
      body: fx.file,
      headers: { authorization: 'Bearer nch_notarealtoken' },
    });
    await expectRefused(response, 401, 'TOKEN_INVALID');
    assert.equal(await snapshot(), before);
    // A bearer token works as well as basic auth.
    response = await fetch(`${t.url}/main/nar/${fx.fileName}`, {
      method: 'PUT',
      body: fx.file,
      headers: { authorization: `Bearer ${push}` },
    });
    assert.equal(response.status, 201);
  });

  it('serves the same protocol, auth and checks at the push URL /<cache>/push', async () => {
    const fx = await fixture('pushed through the push URL\n', 'zstd');
    const base = fakeBaseName('push-url');
    const hash = base.slice(0, 32);
    const pullOnly = await t.token(['main'], ['pull']);
    const before = await snapshot();
    await expectRefused(await put(`/main/push/nar/${fx.fileName}`, fx.file, null), 401, 'TOKEN_MISSING');
    await expectRefused(
      await put(`/main/push/nar/${fx.fileName}`, fx.file, pullOnly),
      403,
      'PERMISSION_DENIED',
    );
    await expectRefused(
      await put(`/main/push/${hash}.narinfo`, narInfoText(base, fx)),
      400,
      'NAR_NOT_UPLOADED',
    );
    assert.equal(await snapshot(), before);

    const info = await fetch(`${t.url}/main/push/nix-cache-info`);
    assert.equal(info.status, 200);
    assert.equal(await info.text(), await (await fetch(`${t.url}/main/nix-cache-info`)).text());
    const auth = { authorization: basicAuth(push) };
    assert.equal(
      (await fetch(`${t.url}/main/push/nar/${fx.fileName}`, { method: 'HEAD', headers: auth })).status,
      404,
    );
    assert.equal((await put(`/main/push/nar/${fx.fileName}`, fx.file)).status, 201);
    assert.equal(
      (await fetch(`${t.url}/main/push/nar/${fx.fileName}`, { method: 'HEAD', headers: auth })).status,
      200,
    );
    assert.equal((await fetch(`${t.url}/main/push/${hash}.narinfo?x=1`)).status, 404);
    assert.equal((await put(`/main/push/${hash}.narinfo`, narInfoText(base, fx))).status, 201);

    // One path, served signed at both URLs.
    const signed = await (await fetch(`${t.url}/main/${hash}.narinfo`)).text();
    assert.match(signed, /^Sig: /m);
    assert.equal(await (await fetch(`${t.url}/main/push/${hash}.narinfo`)).text(), signed);
    const nar = await fetch(`${t.url}/main/push/nar/${fx.fileName}`);
    assert.deepEqual(Buffer.from(await nar.arrayBuffer()), fx.file);
    // Only `push` right after a cache name is the push URL.
    assert.equal((await fetch(`${t.url}/main/pushed/nix-cache-info`)).status, 404);
    assert.equal(
      (await fetch(`${t.url}/push/nix-cache-info`)).status,
      (await fetch(`${t.url}/nosuch/nix-cache-info`)).status,
      'a cache named push is a cache like any other',
    );
  });

  it('never replaces a path with different contents', async () => {
    const first = await fixture('first\n');
    const second = await fixture('second\n');
    const base = fakeBaseName('conflict');
    assert.equal((await put(`/main/nar/${first.fileName}`, first.file)).status, 201);
    assert.equal((await put(`/main/nar/${second.fileName}`, second.file)).status, 201);
    assert.equal((await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, first))).status, 201);
    const before = await (await fetch(`${t.url}/main/${base.slice(0, 32)}.narinfo`)).text();
    await expectRefused(
      await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, second)),
      409,
      'PATH_CONFLICT',
    );
    assert.equal(await (await fetch(`${t.url}/main/${base.slice(0, 32)}.narinfo`)).text(), before);
  });
});

describe('uploads niche does not store', () => {
  it('refuses debug info with 501 and a reason', async () => {
    const before = await snapshot();
    await expectRefused(await put(`/main/debuginfo/${'ab'.repeat(20)}.debug`, '{}'), 501, 'index-debug-info');
    // Still authenticated first.
    await expectRefused(await put('/main/debuginfo/x.debug', '{}', null), 401, 'TOKEN_MISSING');
    assert.equal(await snapshot(), before);
  });
});

describe('reads', () => {
  it('serves nix-cache-info and 404s with no-store', async () => {
    const info = await fetch(`${t.url}/main/nix-cache-info`);
    assert.equal(info.status, 200);
    assert.equal(info.headers.get('content-type'), 'text/x-nix-cache-info');
    assert.equal(await info.text(), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n');
    const missing = await fetch(`${t.url}/main/${'0'.repeat(32)}.narinfo`);
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('cache-control'), 'no-store');
    await missing.text();
    const noCache = await fetch(`${t.url}/nope/nix-cache-info`);
    assert.equal(noCache.status, 401); // anonymous: existence of non-public caches is not revealed
    await noCache.text();
    const landing = await fetch(`${t.url}/`);
    assert.match(await landing.text(), /extra-trusted-public-keys = \S+-main-1:/);
  });
});
