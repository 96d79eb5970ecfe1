// The binary cache files besides narinfos and NARs, through the real HTTP server: `<hash>.ls` listings
// (made from the stored NAR, uploads checked against it), with the same access rules as narinfos.
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, it } from 'node:test';
import { NarListingBuilder } from '../../src/nix/nar-listing.js';
import { NarParser } from '../../src/nix/nar-parser.js';
import { narFromPath } from '../../src/nix/nar-writer.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import {
  compress,
  fakeBaseName,
  narInfoText,
  sha256Nix32,
  type NarFixture,
} from '../helpers/nar-fixtures.js';

let t: TestServer;
let push: string;
let pull: string;

async function put(
  path: string,
  body: Buffer | string,
  token: string | null = push,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${t.url}${path}`, {
    method: 'PUT',
    body,
    headers: { ...headers, ...(token === null ? {} : { authorization: basicAuth(token) }) },
  });
}

async function expectStatus(response: Response, status: number, code?: string): Promise<string> {
  const text = await response.text();
  assert.equal(response.status, status, text);
  if (code !== undefined) assert.match(text, new RegExp(code));
  return text;
}

/** A NAR of a small tree: a file, an executable in a subdirectory, a symlink. */
async function treeFixture(label: string): Promise<NarFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'niche-ls-'));
  try {
    const root = join(dir, 'root');
    await mkdir(join(root, 'bin'), { recursive: true });
    await writeFile(join(root, 'README'), `${label}\n`);
    await writeFile(join(root, 'bin', 'hi'), '#!/bin/sh\necho hi\n');
    await chmod(join(root, 'bin', 'hi'), 0o755);
    await symlink('bin/hi', join(root, 'link'));
    const nar = await buffer(narFromPath(root));
    const file = await compress(nar, 'zstd');
    const fileHash = sha256Nix32(file);
    return {
      nar,
      file,
      compression: 'zstd',
      narHash: sha256Nix32(nar),
      fileHash,
      fileName: `${fileHash}.nar.zst`,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function listingOf(nar: Buffer): string {
  const builder = new NarListingBuilder();
  const parser = new NarParser(builder);
  parser.update(nar);
  parser.end();
  return builder.toString();
}

async function publish(base: string, fx: NarFixture): Promise<void> {
  await expectStatus(await put(`/main/nar/${fx.fileName}`, fx.file), 201);
  await expectStatus(await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx)), 201);
}

before(async () => {
  t = await startTestServer();
  push = await t.token(['main'], ['pull', 'push']);
  pull = await t.token(['main'], ['pull']);
});
after(async () => {
  await t.stop();
});

describe('NAR listings', () => {
  it('serves the listing of a published path, made from its NAR', async () => {
    const fx = await treeFixture('served');
    const base = fakeBaseName('ls-served');
    const hash = base.slice(0, 32);
    await expectStatus(await fetch(`${t.url}/main/${hash}.ls`), 404);
    await publish(base, fx);

    const response = await fetch(`${t.url}/main/${hash}.ls`);
    const text = await expectStatus(response, 200);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(text, listingOf(fx.nar));
    assert.match(text, /"hi":\{"type":"regular","size":18,"executable":true,"narOffset":\d+\}/);

    const head = await fetch(`${t.url}/main/${hash}.ls`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(text)));
    // Not for other caches' clients, and nothing for an unknown hash.
    await expectStatus(await fetch(`${t.url}/other/${hash}.ls`), 401);
    await expectStatus(await fetch(`${t.url}/main/${'0'.repeat(32)}.ls`), 404);
    await expectStatus(await fetch(`${t.url}/main/not-a-hash.ls`), 404);
  });

  it('accepts a well-formed listing before the path exists, and stores nothing', async () => {
    const fx = await treeFixture('early');
    const hash = fakeBaseName('ls-early').slice(0, 32);
    await expectStatus(await put(`/main/${hash}.ls`, listingOf(fx.nar)), 204);
    await expectStatus(await fetch(`${t.url}/main/${hash}.ls`), 404);
  });

  it('checks an uploaded listing against the NAR once the path is in the cache', async () => {
    const fx = await treeFixture('checked');
    const base = fakeBaseName('ls-checked');
    const hash = base.slice(0, 32);
    await publish(base, fx);
    const nix28 = listingOf(fx.nar);
    await expectStatus(await put(`/main/${hash}.ls`, nix28), 204);
    // Current Nix: every key, sorted, "executable":false written out.
    const modern = JSON.parse(nix28) as { root: { entries: Record<string, Record<string, unknown>> } };
    const readme = modern.root.entries.README;
    assert.ok(readme !== undefined);
    readme.executable = false;
    await expectStatus(await put(`/main/${hash}.ls`, JSON.stringify({ root: modern.root, version: 1 })), 204);
    // Without narOffset (Nix before 2.4).
    await expectStatus(await put(`/main/${hash}.ls`, nix28.replaceAll(/,"narOffset":\d+/g, '')), 204);

    await expectStatus(
      await put(`/main/${hash}.ls`, nix28.replace('"size":18', '"size":19')),
      400,
      'LISTING_MISMATCH',
    );
    await expectStatus(
      await put(`/main/${hash}.ls`, nix28.replace('"target":"bin/hi"', '"target":"bin/ho"')),
      400,
      'LISTING_MISMATCH',
    );
    await expectStatus(
      await put(`/main/${hash}.ls`, nix28.replace('"link":', '"lonk":')),
      400,
      'LISTING_MISMATCH',
    );
  });

  it('refuses what is not a listing, too large, or without push rights', async () => {
    const hash = fakeBaseName('ls-refused').slice(0, 32);
    await expectStatus(await put(`/main/${hash}.ls`, 'not json'), 400, 'LISTING_INVALID');
    await expectStatus(await put(`/main/${hash}.ls`, '{"version":2,"root":{}}'), 400, 'LISTING_INVALID');
    await expectStatus(
      await put(
        `/main/${hash}.ls`,
        '{"version":1,"root":{"type":"directory","entries":{"a/b":{"type":"symlink","target":"x"}}}}',
      ),
      400,
      'LISTING_INVALID',
    );
    await expectStatus(
      await put(`/main/bad.ls`, '{"version":1,"root":{"type":"symlink","target":"x"}}'),
      400,
      'STORE_PATH_INVALID',
    );
    await expectStatus(await put(`/main/${hash}.ls`, Buffer.alloc(33 * 2 ** 20, 32)), 413, 'BODY_TOO_LARGE');
    await expectStatus(await put(`/main/${hash}.ls`, '{}', null), 401, 'TOKEN_MISSING');
    await expectStatus(await put(`/main/${hash}.ls`, '{}', pull), 403, 'PERMISSION_DENIED');
  });
});
