// `niche serve --workers 2` with the real Nix client (2.8 and 2.26): `nix copy --to` pushes a closure of
// every shape through the workers, the paths are deleted locally, and Nix substitutes them back with
// signatures required. Nix opens several connections, which the primary hands to both workers in turn,
// so uploads, presence checks and downloads of one closure land on different processes: each must see
// what the other committed (a narinfo PUT checks its references, which another worker may have stored).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { cacheInfoSchema } from '../../src/api/v1.js';
import {
  accessLines,
  runMain,
  startServe,
  waitForAccessLines,
  type ServeProcess,
} from '../helpers/cli-process.js';
import { nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import {
  buildClosure,
  nixClient,
  substitute,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

for (const version of nixVersionsUnderTest())
  void describe(
    `Nix ${version}: nix copy --to and substitution through niche serve --workers 2`,
    nixTestOptions(version),
    () => {
      let dir: TempDir | undefined;
      let server: ServeProcess | undefined;
      let client: NixClient | undefined;
      let closure: BuiltClosure | undefined;

      before(async () => {
        dir = await makeTempDir('workers-nix');
        server = await startServe({ dataDir: dir.path, args: ['--workers', '2'], logLevel: 'info' });
        client = await nixClient({ version });
        closure = await buildClosure(client, { bigBytes: 2_000_000, label: `workers-${version}` });
      });
      after(async () => {
        await server?.stop();
        await closure?.cleanup();
        await client?.cleanup();
        await dir?.cleanup();
      });

      void it('pushes a closure through both workers and substitutes it back with signatures required', async () => {
        assert.ok(dir && server && client && closure);
        const created = await runMain(
          ['token', 'create', '--data', dir.path, '--cache', 'main', '--push'],
          {},
        );
        assert.equal(created.code, 0, created.stderr);
        await client.setToken(created.stdout.trim());
        await client.run('nix', ['copy', '--to', `${server.url}/main/push`, closure.top]);
        await client.setToken(undefined);

        const info = cacheInfoSchema.parse(await (await fetch(`${server.url}/api/v1/caches/main`)).json());
        const key = info.publicKeys[0];
        assert.ok(key !== undefined);
        await closure.deleteOutputs();
        for (const path of closure.paths) assert.ok(!client.hasPath(path), `${path} was deleted locally`);
        await substitute(client, `${server.url}/main`, [closure.top], key);
        for (const path of closure.paths) assert.ok(client.hasPath(path), `${path} was substituted`);

        const downloads = await waitForAccessLines(
          server,
          closure.paths.length,
          (line) => line.method === 'GET' && line.url.includes('/nar/'),
        );
        const lines = accessLines(server);
        const uploads = lines.filter((line) => line.method === 'PUT');
        assert.ok(uploads.length >= 2 * closure.paths.length, 'a NAR and a narinfo per path');
        assert.ok(
          uploads.every((line) => line.status < 300),
          JSON.stringify(uploads),
        );
        assert.equal(downloads.length, closure.paths.length);
        assert.equal(new Set(lines.map((line) => line.pid)).size, 2, 'both workers answered Nix');
      });
    },
  );
