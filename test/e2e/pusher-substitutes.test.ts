// The pusher substitutes its own pushes (issue 11, item 2). Nix records every narinfo it uploads in its
// narinfo disk cache (~/.cache/nix/binary-cache-v*.sqlite, 30 days by default) as it wrote it: without
// niche's signature. Pushed with plain `nix copy --to` as the README says, deleted locally (a garbage
// collection) and substituted back on the same machine, same HOME, default TTLs, with signatures
// required and only niche's key trusted, Nix must get niche's signed narinfo and not its own unsigned
// copy. Same for `niche push`. With Nix 2.8 and 2.26.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cacheInfoSchema } from '../../src/api/v1.js';
import { join } from 'node:path';
import { runCli } from '../helpers/cli-process.js';
import { nixBinDir, nixEnv, nixTestOptions, nixVersionsUnderTest, onClientMachine } from '../helpers/nix.js';
import {
  buildClosure,
  nixClient,
  substitute,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

for (const version of nixVersionsUnderTest()) {
  describe(
    `Nix ${version}: the pusher substitutes what it pushed (default narinfo TTLs)`,
    nixTestOptions(version),
    () => {
      let t: TestServer | undefined;
      let nix: NixClient | undefined;
      const closures: BuiltClosure[] = [];

      before(async () => {
        t = await startTestServer();
        nix = await nixClient({ version, defaultTtls: true });
      });
      after(async () => {
        for (const closure of closures) await closure.cleanup().catch(() => undefined);
        await nix?.cleanup();
        await t?.stop();
      });

      async function cacheInfo(): Promise<{ url: string; pushUrl: string; key: string }> {
        assert.ok(t);
        const response = await fetch(`${t.url}/api/v1/caches/main`);
        assert.equal(response.status, 200);
        const info = cacheInfoSchema.parse(await response.json());
        const key = info.publicKeys[0];
        assert.ok(key !== undefined);
        return { url: info.url, pushUrl: info.pushUrl, key };
      }

      /** Deletes the closure locally, then substitutes it back from the cache with require-sigs. */
      async function roundTrip(closure: BuiltClosure, url: string, key: string): Promise<void> {
        assert.ok(nix);
        await closure.deleteOutputs();
        for (const path of closure.paths) assert.ok(!nix.hasPath(path), `${path} was deleted`);
        await substitute(nix, url, [closure.top], key);
        for (const path of closure.paths) assert.ok(nix.hasPath(path), `${path} was substituted`);
        const { stdout } = await nix.run('nix', ['path-info', '--sigs', closure.top]);
        assert.match(stdout.toString('utf8'), new RegExp(`${key.split(':')[0] ?? ''}:`), 'signed by niche');
      }

      it('after plain nix copy --to (as the README says), with signatures required', async () => {
        assert.ok(t && nix);
        const closure = await buildClosure(nix, { label: `pusher-copy-${version}` });
        closures.push(closure);
        const { url, pushUrl, key } = await cacheInfo();
        assert.equal(pushUrl, `${url}/push`);
        await nix.setToken(await t.token(['main'], ['pull', 'push']));
        await nix.run('nix', ['copy', '--to', `${pushUrl}?compression=zstd`, closure.top]);
        await roundTrip(closure, url, key);
      });

      it('after niche push, with signatures required', async () => {
        assert.ok(t && nix);
        const closure = await buildClosure(nix, { label: `pusher-niche-${version}` });
        closures.push(closure);
        const { url, key } = await cacheInfo();
        // niche runs as on a machine whose Nix is this one: its `nix` and its /nix/store.
        const bin = nixBinDir(version, nix.home);
        const env = {
          ...nixEnv(nix.home),
          PATH: bin === undefined ? process.env.PATH : `${bin}:${process.env.PATH ?? ''}`,
          NICHE_TOKEN: await t.token(['main'], ['pull', 'push']),
          NICHE_CONFIG_DIR: join(nix.home, 'niche'),
        };
        const push = await runCli(['push', url, closure.top], {
          env,
          wrap: (program, args) => onClientMachine(version, program, args),
          timeoutMs: 120_000,
        });
        assert.equal(push.code, 0, push.stderr);
        assert.match(push.stdout, new RegExp(`pushed ${closure.paths.length}, already present 0`));
        await roundTrip(closure, url, key);
      });
    },
  );
}
