// Garbage collection seen by the real Nix client (2.8 and 2.26): two closures pushed with `nix copy --to`,
// one used since (a narinfo fetched, once the pushes look two hours old), a path of the other pinned
// through the API, a retention set through the API; after the collection, exactly the closure of the used path and the pinned one's remain, and
// `nix copy --from` of each remaining top-level path (signatures required) brings a whole closure back.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';

import { cacheInfoSchema, pinListSchema } from '../../src/api/v1.js';
import { accessResolutionMs } from '../../src/cache/access-resolution.js';
import { GarbageCollector } from '../../src/cache/gc.js';
import { NixCommandError, nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import { buildClosure, nixClient, type BuiltClosure, type NixClient } from '../helpers/nix-closure.js';
import { agePaths, startTestServer, type TestServer } from '../helpers/server.js';

const HOUR = 3_600_000;

function hashOf(storePath: string): string {
  return storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
}

function byName(closure: BuiltClosure, name: string): string {
  const path = closure.paths.find((candidate) => candidate.endsWith(`-niche-e2e-${name}`));
  assert.ok(path !== undefined, name);
  return path;
}

for (const version of nixVersionsUnderTest())
  void describe(`Nix ${version}: retention and pins, then nix copy --from`, nixTestOptions(version), () => {
    let client: NixClient | undefined;
    let used: BuiltClosure | undefined;
    let other: BuiltClosure | undefined;
    let server: TestServer | undefined;

    before(async () => {
      client = await nixClient({ version });
      used = await buildClosure(client, { label: `gc-used-${version}` });
      other = await buildClosure(client, { label: `gc-other-${version}` });
      server = await startTestServer({ flags: { gcInterval: 'off' } });
    });
    after(async () => {
      await server?.stop();
      await used?.cleanup();
      await other?.cleanup();
      await client?.cleanup();
    });

    void it('keeps the closures of used and pinned paths, and Nix copies them back whole', async () => {
      assert.ok(client && used && other && server);
      const t = server;
      const nix = client;
      const otherClosure = other;
      await nix.setToken(await t.token(['main'], ['pull', 'push']));
      await nix.run('nix', ['copy', '--to', `${t.url}/main/push`, used.top, other.top]);
      await nix.setToken(undefined);
      const admin = await t.token(['main'], ['pull', 'cache-admin']);
      const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };

      // Pushed two hours ago as far as the database knows, so a pull now is recorded (accesses within the
      // resolution, here an hour, of the known one are not written), later than every push.
      await agePaths(t, 2 * HOUR);
      const accessedAt = Date.now();
      assert.equal((await fetch(`${t.url}/main/${hashOf(used.top)}.narinfo`)).status, 200);
      await t.server.service.access.flush();

      const pinned = byName(other, 'mid');
      const pin = await fetch(`${t.url}/api/v1/caches/main/pins/release`, {
        method: 'PUT',
        headers,
        body: JSON.stringify({ storePath: pinned }),
      });
      assert.equal(pin.status, 200, await pin.text());
      const pins = pinListSchema.parse(await (await fetch(`${t.url}/api/v1/caches/main/pins`)).json());
      assert.deepEqual(
        pins.pins.map((entry) => [entry.name, entry.storePath]),
        [['release', pinned]],
      );
      const patch = await fetch(`${t.url}/api/v1/caches/main`, {
        method: 'PATCH',
        headers,
        body: JSON.stringify({ retentionSeconds: 3600 }),
      });
      const patched = await patch.text();
      assert.equal(patch.status, 200, patched);
      const info = cacheInfoSchema.parse(JSON.parse(patched));
      assert.equal(info.retentionSeconds, 3600);
      assert.equal(info.usage?.paths, used.paths.length + other.paths.length);

      // An hour after the pull plus the resolution (a tenth of the retention), less a second: everything not
      // needed by the pull or by the pin has expired.
      const report = await new GarbageCollector(t.server.service, pino({ level: 'silent' })).run({
        now: () => new Date(accessedAt + HOUR + accessResolutionMs(HOUR) - 1000),
      });
      const gone = ['top', 'file', 'link'].map((name) => byName(otherClosure, name));
      const kept = [...used.paths, pinned, byName(other, 'leaf')];
      assert.equal(report.caches[0]?.paths, gone.length);
      for (const path of gone) {
        assert.equal((await fetch(`${t.url}/main/${hashOf(path)}.narinfo`)).status, 404, path);
      }
      for (const path of kept) {
        assert.equal((await fetch(`${t.url}/main/${hashOf(path)}.narinfo`)).status, 200, path);
      }

      const key = (
        cacheInfoSchema.parse(await (await fetch(`${t.url}/api/v1/caches/main`)).json()).publicKeys[0] ?? ''
      ).trim();
      await used.deleteOutputs();
      await other.deleteOutputs();
      const copyFrom = (path: string) =>
        nix.run('nix', [
          'copy',
          '--from',
          `${t.url}/main`,
          path,
          '--option',
          'trusted-public-keys',
          key,
          '--option',
          'require-sigs',
          'true',
        ]);
      for (const top of [used.top, pinned]) await copyFrom(top);
      for (const path of kept) assert.ok(nix.hasPath(path), `${path} came back`);
      await assert.rejects(copyFrom(other.top), NixCommandError);
      assert.ok(!nix.hasPath(other.top));
    });
  });
