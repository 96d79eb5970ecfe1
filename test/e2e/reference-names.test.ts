// A reference must name exactly a path the cache holds (issue 10, item 1). With a closure pushed by
// `nix copy`, a narinfo that names one of its paths by hash part only (`<hash>-wrongname`) or itself
// under another name is refused with REFERENCE_MISSING, and what the cache does sign, `nix path-info -r`
// resolves completely: before the fix the bad narinfo was signed and served, and Nix failed with
// "path '/nix/store/<hash>-wrongname' is not valid". With Nix 2.8 and 2.26.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import { buildClosure, nixClient, type BuiltClosure, type NixClient } from '../helpers/nix-closure.js';
import { fakeBaseName, fixture, narInfoText } from '../helpers/nar-fixtures.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';

for (const version of nixVersionsUnderTest())
  describe(
    `Nix ${version}: references by exact store path, with nix path-info -r`,
    nixTestOptions(version),
    () => {
      let t: TestServer | undefined;
      let client: NixClient | undefined;
      let closure: BuiltClosure | undefined;
      let push = '';

      before(async () => {
        t = await startTestServer();
        client = await nixClient({ version });
        closure = await buildClosure(client, { label: `reference-names-${version}` });
        push = await t.token(['main'], ['pull', 'push']);
        await client.setToken(push);
        await client.run('nix', ['copy', '--to', `${t.url}/main/push`, closure.top]);
      });
      after(async () => {
        await closure?.cleanup();
        await client?.cleanup();
        await t?.stop();
      });

      it('refuses a narinfo whose reference is renamed, and nix resolves the closure it signs', async () => {
        assert.ok(t && client && closure);
        const base = closure.top.slice('/nix/store/'.length);
        const p = fakeBaseName('niche-e2e-refers-to-top');
        const hash = p.slice(0, 32);
        const fx = await fixture('a path that refers to the pushed closure\n');
        const put = (path: string, body: Buffer | string): Promise<Response> =>
          fetch(`${t?.url ?? ''}/main/${path}`, {
            method: 'PUT',
            body,
            headers: { authorization: basicAuth(push) },
          });
        assert.equal((await put(`nar/${fx.fileName}`, fx.file)).status, 201);
        for (const wrong of [`${base.slice(0, 32)}-wrongname`, `${hash}-othername`]) {
          const response = await put(
            `${hash}.narinfo`,
            narInfoText(p, fx, { references: [base, wrong].sort() }),
          );
          const text = await response.text();
          assert.equal(response.status, 400, text);
          assert.match(text, /^error REFERENCE_MISSING: .*-(wrongname|othername)/);
        }
        assert.equal((await fetch(`${t.url}/main/${hash}.narinfo`)).status, 404);

        const good = await put(`${hash}.narinfo`, narInfoText(p, fx, { references: [base, p].sort() }));
        assert.equal(good.status, 201, await good.text());
        const { stdout } = await client.run('nix', [
          'path-info',
          '--store',
          `${t.url}/main`,
          '--recursive',
          `/nix/store/${p}`,
        ]);
        const listed = stdout.toString('utf8').trim().split('\n').sort();
        assert.deepEqual(listed, [...closure.paths, `/nix/store/${p}`].sort());
      });
    },
  );
