// Crash safety of uploads: `niche serve` runs as a child process and is killed with SIGKILL in the middle
// of a large NAR upload, again between a completed NAR upload and its narinfo, and during a burst of
// concurrent uploads whose commits share WAL syncs (group commit). After a restart on the same data
// directory the cache must be consistent (nothing half-visible, no temp files left), every upload answered
// 2xx must be there, and an upload must go through when retried.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeNix32 } from '../../src/nix/nix32.js';
import { FS_BLOB_TMP_DIR } from '../../src/storage/fs/fs-blob-store.js';
import { runCli, startServe, type ServeProcess } from '../helpers/cli-process.js';
import { largeNar, streamingPut, type LargeNar } from '../helpers/large-nar.js';
import { fakeBaseName, fixture, narInfoText, type NarFixture } from '../helpers/nar-fixtures.js';
import { basicAuth } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const MIB = 1 << 20;

let work: TempDir;
let dataDir: string;
let server: ServeProcess | undefined;
let token: string;

async function restart(): Promise<ServeProcess> {
  await server?.stop();
  server = await startServe({ dataDir });
  return server;
}

async function killHard(): Promise<void> {
  assert.ok(server);
  server.child.kill('SIGKILL');
  const exit = await server.exited;
  assert.equal(exit.signal, 'SIGKILL');
}

function tmpDir(): string {
  return join(dataDir, 'blobs', FS_BLOB_TMP_DIR);
}

/** Every file under the temp directory (relative paths; each process stages in its own subdirectory). */
async function tempFiles(): Promise<string[]> {
  const files: string[] = [];
  for (const name of await readdir(tmpDir(), { recursive: true })) {
    if ((await stat(join(tmpDir(), name)).catch(() => undefined))?.isFile() === true) files.push(name);
  }
  return files;
}

/** Files anywhere under the blob store except its temp directory (paths relative to it). */
async function storedBlobs(): Promise<string[]> {
  const root = join(dataDir, 'blobs');
  const files: string[] = [];
  for (const name of await readdir(root, { recursive: true })) {
    if (name === FS_BLOB_TMP_DIR || name.startsWith(`${FS_BLOB_TMP_DIR}/`)) continue;
    if ((await stat(join(root, name))).isFile()) files.push(name);
  }
  return files;
}

function narUrl(nar: LargeNar): string {
  assert.ok(server);
  return `${server.url}/main/nar/${nar.fileName}`;
}

function narInfoUrl(nar: LargeNar): string {
  assert.ok(server);
  return `${server.url}/main/${nar.baseName.slice(0, 32)}.narinfo`;
}

async function status(url: string, method = 'GET', headers: Record<string, string> = {}): Promise<number> {
  const response = await fetch(url, { method, headers });
  await response.arrayBuffer();
  return response.status;
}

async function uploadNar(nar: LargeNar): Promise<void> {
  const put = streamingPut(narUrl(nar), {
    body: nar.stream(),
    contentLength: nar.size,
    headers: { authorization: basicAuth(token) },
  });
  const response = await put.response;
  assert.equal(response.status, 201, response.body);
}

async function putNarInfo(nar: LargeNar): Promise<Response> {
  return fetch(narInfoUrl(nar), {
    method: 'PUT',
    body: nar.narInfo(),
    headers: { authorization: basicAuth(token), 'content-type': 'text/x-nix-narinfo' },
  });
}

/** The path is published, signed, and its NAR comes back byte for byte. */
async function assertServed(nar: LargeNar): Promise<void> {
  const info = await fetch(narInfoUrl(nar));
  const text = await info.text();
  assert.equal(info.status, 200, text);
  assert.match(text, new RegExp(`^NarHash: sha256:${nar.hash}$`, 'm'));
  assert.match(text, /^Sig: /m);
  const response = await fetch(narUrl(nar));
  assert.equal(response.status, 200);
  assert.ok(response.body);
  const hasher = createHash('sha256');
  let size = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    hasher.update(chunk);
    size += chunk.length;
  }
  assert.equal(size, nar.size);
  assert.equal(encodeNix32(hasher.digest()), nar.hash);
}

/** What a client sees of a cache that does not have `nar`, and what is on disk after a restart. */
async function assertClean(nar: LargeNar): Promise<void> {
  assert.ok(server);
  assert.equal(await status(`${server.url}/main/nix-cache-info`), 200);
  assert.equal(await status(narInfoUrl(nar)), 404);
  assert.equal(await status(narInfoUrl(nar), 'HEAD'), 404);
  assert.equal(await status(narUrl(nar), 'HEAD'), 404);
  assert.equal(await status(narUrl(nar)), 404);
  assert.deepEqual(await tempFiles(), [], 'no temp files are left after a restart');
}

before(async () => {
  work = await makeTempDir('crash');
  dataDir = join(work.path, 'data');
  await restart();
  const created = await runCli(['token', 'create', '--cache', 'main', '--push', '--data', dataDir]);
  assert.equal(created.code, 0, created.stderr);
  token = created.stdout.trim();
});

after(async () => {
  await server?.stop();
  await work.cleanup();
});

