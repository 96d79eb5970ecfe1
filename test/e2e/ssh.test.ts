// The real Nix clients (2.8 and 2.26) against niche's SSH sessions over ssh:// (the serve protocol) and
// ssh-ng:// (the worker protocol):
// `nix store ping`, `nix copy --to` (verified and signed by niche), `nix path-info --store`, substitution
// with require-sigs, `nix copy --from`, the pushed paths substituted back over HTTP, and refusals that end
// with niche's message in the client's output. Nix runs `ssh`; a fake one (test/helpers/fake-ssh.ts) first
// on PATH carries the session to runSshSession in this process, with the principal the test chooses.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { NixCommandError, nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import { buildClosure, pathInfos, substitute, type BuiltClosure } from '../helpers/nix-closure.js';
import { startSshE2e, type SshE2e } from '../helpers/ssh-e2e.js';

for (const version of nixVersionsUnderTest())
  for (const scheme of ['ssh', 'ssh-ng'] as const)
    describe(
      `Nix ${version} over ${scheme}:// (${scheme === 'ssh' ? 'serve' : 'worker'} protocol)`,
      nixTestOptions(version),
      () => {
        const store = `${scheme}://team@niche.test`;
        let e: SshE2e;
        let closure: BuiltClosure;
        const nix = (cmd: string, args: readonly string[]): Promise<{ stdout: Buffer; stderr: string }> =>
          e.nix(cmd, args);

        before(async () => {
          e = await startSshE2e(version);
          closure = await buildClosure(e.client, { bigBytes: 300_000, label: `${scheme}-${version}` });
        });
        after(async () => {
          await closure.cleanup();
          await e.stop();
        });

        it('nix store ping reaches the cache', async () => {
          e.setPrincipal(await e.principal(['team'], ['pull']));
          await nix('nix', ['store', 'ping', '--store', store]);
          assert.match(
            e.ssh.commands.at(-1) ?? '',
            scheme === 'ssh' ? /^nix-store --serve( --write)?$/ : /^(-- )?nix-daemon --stdio$/,
          );
        });

        it('a pull-only key cannot push: the client shows niche message', async () => {
          e.setPrincipal(await e.principal(['team'], ['pull']));
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
          e.setPrincipal(await e.principal(['other'], ['pull', 'push']));
          await assert.rejects(nix('nix', ['store', 'ping', '--store', store]), (error: unknown) => {
            assert.ok(error instanceof NixCommandError);
            assert.match(error.stderr, /niche: no cache named team \[CACHE_NOT_FOUND\]/);
            return true;
          });
        });

        it('nix copy --to pushes the closure, verified and signed; path-info, copy --from and substitution read it back', async () => {
          e.setPrincipal(await e.principal(['team'], ['pull', 'push']));
          await nix('nix', ['copy', '--to', store, closure.top]);
          for (const path of closure.paths) {
            const hash = path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
            const response = await fetch(`${e.t.url}/team/${hash}.narinfo`, {
              headers: { authorization: `Bearer ${e.pullToken}` },
            });
            const text = await response.text();
            assert.equal(response.status, 200, text);
            assert.match(
              text,
              new RegExp(`^Sig: ${e.teamKey.split(':')[0] ?? ''}:`, 'm'),
              `${path} signed by niche`,
            );
          }

          e.setPrincipal(await e.principal(['team'], ['pull']));
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
            e.teamKey,
            '--option',
            'require-sigs',
            'true',
          ]);
          for (const path of closure.paths)
            assert.ok(e.client.hasPath(path), `${path} substituted over ssh://`);

          // nix copy --from, checking signatures.
          await closure.deleteOutputs();
          await nix('nix', [
            'copy',
            '--from',
            store,
            '--option',
            'trusted-public-keys',
            e.teamKey,
            closure.top,
          ]);
          for (const path of closure.paths) assert.ok(e.client.hasPath(path), `${path} copied from ssh://`);

          // The pushed paths substituted back over HTTP.
          await closure.deleteOutputs();
          await e.client.setToken(e.pullToken);
          try {
            await substitute(e.client, `${e.t.url}/team`, [closure.top], e.teamKey);
          } finally {
            await e.client.setToken(undefined);
          }
          const after = await pathInfos(e.client, [closure.top]);
          for (const [path, info] of closure.infos) {
            assert.equal(after.get(path)?.narHash, info.narHash, `NarHash of ${path}`);
            await e.client.run('nix-store', ['--verify-path', path]);
          }
        });
      },
    );
