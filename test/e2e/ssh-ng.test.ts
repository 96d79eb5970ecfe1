// The real Nix clients (2.8 and 2.26) against niche's worker protocol (ssh-ng://, `nix-daemon --stdio`),
// for what the common SSH flows in ssh.test.ts do not reach: what each version sends (recorded per
// session), where the two differ (store info and the trusted flag, path-from-hash-part, the order of
// nix copy --from's queries and its sessions, the signature warnings), the reads nix store ls/cat/verify
// and nix-store -q make, uploads other than nix copy (nix store add-file), and the operations a cache does
// not do, refused with niche's message while the session carries on.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NixCommandError, nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import { buildClosure, generateNixKey, type BuiltClosure } from '../helpers/nix-closure.js';
import { startSshE2e, type RecordedSession, type SshE2e } from '../helpers/ssh-e2e.js';

const store = 'ssh-ng://team@niche.test';
const missing = '/nix/store/00000000000000000000000000000000-niche-e2e-missing';

/** Asserts that `run` fails with `pattern` in the client's stderr. */
async function failsWith(run: Promise<unknown>, pattern: RegExp): Promise<string> {
  let stderr = '';
  await assert.rejects(run, (error: unknown) => {
    assert.ok(error instanceof NixCommandError, String(error));
    stderr = error.stderr;
    assert.match(error.stderr, pattern);
    return true;
  });
  return stderr;
}

