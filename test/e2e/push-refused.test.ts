// Pushing needs a token with push permission: `nix copy --to` without credentials, with an unknown token
// or with a pull-only token must fail, and leave the cache without any of the paths (no narinfo, no NAR).
// A final push with a real push token proves the refusals were about the credentials and nothing else.
// `niche push` with a pull-only token reports the server's 403 at once (exit 77), with one upload and no
// retry, even for paths large enough that the server answers before it has read the body.
// `nix copy` runs with Nix 2.8 and 2.26; `niche push` with 2.8 only (the Nix version only changes its
// `nix path-info`, which test/e2e/pusher-substitutes.test.ts covers with both).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateToken } from '../../src/cache/tokens.js';
import { runCli, runMain, startServe, type ServeProcess } from '../helpers/cli-process.js';
import { NixCommandError, nixEnv, nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import { buildClosure, nixClient, type BuiltClosure, type NixClient } from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

for (const version of nixVersionsUnderTest())
  describe(`Nix ${version}: nix copy --to niche without push rights`, nixTestOptions(version), () => {
    let t: TestServer | undefined;
    let client: NixClient | undefined;
    let closure: BuiltClosure | undefined;

    before(async () => {
      t = await startTestServer();
      client = await nixClient({ version });
      closure = await buildClosure(client, { label: `push-refused-${version}` });
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
        client.run('nix', ['copy', '--to', `${t.url}/main/push`, closure.top]),
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
      await client.run('nix', ['copy', '--to', `${t.url}/main/push`, closure.top]);
      const { narinfos, blobs } = await cacheContents();
      assert.equal(narinfos.length, closure.paths.length);
      assert.ok(narinfos.every((line) => line.endsWith(': 200')));
      assert.equal(blobs.length, closure.paths.length);
    });
  });

describe('niche push with a pull-only token', nixTestOptions(), () => {
  let work: TempDir | undefined;
  let server: ServeProcess | undefined;
  let client: NixClient | undefined;
  const closures: BuiltClosure[] = [];

  before(async () => {
    work = await makeTempDir('e2e-push-refused');
    // Its own process, as deployed: the connection's timing is the real one, not a shared event loop's.
    server = await startServe({ dataDir: work.path });
    client = await nixClient();
    for (const label of ['refused-a', 'refused-b', 'refused-c']) {
      closures.push(await buildClosure(client, { label, bigBytes: 24 << 20 }));
    }
  });
  after(async () => {
    for (const closure of closures) await closure.cleanup().catch(() => undefined);
    await client?.cleanup();
    await server?.stop();
    await work?.cleanup();
  });

  it('reports the 403 at once with exit 77, after one upload and no retry', async () => {
    assert.ok(work && server && client);
    const created = await runCli(['token', 'create', '--cache', 'main', '--data', work.path]);
    assert.equal(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    // The big leaves: no references, so each is a closure of one path, pushed one at a time.
    const leaves = closures.map((closure) => {
      const leaf = closure.paths.find((path) => path.endsWith('-niche-e2e-leaf'));
      assert.ok(leaf !== undefined);
      return leaf;
    });
    const env = { ...nixEnv(client.home), NICHE_TOKEN: token, NICHE_CONFIG_DIR: work.path };
    const started = Date.now();
    const {
      code,
      stdout: out,
      stderr: err,
    } = await runMain(['push', `${server.url}/main`, '-j', '1', '--compression', 'none', ...leaves], env);
    const elapsed = Date.now() - started;
    assert.equal(code, 77, err);
    assert.match(
      err,
      /^error: this token lacks the push permission on cache main \(HTTP 403 from [^)]+\) \(PERMISSION_DENIED\)$/m,
    );
    assert.doesNotMatch(err, /retrying|EPIPE|ECONNRESET/);
    assert.equal(err.match(/^failed /gm)?.length, 1, `exactly one upload was attempted:\n${err}`);
    assert.match(out, /failed 1, cancelled 2/);
    // One path's retries alone would take 0.5 + 1 + 2 + 4 s.
    assert.ok(elapsed < 5_000, `took ${elapsed} ms`);
  });
});
