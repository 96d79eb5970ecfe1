// The real Nix clients (2.8 and 2.26) against niche's SSH sessions over ssh:// (the serve protocol) and
// ssh-ng:// (the worker protocol):
// `nix store ping`, `nix copy --to` (verified and signed by niche), `nix path-info --store`, substitution
// with require-sigs, `nix copy --from`, the pushed paths substituted back over HTTP, and refusals that end
// with niche's message in the client's output. Nix runs `ssh`; a fake one (test/helpers/fake-ssh.ts) first
// on PATH carries the session to runSshSession in this process, with the principal the test chooses.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Principal } from '../../src/cache/auth.js';
import { createCacheWithKey } from '../../src/cache/admin-service.js';
import { generateToken, hashToken } from '../../src/cache/tokens.js';
import type { Permission } from '../../src/db/metadata-store.js';
import { runSshSession } from '../../src/ssh/session.js';
import { startFakeSsh, type FakeSsh } from '../helpers/fake-ssh.js';
import { NixCommandError, nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import {
  buildClosure,
  nixClient,
  pathInfos,
  substitute,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined };

for (const version of nixVersionsUnderTest())
  for (const scheme of ['ssh', 'ssh-ng'] as const)
    describe(
      `Nix ${version} over ${scheme}:// (${scheme === 'ssh' ? 'serve' : 'worker'} protocol)`,
      nixTestOptions(version),
      () => {
        const store = `${scheme}://team@niche.test`;
        let t: TestServer;
        let ssh: FakeSsh;
        let client: NixClient;
        let closure: BuiltClosure;
        let teamKey: string;
        let pullToken: string;
        /** Who the next SSH sessions are. */
        let sessionPrincipal: Principal = { kind: 'anonymous' };

        const principal = async (caches: string[], permissions: Permission[]): Promise<Principal> => {
          const token = await t.server.stores.db.createToken({
            description: 'ssh e2e',
            tokenHash: hashToken(generateToken()),
            scopes: caches.map((cachePattern) => ({ cachePattern, permissions })),
            expiresAt: undefined,
          });
          return { kind: 'token', token };
        };

        /** Runs a Nix command with the fake ssh first on PATH. */
        const nix = (cmd: string, args: readonly string[]): Promise<{ stdout: Buffer; stderr: string }> =>
          client.run('env', [`PATH=${ssh.binDir}:/usr/local/bin:/usr/bin:/bin`, cmd, ...args]);

        before(async () => {
          t = await startTestServer();
          const team = await createCacheWithKey(t.server.stores.db, {
            name: 'team',
            isPublic: false,
            priority: 40,
          });
          await createCacheWithKey(t.server.stores.db, { name: 'other', isPublic: false, priority: 40 });
          const keys = await t.server.service.keys(team);
          teamKey = keys.signing[0]?.publicKey.toString() ?? '';
          pullToken = generateToken();
          await t.server.stores.db.createToken({
            description: 'http pull',
            tokenHash: hashToken(pullToken),
            scopes: [{ cachePattern: 'team', permissions: ['pull'] }],
            expiresAt: undefined,
          });
          ssh = await startFakeSsh(async (session) => {
            const at = session.destination.indexOf('@');
            const result = await runSshSession({
              service: t.server.service,
              principal: sessionPrincipal,
              cacheName: at === -1 ? session.destination : session.destination.slice(0, at),
              command: session.command,
              input: session.input,
              output: session.output,
              stderr: session.stderr,
              log: quiet,
            });
            return result.exitCode;
          });
          client = await nixClient({ version });
          closure = await buildClosure(client, { bigBytes: 300_000, label: `${scheme}-${version}` });
        });
        after(async () => {
          await closure.cleanup();
          await client.cleanup();
          await ssh.close();
          await t.stop();
        });

        it('nix store ping reaches the cache', async () => {
          sessionPrincipal = await principal(['team'], ['pull']);
          await nix('nix', ['store', 'ping', '--store', store]);
          assert.match(
            ssh.commands.at(-1) ?? '',
            scheme === 'ssh' ? /^nix-store --serve( --write)?$/ : /^(-- )?nix-daemon --stdio$/,
          );
        });

        it('a pull-only key cannot push: the client shows niche message', async () => {
          sessionPrincipal = await principal(['team'], ['pull']);
          await assert.rejects(nix('nix', ['copy', '--to', store, closure.top]), (error: unknown) => {
            assert.ok(error instanceof NixCommandError);
            assert.match(
              error.stderr,
              /niche: this token lacks the push permission on cache team \[PERMISSION_DENIED\]/,
            );
            return true;
          });
        });

        it('a key of another cache is refused with niche message', async () => {
          sessionPrincipal = await principal(['other'], ['pull', 'push']);
          await assert.rejects(nix('nix', ['store', 'ping', '--store', store]), (error: unknown) => {
            assert.ok(error instanceof NixCommandError);
            assert.match(error.stderr, /niche: no cache named team \[CACHE_NOT_FOUND\]/);
            return true;
          });
        });

        it('nix copy --to pushes the closure, verified and signed; path-info, copy --from and substitution read it back', async () => {
          sessionPrincipal = await principal(['team'], ['pull', 'push']);
          await nix('nix', ['copy', '--to', store, closure.top]);
          for (const path of closure.paths) {
            const hash = path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
            const response = await fetch(`${t.url}/team/${hash}.narinfo`, {
              headers: { authorization: `Bearer ${pullToken}` },
            });
            const text = await response.text();
            assert.equal(response.status, 200, text);
            assert.match(
              text,
              new RegExp(`^Sig: ${teamKey.split(':')[0] ?? ''}:`, 'm'),
              `${path} signed by niche`,
            );
          }

          sessionPrincipal = await principal(['team'], ['pull']);
          const { stdout } = await nix('nix', [
            'path-info',
            '--json',
            '--recursive',
            '--store',
            store,
            closure.top,
          ]);
          const remote = stdout.toString();
          for (const [path, info] of closure.infos) {
            assert.ok(remote.includes(path), `path-info lists ${path}`);
            assert.ok(remote.includes(info.narHash.replace(/^sha256:/, '')) || remote.includes(info.narHash));
          }

          // Substitution over ssh:// with signatures required, trusting only the cache's key.
          await closure.deleteOutputs();
          await nix('nix-store', [
            '--realise',
            closure.top,
            '--option',
            'substituters',
            store,
            '--option',
            'trusted-public-keys',
            teamKey,
            '--option',
            'require-sigs',
            'true',
          ]);
          for (const path of closure.paths)
            assert.ok(client.hasPath(path), `${path} substituted over ssh://`);

          // nix copy --from, checking signatures.
          await closure.deleteOutputs();
          await nix('nix', [
            'copy',
            '--from',
            store,
            '--option',
            'trusted-public-keys',
            teamKey,
            closure.top,
          ]);
          for (const path of closure.paths) assert.ok(client.hasPath(path), `${path} copied from ssh://`);

          // The pushed paths substituted back over HTTP.
          await closure.deleteOutputs();
          await client.setToken(pullToken);
          try {
            await substitute(client, `${t.url}/team`, [closure.top], teamKey);
          } finally {
            await client.setToken(undefined);
          }
          const after = await pathInfos(client, [closure.top]);
          for (const [path, info] of closure.infos) {
            assert.equal(after.get(path)?.narHash, info.narHash, `NarHash of ${path}`);
            await client.run('nix-store', ['--verify-path', path]);
          }
        });
      },
    );
