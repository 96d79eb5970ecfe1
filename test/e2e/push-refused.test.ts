// Pushing needs a token with push permission: `nix copy --to` without credentials, with an unknown token
// or with a pull-only token must fail, and leave the cache without any of the paths (no narinfo, no NAR).
// A final push with a real push token proves the refusals were about the credentials and nothing else.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateToken } from '../../src/cache/tokens.js';
import { NixCommandError, nixTestOptions } from '../helpers/nix.js';
import { buildClosure, nixClient, type BuiltClosure, type NixClient } from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('nix copy --to niche without push rights', nixTestOptions(), () => {
  let t: TestServer | undefined;
  let client: NixClient | undefined;
  let closure: BuiltClosure | undefined;

  before(async () => {
    t = await startTestServer();
    client = await nixClient();
    closure = await buildClosure(client, { label: 'push-refused' });
  });
  after(async () => {
    await closure?.cleanup();
    await client?.cleanup();
    await t?.stop();
  });

  /** Which of the closure's paths the cache serves a narinfo for, and which blobs it holds. */
  async function cacheContents(): Promise<{ narinfos: string[]; blobs: string[] }> {
    assert.ok(t && closure);
    const narinfos: string[] = [];
    for (const path of closure.paths) {
      const hash = path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const response = await fetch(`${t.url}/main/${hash}.narinfo`);
      await response.arrayBuffer();
      if (response.status !== 404) narinfos.push(`${path}: ${response.status}`);
    }
    const blobs: string[] = [];
    for await (const key of t.server.stores.blobs.list('')) blobs.push(key);
    return { narinfos, blobs };
  }

  async function expectRefused(token: string | undefined, status: RegExp): Promise<void> {
    assert.ok(t && client && closure);
    await client.setToken(token);
    await assert.rejects(
      client.run('nix', ['copy', '--to', `${t.url}/main`, closure.top]),
      (error: unknown) => {
        assert.ok(error instanceof NixCommandError, String(error));
        assert.notEqual(error.exitCode, 0);
        assert.match(error.stderr, status);
        return true;
      },
    );
    assert.deepEqual(await cacheContents(), { narinfos: [], blobs: [] });
  }

  it('refuses a push without credentials', async () => {
    await expectRefused(undefined, /HTTP error 401/);
  });

  it('refuses a push with an unknown token', async () => {
    await expectRefused(generateToken(), /HTTP error 401/);
  });

  it('refuses a push with a pull-only token', async () => {
    assert.ok(t);
    await expectRefused(await t.token(['main'], ['pull']), /HTTP error 403/);
  });

  it('accepts the same push with a push token', async () => {
    assert.ok(t && client && closure);
    await client.setToken(await t.token(['main'], ['pull', 'push']));
    await client.run('nix', ['copy', '--to', `${t.url}/main`, closure.top]);
    const { narinfos, blobs } = await cacheContents();
    assert.equal(narinfos.length, closure.paths.length);
    assert.ok(narinfos.every((line) => line.endsWith(': 200')));
    assert.equal(blobs.length, closure.paths.length);
  });
});