describe('kill -9', () => {
  it('mid-upload leaves nothing behind, and the upload succeeds after a restart', async () => {
    const nar = await largeNar(work.path, 'mid-upload', 210 * MIB);
    const put = streamingPut(narUrl(nar), {
      body: nar.stream(),
      contentLength: nar.size,
      headers: { authorization: basicAuth(token) },
      stallAfter: 24 * MIB,
    });
    put.response.catch(() => undefined);
    // The server is writing the upload to a temp file when it dies.
    const partial = await waitFor(
      async () => {
        for (const name of await tempFiles()) {
          const info = await stat(join(tmpDir(), name)).catch(() => undefined);
          if (info !== undefined && info.size >= 16 * MIB) return name;
        }
        return undefined;
      },
      { what: 'the upload to reach 16 MiB in the temp directory' },
    );
    await killHard();
    await assert.rejects(put.response, 'the client sees the connection fail');
    assert.ok(put.sent() < nar.size);
    assert.ok((await tempFiles()).includes(partial), 'the killed server left its temp file');
    assert.deepEqual(await storedBlobs(), []);

    await restart();
    await assertClean(nar);
    assert.deepEqual(await storedBlobs(), []);

    await uploadNar(nar);
    const response = await putNarInfo(nar);
    assert.equal(response.status, 201, await response.text());
    await assertServed(nar);
  });

  it('between the NAR and its narinfo leaves the path invisible, and publishing it works after a restart', async () => {
    const nar = await largeNar(work.path, 'before-narinfo', 8 * MIB);
    await uploadNar(nar);
    await killHard();

    await restart();
    assert.ok(server);
    assert.equal(await status(narInfoUrl(nar)), 404);
    assert.deepEqual(await tempFiles(), []);
    // The NAR upload was acknowledged, so it was kept: the pusher's HEAD (Nix's, before re-uploading)
    // finds it, while nobody else may download a NAR that no narinfo published.
    assert.equal(await status(narUrl(nar), 'HEAD', { authorization: basicAuth(token) }), 200);
    assert.equal(await status(narUrl(nar), 'HEAD'), 404);
    const response = await putNarInfo(nar);
    assert.equal(response.status, 201, await response.text());
    await assertServed(nar);
  });

  it('during a burst of concurrent uploads loses none that was answered 2xx', async () => {
    await restart();
    const fixtures: { baseName: string; fx: NarFixture }[] = [];
    for (let index = 0; index < 120; index++) {
      fixtures.push({
        baseName: fakeBaseName(`burst-${index}`),
        fx: await fixture(`burst ${index} ${'x'.repeat(index * 97)}`, index % 2 === 0 ? 'xz' : 'zstd'),
      });
    }
    const auth = { authorization: basicAuth(token) };
    const acknowledged: { baseName: string; fx: NarFixture }[] = [];
    let killed = false;
    const uploadOne = async (item: { baseName: string; fx: NarFixture }): Promise<void> => {
      assert.ok(server);
      const origin = server.url;
      const nar = await fetch(`${origin}/main/nar/${item.fx.fileName}`, {
        method: 'PUT',
        body: item.fx.file,
        headers: auth,
      });
      await nar.arrayBuffer();
      assert.equal(nar.status, 201);
      const info = await fetch(`${origin}/main/${item.baseName.slice(0, 32)}.narinfo`, {
        method: 'PUT',
        body: narInfoText(item.baseName, item.fx),
        headers: { ...auth, 'content-type': 'text/x-nix-narinfo' },
      });
      await info.arrayBuffer();
      assert.equal(info.status, 201);
      if (!killed) acknowledged.push(item);
    };
    // 12 uploads at a time; the server is killed once 30 paths have been acknowledged.
    let next = 0;
    const lanes = Array.from({ length: 12 }, async () => {
      while (next < fixtures.length && !killed) {
        const item = fixtures[next++];
        assert.ok(item);
        await uploadOne(item).catch(() => undefined);
      }
    });
    await waitFor(() => Promise.resolve(acknowledged.length >= 30 ? true : undefined), {
      what: '30 acknowledged uploads',
    });
    await killHard();
    killed = true;
    await Promise.all(lanes);
    const acked = acknowledged.length;
    assert.ok(next < fixtures.length, 'the burst was still going when the server was killed');

    await restart();
    assert.deepEqual(await tempFiles(), []);
    for (const item of acknowledged) {
      assert.ok(server);
      const response = await fetch(`${server.url}/main/${item.baseName.slice(0, 32)}.narinfo`);
      const text = await response.text();
      assert.equal(
        response.status,
        200,
        `${item.baseName} was answered 201 but is gone (${acked} acknowledged)`,
      );
      assert.match(text, new RegExp(`^NarHash: sha256:${item.fx.narHash}$`, 'm'));
      const nar = await fetch(`${server.url}/main/nar/${item.fx.fileName}`);
      assert.equal(nar.status, 200);
      assert.deepEqual(Buffer.from(await nar.arrayBuffer()), item.fx.file);
    }
    // What was not acknowledged is either complete or absent, and can be pushed again.
    for (const item of fixtures) {
      assert.ok(server);
      const response = await fetch(`${server.url}/main/${item.baseName.slice(0, 32)}.narinfo`);
      await response.arrayBuffer();
      if (response.status === 200) {
        const nar = await fetch(`${server.url}/main/nar/${item.fx.fileName}`);
        assert.deepEqual(Buffer.from(await nar.arrayBuffer()), item.fx.file);
      } else {
        assert.equal(response.status, 404);
        await uploadOne(item);
      }
    }
  });
});