for (const version of nixVersionsUnderTest())
  describe(`Nix ${version} over ssh-ng:// (worker protocol specifics)`, nixTestOptions(version), () => {
    let e: SshE2e;
    let closure: BuiltClosure;
    /** The store path in the closure that is one regular file. */
    let filePath: string;

    /** The sessions `run` opened, with what they carried. */
    const sessionsOf = async (run: () => Promise<unknown>): Promise<RecordedSession[]> => {
      const before = e.sessions.length;
      await run();
      return e.sessions.slice(before);
    };

    before(async () => {
      e = await startSshE2e(version);
      closure = await buildClosure(e.client, { label: `ssh-ng-${version}` });
      filePath = closure.paths.find((path) => path.endsWith('-niche-e2e-file')) ?? '';
      e.setPrincipal(await e.principal(['team'], ['pull', 'push']));
      const push = await sessionsOf(() => e.nix('nix', ['copy', '--to', store, closure.top]));
      // Both versions push at 1.34/1.38 with QueryValidPaths, then the whole closure in one framed stream.
      assert.deepEqual(
        push.map((session) => session.ops),
        [['QueryValidPaths', 'AddMultipleToStore']],
      );
      e.setPrincipal(await e.principal(['team'], ['pull']));
    });
    after(async () => {
      await closure.cleanup();
      await e.stop();
    });

    it(`store ${version === '2.8' ? 'ping' : 'info'} is the handshake alone; 2.26 shows niche and the trusted flag`, async () => {
      if (version === '2.8') {
        const sessions = await sessionsOf(() => e.nix('nix', ['store', 'ping', '--store', store]));
        assert.deepEqual(
          sessions.map((session) => session.ops),
          [[]],
        );
        return;
      }
      const sessions = await sessionsOf(async () => {
        const { stdout } = await e.nix('nix', ['store', 'info', '--json', '--store', store]);
        const info = JSON.parse(stdout.toString()) as Record<string, unknown>;
        assert.equal(info.version, 'niche');
        // 2: not a trusted user (niche checks every upload itself), which 2.26 shows as 0.
        assert.equal(info.trusted, 0);
        const { stderr } = await e.nix('nix', ['store', 'info', '--store', store]);
        assert.match(stderr, /^Version: niche$/m);
        assert.match(stderr, /^Trusted: 0$/m);
      });
      assert.deepEqual(
        sessions.map((session) => session.ops),
        [[], []],
      );
    });

    it('path-info of a path the cache lacks: valid = 0, which the client reports itself', async () => {
      const sessions = await sessionsOf(() =>
        failsWith(
          e.nix('nix', ['path-info', '--store', store, missing]),
          /path '.*-niche-e2e-missing' is not valid/,
        ),
      );
      assert.equal(sessions[0]?.ops[0], 'QueryMissing');
      assert.ok(sessions.some((session) => session.ops.includes('QueryPathInfo')));
      for (const session of sessions) assert.equal(session.exitCode, 0);
    });

    it(`copy --from: 2.8 asks BuildPathsWithResults first, 2.26 QueryMissing and then a session per NAR`, async () => {
      await closure.deleteOutputs();
      const sessions = await sessionsOf(() =>
        e.nix('nix', ['copy', '--from', store, '--option', 'trusted-public-keys', e.teamKey, closure.top]),
      );
      for (const path of closure.paths) assert.ok(e.client.hasPath(path), `${path} copied`);
      const ops = sessions.flatMap((session) => session.ops);
      assert.equal(ops.filter((op) => op === 'NarFromPath').length, closure.paths.length);
      if (version === '2.8') {
        assert.equal(sessions.length, 1);
        assert.equal(ops[0], 'BuildPathsWithResults');
      } else {
        assert.deepEqual(ops.slice(0, 2), ['QueryMissing', 'BuildPathsWithResults']);
        assert.equal(sessions.length, closure.paths.length, 'a new session for each NAR after the first');
      }
    });

    it('copy --from of a path the cache lacks fails with niche message', async () => {
      await failsWith(
        e.nix('nix', ['copy', '--from', store, missing]),
        /niche: path '\/nix\/store\/0{32}-niche-e2e-missing' is not in cache team \[NOT_FOUND\]/,
      );
    });

    it('substitution needs the cache key among the trusted ones; 2.8 and 2.26 word the warning differently', async () => {
      await closure.deleteOutputs();
      const stranger = await generateNixKey(e.client, 'stranger');
      const stderr = await failsWith(
        e.nix('nix-store', [
          '--realise',
          filePath,
          '--option',
          'substituters',
          store,
          '--option',
          'trusted-public-keys',
          stranger.publicKey,
          '--option',
          'require-sigs',
          'true',
        ]),
        /error: /,
      );
      assert.match(
        stderr,
        version === '2.8'
          ? /the substitute for '.*-niche-e2e-file' from 'ssh-ng:\/\/team@niche\.test' is not signed by any of the keys in 'trusted-public-keys'/
          : /ignoring substitute for '.*-niche-e2e-file' from 'ssh-ng:\/\/.*', as it's not signed by any of the keys in 'trusted-public-keys'/,
      );
      assert.ok(!e.client.hasPath(filePath));
      await e.nix('nix-store', [
        '--realise',
        filePath,
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
      assert.ok(e.client.hasPath(filePath));
    });

    it('nix store ls, cat and dump-path read through IsValidPath and NarFromPath; verify checks hashes and the signature', async () => {
      const { stdout: cat } = await e.nix('nix', ['store', 'cat', '--store', store, filePath]);
      assert.equal(cat.toString(), 'a store path that is one file\n');
      const { stdout: ls } = await e.nix('nix', ['store', 'ls', '--store', store, '-R', closure.top]);
      assert.match(ls.toString(), /mid/);
      const { stdout: dumped } = await e.nix('nix', ['store', 'dump-path', '--store', store, filePath]);
      const { stdout: local } = await e.client.run('nix-store', ['--dump', filePath]);
      assert.ok(dumped.equals(local), 'nix store dump-path gives the NAR the client would make');
      await e.nix('nix', [
        'store',
        'verify',
        '--store',
        store,
        '--option',
        'trusted-public-keys',
        e.teamKey,
        '-r',
        closure.top,
      ]);
      const stranger = await generateNixKey(e.client, 'stranger-verify');
      await failsWith(
        e.nix('nix', [
          'store',
          'verify',
          '--store',
          store,
          '--option',
          'trusted-public-keys',
          stranger.publicKey,
          filePath,
        ]),
        /untrusted/,
      );
    });

    it('nix-store -q --referrers is answered (with none)', async () => {
      const { stdout } = await e.nix('nix-store', ['--query', '--referrers', '--store', store, filePath]);
      assert.equal(stdout.toString(), '');
    });

    it(
      'nix store path-from-hash-part (2.26; Nix 2.8 has no such command)',
      version === '2.8' ? { skip: 'Nix 2.8 has no nix store path-from-hash-part' } : {},
      async () => {
        const hashPart = filePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
        const { stdout } = await e.nix('nix', ['store', 'path-from-hash-part', '--store', store, hashPart]);
        assert.equal(stdout.toString().trim(), filePath);
        await failsWith(
          e.nix('nix', ['store', 'path-from-hash-part', '--store', store, '0'.repeat(32)]),
          /there is no store path corresponding to '0{32}'/,
        );
      },
    );

    it('nix store add-file and add-path upload with AddToStoreNar: verified and signed, refused for a pull-only key', async () => {
      const file = join(e.client.home, `add-file-${version}.txt`);
      await writeFile(file, `added over ssh-ng:// by Nix ${version}\n`);
      await failsWith(
        e.nix('nix', ['store', 'add-file', '--store', store, file]),
        /niche: this token lacks the push permission on cache team \[PERMISSION_DENIED\]/,
      );
      e.setPrincipal(await e.principal(['team'], ['pull', 'push']));
      let added = '';
      try {
        const sessions = await sessionsOf(async () => {
          const { stdout } = await e.nix('nix', ['store', 'add-file', '--store', store, file]);
          added = stdout.toString().trim();
        });
        assert.ok(sessions.flatMap((session) => session.ops).includes('AddToStoreNar'));
        const dir = join(e.client.home, `add-path-${version}`);
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, 'inside'), 'a directory added with nix store add-path\n');
        const { stdout } = await e.nix('nix', ['store', 'add-path', '--store', store, dir]);
        const { stdout: info } = await e.nix('nix', [
          'path-info',
          '--sigs',
          '--store',
          store,
          stdout.toString().trim(),
        ]);
        assert.match(info.toString(), new RegExp(`${e.teamKey.split(':')[0] ?? ''}:`));
      } finally {
        e.setPrincipal(await e.principal(['team'], ['pull']));
      }
      const hash = added.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const response = await fetch(`${e.t.url}/team/${hash}.narinfo`, {
        headers: { authorization: `Bearer ${e.pullToken}` },
      });
      const narinfo = await response.text();
      assert.equal(response.status, 200, narinfo);
      assert.match(narinfo, /^CA: fixed:sha256:/m);
      assert.match(narinfo, new RegExp(`^Sig: ${e.teamKey.split(':')[0] ?? ''}:`, 'm'));
    });

    it("what a cache does not do (AddToStore, CollectGarbage, OptimiseStore, AddSignatures, builds) is refused with niche's message", async () => {
      e.setPrincipal(await e.principal(['team'], ['pull', 'push']));
      try {
        const file = join(e.client.home, `add-${version}.txt`);
        await writeFile(file, 'nix-store --add\n');
        const key = join(e.client.home, 'signing-key');
        await e.client.run('nix-store', ['--generate-binary-cache-key', 'client-1', key, `${key}.pub`]);
        const unsupported = (op: string): RegExp =>
          new RegExp(`error: niche: ${op} is not supported by this cache: .*\\[NOT_SUPPORTED\\]`);
        const derivation = closure.derivations[0] ?? '';
        for (const [args, message] of [
          [['nix-store', '--add', '--store', store, file], unsupported('operation 7 \\(AddToStore\\)')],
          [['nix', 'store', 'gc', '--store', store], unsupported('operation 20 \\(CollectGarbage\\)')],
          [['nix', 'store', 'optimise', '--store', store], unsupported('operation 34 \\(OptimiseStore\\)')],
          [
            ['nix', 'store', 'sign', '--store', store, '-k', key, filePath],
            unsupported('operation 37 \\(AddSignatures\\)'),
          ],
          [
            ['nix-store', '--realise', '--store', store, derivation],
            /error: niche: cache team is a binary cache: it does not build .*\.drv!\* \[NOT_SUPPORTED\]/,
          ],
        ] as const) {
          const sessions = await sessionsOf(() => failsWith(e.nix(args[0], args.slice(1)), message));
          // Refused after the whole request was read: the session ended normally, when the client closed it.
          assert.deepEqual(
            sessions.map((session) => session.exitCode),
            sessions.map(() => 0),
          );
        }
      } finally {
        e.setPrincipal(await e.principal(['team'], ['pull']));
      }
    });
  });
