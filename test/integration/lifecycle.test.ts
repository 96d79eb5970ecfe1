// The lifecycle through a running server and the CLI: accesses recorded from narinfo hits (once per
// resolution), NAR downloads and repeated pushes; retention, quota and pins through the API
// with its permissions; usage in the cache info; and the operator commands (cache update/show/list, pin,
// gc, fsck).
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { cacheInfoSchema, pinInfoSchema } from '../../src/api/v1.js';
import { runMain } from '../helpers/cli-process.js';
import { fakeBaseName, fixture, narInfoText, type NarFixture } from '../helpers/nar-fixtures.js';
import { agePaths, startTestServer, type TestServer } from '../helpers/server.js';

interface Pushed {
  readonly baseName: string;
  readonly hashPart: string;
  readonly fx: NarFixture;
}

void describe('lifecycle through the server and the CLI', () => {
  let t: TestServer;
  let pusher: string;
  let admin: string;
  let puller: string;
  const pushed: Pushed[] = [];

  async function push(label: string, references: readonly string[] = []): Promise<Pushed> {
    const fx = await fixture(`lifecycle ${label}`, 'zstd');
    const baseName = fakeBaseName(`lifecycle-${label}`);
    const auth = { authorization: `Bearer ${pusher}` };
    const nar = await fetch(`${t.url}/main/push/nar/${fx.fileName}`, {
      method: 'PUT',
      headers: auth,
      body: fx.file,
    });
    assert.ok(nar.ok, await nar.text());
    const info = await fetch(`${t.url}/main/push/${baseName.slice(0, 32)}.narinfo`, {
      method: 'PUT',
      headers: auth,
      body: narInfoText(baseName, fx, { references }),
    });
    assert.ok(info.ok, await info.text());
    return { baseName, hashPart: baseName.slice(0, 32), fx };
  }

  async function lastAccess(hashPart: string): Promise<number> {
    const cache = await t.server.stores.db.getCache('main');
    assert.ok(cache !== undefined);
    const row = (await t.server.stores.db.scanGcPaths(cache.id, '', 1000)).find(
      (entry) => entry.hashPart === hashPart,
    );
    assert.ok(row !== undefined);
    return row.lastAccess;
  }

  before(async () => {
    t = await startTestServer({ flags: { gcInterval: 'off' } });
    pusher = await t.token(['main'], ['pull', 'push']);
    admin = await t.token(['main'], ['pull', 'cache-admin', 'delete']);
    puller = await t.token(['main'], ['pull']);
    const leaf = await push('leaf');
    const top = await push('top', [leaf.baseName]);
    pushed.push(leaf, top);
  });
  after(async () => {
    await t.stop();
  });

  void it('records narinfo hits (once per resolution), NAR downloads and pushes again', async () => {
    const [leaf, top] = pushed;
    assert.ok(leaf && top);
    const flush = () => t.server.service.access.flush();
    // Pushed two hours ago, as far as the database knows: past the resolution of an hour (no retention).
    await agePaths(t, 7_200_000);
    const created = await lastAccess(top.hashPart);
    assert.equal((await fetch(`${t.url}/main/${top.hashPart}.narinfo`)).status, 200);
    await flush();
    const first = await lastAccess(top.hashPart);
    assert.ok(first >= created + 7_200_000, 'a narinfo read from the database');
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal((await fetch(`${t.url}/main/${top.hashPart}.narinfo`)).status, 200);
    await flush();
    assert.equal(await lastAccess(top.hashPart), first, 'read again within the resolution: not written');
    const leafBefore = await lastAccess(leaf.hashPart);
    const nar = await fetch(`${t.url}/main/nar/${leaf.fx.fileName}`);
    assert.equal(nar.status, 200);
    await nar.arrayBuffer();
    await flush();
    const downloaded = await lastAccess(leaf.hashPart);
    assert.ok(downloaded > leafBefore, 'a NAR download');
    assert.equal(await lastAccess(top.hashPart), first, 'a download touches only the paths of that NAR');
    await new Promise((resolve) => setTimeout(resolve, 20));
    await push('leaf');
    await flush();
    assert.ok((await lastAccess(leaf.hashPart)) > downloaded, 'pushed again');
  });

  void it('sets retention and quota through the API for cache admins only, and shows usage', async () => {
    const patch = (token: string, body: unknown) =>
      fetch(`${t.url}/api/v1/caches/main`, {
        method: 'PATCH',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    assert.equal((await patch(puller, { retentionSeconds: 86_400 })).status, 403);
    assert.equal((await patch(admin, { retentionSeconds: 5 })).status, 400, 'at least a minute');
    assert.equal((await patch(admin, { maxSize: -1 })).status, 400);
    const set = await patch(admin, { retentionSeconds: 30 * 86_400, maxSize: 2 ** 30 });
    assert.equal(set.status, 200);
    const info = cacheInfoSchema.parse(await set.json());
    assert.equal(info.retentionSeconds, 30 * 86_400);
    assert.equal(info.maxSize, 2 ** 30);
    assert.equal(info.usage?.paths, 2);
    const files = pushed.reduce((sum, path) => sum + path.fx.file.length, 0);
    assert.equal(info.usage.storedBytes, files);
    assert.equal(
      info.usage.narBytes,
      pushed.reduce((sum, path) => sum + path.fx.nar.length, 0),
    );
    assert.ok(info.usage.lastPushAt !== null);
    const cleared = cacheInfoSchema.parse(
      await (await patch(admin, { retentionSeconds: null, maxSize: null })).json(),
    );
    assert.equal(cleared.retentionSeconds, null);
    assert.equal(cleared.maxSize, null);
  });

  void it('pins through the API: cache admins pin and unpin, anyone who may pull lists, a pinned path is not deleted', async () => {
    const [leaf] = pushed;
    assert.ok(leaf);
    const put = (token: string, name: string, storePath: string) =>
      fetch(`${t.url}/api/v1/caches/main/pins/${name}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ storePath }),
      });
    assert.equal((await put(pusher, 'prod', `/nix/store/${leaf.baseName}`)).status, 403);
    assert.equal((await put(admin, 'prod', `/nix/store/${fakeBaseName('absent')}`)).status, 404);
    assert.equal((await put(admin, 'bad name!', `/nix/store/${leaf.baseName}`)).status, 400);
    const pinned = await put(admin, 'prod', `/nix/store/${leaf.baseName}`);
    assert.equal(pinned.status, 200);
    assert.equal(pinInfoSchema.parse(await pinned.json()).storePath, `/nix/store/${leaf.baseName}`);
    const list = await fetch(`${t.url}/api/v1/caches/main/pins`);
    assert.equal(list.status, 200);
    const deletePath = (hashPart: string) =>
      fetch(`${t.url}/api/v1/caches/main/paths/${hashPart}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${admin}` },
      });
    const top = pushed[1];
    assert.ok(top);
    const referenced = await deletePath(leaf.hashPart);
    assert.equal(referenced.status, 409);
    assert.match(await referenced.text(), /PATH_REFERENCED/);
    assert.equal((await deletePath(top.hashPart)).status, 204);
    const refused = await deletePath(leaf.hashPart);
    assert.equal(refused.status, 409);
    assert.match(await refused.text(), /PATH_PINNED/);
    const unpin = await fetch(`${t.url}/api/v1/caches/main/pins/prod`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${admin}` },
    });
    assert.equal(unpin.status, 204);
    assert.equal((await deletePath(leaf.hashPart)).status, 204);
    pushed.splice(0, pushed.length, await push('leaf'), await push('top', [leaf.baseName]));
  });

  void it('the operator commands: cache update/show/list, pin, gc, fsck', async () => {
    const env = { NICHE_DATA: t.dataDir, PATH: process.env.PATH ?? '' };
    const update = await runMain(['cache', 'update', 'main', '--retention', '30d', '--max-size', '1G'], env);
    assert.equal(update.code, 0, update.stderr);
    assert.match(update.stdout, /retention 30d\tmax-size 1073741824/);
    assert.equal((await runMain(['cache', 'update', 'main', '--retention', 'soon'], env)).code, 65);
    const show = await runMain(['cache', 'show', 'main'], env);
    assert.match(show.stdout, /^paths: 2$/m);
    assert.match(show.stdout, /^retention: 30d$/m);
    assert.match(show.stdout, /^max-size: 1073741824 \(1\.0 GiB\)$/m);
    assert.match((await runMain(['cache', 'list'], env)).stdout, /^main\tpublic\tpriority \d+\t2 paths\t/m);

    const [leaf] = pushed;
    assert.ok(leaf);
    const add = await runMain(['pin', 'add', 'main', 'prod', leaf.baseName, '--keep-days', '90'], env);
    assert.equal(add.code, 0, add.stderr);
    assert.match(
      (await runMain(['pin', 'list', 'main'], env)).stdout,
      new RegExp(`^prod\t/nix/store/${leaf.baseName}\texpires `, 'm'),
    );
    assert.notEqual((await runMain(['pin', 'add', 'main', 'x', fakeBaseName('absent')], env)).code, 0);
    assert.equal((await runMain(['pin', 'remove', 'main', 'prod'], env)).code, 0);
    assert.notEqual((await runMain(['pin', 'remove', 'main', 'prod'], env)).code, 0);

    const dry = await runMain(['gc', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /cache main: would delete 0 paths/);
    assert.equal((await runMain(['gc', '--cache', 'nosuch'], env)).code, 66);

    const fine = await runMain(['fsck'], env);
    assert.equal(fine.code, 0, fine.stderr);
    assert.match(fine.stderr, /0 missing, 0 corrupt/);
    const cache = await t.server.stores.db.getCache('main');
    assert.ok(cache !== undefined);
    const record = await t.server.stores.db.getPath(cache.id, leaf.hashPart);
    assert.ok(record !== undefined);
    const file = join(t.dataDir, 'blobs', record.nar.blobKey);
    const bytes = await readFile(file);
    bytes[0] = (bytes[0] ?? 0) ^ 1;
    await writeFile(file, bytes);
    const bad = await runMain(['fsck'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /^corrupt NAR file /m);
    assert.match(bad.stdout, new RegExp(`broken in main: /nix/store/${leaf.baseName}`));
    const repaired = await runMain(['fsck', '--repair'], env);
    assert.equal(repaired.code, 0, repaired.stderr);
    assert.match(repaired.stdout, /withdrawn from main: 2 paths/);
    t.server.service.forgetNarInfos();
    assert.equal((await fetch(`${t.url}/main/${leaf.hashPart}.narinfo`)).status, 404);
  });
});
