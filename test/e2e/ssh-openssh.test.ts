// niche behind OpenSSH, as an operator who keeps sshd in front sets it up: keys registered with
// `niche ssh-key add`, sshd's authorized_keys written by `niche ssh-authorized-keys` (each line forcing
// `niche ssh-serve`), and the real Nix clients (2.8 and 2.26) with the real OpenSSH client against a real
// sshd started on a free port. Pulls and pushes over ssh:// and ssh-ng://, refusals for an unregistered, a removed and a
// pull-only key, each ending with niche's message in the client's output.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createCacheWithKey } from '../../src/cache/admin-service.js';
import { generateToken, hashToken } from '../../src/cache/tokens.js';
import { REPO_ROOT, runCli } from '../helpers/cli-process.js';
import {
  modernNixRoot,
  NixCommandError,
  nixTestOptions,
  nixVersionsUnderTest,
  type NixVersion,
} from '../helpers/nix.js';
import {
  buildClosure,
  nixClient,
  substitute,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const SSHD = '/usr/sbin/sshd';

/** Why these tests cannot run here, or undefined. Under CI=true nothing is skipped: missing tools fail. */
function opensshMissing(version: NixVersion): string | undefined {
  if (process.env.CI === 'true') return undefined;
  if (!existsSync(SSHD)) return 'OpenSSH server (openssh-server) is not installed';
  if (process.getuid?.() !== 0) return 'sshd needs root to log a client in';
  if (version === '2.26' && !existsSync(join(modernNixRoot(), 'usr/bin/ssh'))) {
    return 'the Nix 2.26 chroot has no ssh client (chroot "$(modern-nix root)" apt-get install openssh-client)';
  }
  return undefined;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('data', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      resolve(false);
    });
  });
}

function keygen(file: string, comment: string): void {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
}

for (const version of nixVersionsUnderTest()) {
  const missing = opensshMissing(version);
  describe(
    `Nix ${version} over ssh:// through OpenSSH and niche ssh-serve`,
    missing === undefined ? nixTestOptions(version) : { skip: missing },
    () => {
      let t: TestServer;
      let dir: TempDir;
      let sshd: ChildProcess | undefined;
      let sshdLog = '';
      let port: number;
      let client: NixClient;
      let closure: BuiltClosure;
      let teamKey: string;
      let pullToken: string;

      const niche = async (...args: string[]): Promise<string> => {
        const result = await runCli([...args, '--data', t.dataDir]);
        assert.equal(result.code, 0, `niche ${args.join(' ')}: ${result.stderr}`);
        return result.stdout;
      };

      /** sshd's authorized_keys, as the operator writes it after each change of keys. */
      const writeAuthorizedKeys = async (): Promise<void> => {
        const command = `cd ${REPO_ROOT} && exec ${process.execPath} --import tsx src/cli/main.ts`;
        const lines = await niche('ssh-authorized-keys', '--command', command);
        await writeFile(join(dir.path, 'authorized_keys'), lines);
      };

      /** Runs Nix with OpenSSH using `key` (a file in dir) to reach the test's sshd. */
      const nix = (
        key: string,
        cmd: string,
        args: readonly string[],
      ): Promise<{ stdout: Buffer; stderr: string }> => {
        const options = [
          `-p ${port}`,
          `-i ${join(dir.path, key)}`,
          `-o UserKnownHostsFile=${join(dir.path, 'known_hosts')}`,
          '-o StrictHostKeyChecking=yes',
          '-o IdentitiesOnly=yes',
          '-o BatchMode=yes',
        ].join(' ');
        return client.run('env', [`NIX_SSHOPTS=${options}`, cmd, ...args]);
      };
      const store = 'ssh://root@127.0.0.1';
      const storeNg = 'ssh-ng://root@127.0.0.1';

      const refusedWith = async (key: string, args: readonly string[], message: RegExp): Promise<void> => {
        await assert.rejects(nix(key, 'nix', args), (error: unknown) => {
          assert.ok(error instanceof NixCommandError, String(error));
          assert.match(error.stderr, message);
          return true;
        });
      };

      before(async () => {
        dir = await makeTempDir('openssh');
        t = await startTestServer();
        const team = await createCacheWithKey(t.server.stores.db, {
          name: 'team',
          isPublic: false,
          priority: 40,
        });
        teamKey = (await t.server.service.keys(team)).signing[0]?.publicKey.toString() ?? '';
        pullToken = generateToken();
        await t.server.stores.db.createToken({
          description: 'http pull',
          tokenHash: hashToken(pullToken),
          scopes: [{ cachePattern: 'team', permissions: ['pull'] }],
          expiresAt: undefined,
        });
        for (const name of ['host', 'alice', 'ci', 'eve']) keygen(join(dir.path, name), name);
        await niche('ssh-key', 'add', '--cache', 'team', '--push', join(dir.path, 'alice.pub'));
        await niche('ssh-key', 'add', '--cache', 'team', join(dir.path, 'ci.pub'));
        await writeAuthorizedKeys();

        port = await freePort();
        const hostKey = await readFile(join(dir.path, 'host.pub'), 'utf8');
        await writeFile(join(dir.path, 'known_hosts'), `[127.0.0.1]:${port} ${hostKey}`);
        await mkdir('/run/sshd', { recursive: true });
        sshd = spawn(
          SSHD,
          [
            '-D',
            '-e',
            '-f',
            '/dev/null',
            '-h',
            join(dir.path, 'host'),
            '-p',
            String(port),
            '-o',
            'ListenAddress=127.0.0.1',
            '-o',
            `AuthorizedKeysFile=${join(dir.path, 'authorized_keys')}`,
            '-o',
            'StrictModes=no',
            '-o',
            'PidFile=none',
            '-o',
            'UsePAM=no',
            '-o',
            'PasswordAuthentication=no',
            '-o',
            'KbdInteractiveAuthentication=no',
            '-o',
            'PermitRootLogin=prohibit-password',
          ],
          { stdio: ['ignore', 'ignore', 'pipe'] },
        );
        sshd.stderr?.on('data', (chunk: Buffer) => {
          sshdLog = (sshdLog + chunk.toString()).slice(-8000);
        });
        await waitFor(() => accepts(port), {
          timeoutMs: 10_000,
          what: `sshd on port ${port} (log: ${sshdLog})`,
        });

        client = await nixClient({ version });
        closure = await buildClosure(client, { bigBytes: 200_000, label: `openssh-${version}` });
      });
      after(async () => {
        await closure.cleanup();
        await client.cleanup();
        sshd?.kill();
        await t.stop();
        await dir.cleanup();
      });

      // Each session through sshd starts a niche process (about a second here): the protocols themselves are
      // tested at length over the fake transport and the embedded server, so this suite holds each path
      // through sshd and ssh-serve once: ssh-ng:// for ping and refusals, ssh:// for push and pull.
      it('nix store ping reaches the cache with a registered key', async () => {
        await nix('ci', 'nix', ['store', 'ping', '--store', storeNg]);
      });

      it('refuses an unregistered key at sshd, a pull-only key pushing, and a removed key, with the reason', async () => {
        await refusedWith('eve', ['store', 'ping', '--store', store], /Permission denied \(publickey\)/);
        await refusedWith(
          'ci',
          ['copy', '--to', storeNg, closure.top],
          /niche: this SSH key lacks the push permission on cache team \[PERMISSION_DENIED\]/,
        );
        // Removed after its line was written: ssh-serve looks the key up again and refuses it.
        const fingerprint = execFileSync(
          'ssh-keygen',
          ['-l', '-E', 'sha256', '-f', join(dir.path, 'ci.pub')],
          {
            encoding: 'utf8',
          },
        ).split(' ')[1];
        await niche('ssh-key', 'remove', fingerprint ?? '');
        await refusedWith('ci', ['store', 'ping', '--store', store], /unknown SSH key \(removed\?\)/);
        await writeAuthorizedKeys();
        await refusedWith('ci', ['store', 'ping', '--store', store], /Permission denied \(publickey\)/);
      });

      it('nix copy --to pushes the closure, verified and signed; copy --from and HTTP read it back', async () => {
        await nix('alice', 'nix', ['copy', '--to', store, closure.top]);
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

        await closure.deleteOutputs();
        await nix('alice', 'nix', [
          'copy',
          '--from',
          store,
          '--option',
          'trusted-public-keys',
          teamKey,
          closure.top,
        ]);
        for (const path of closure.paths) assert.ok(client.hasPath(path), `${path} copied from ${store}`);

        await closure.deleteOutputs();
        await client.setToken(pullToken);
        try {
          await substitute(client, `${t.url}/team`, [closure.top], teamKey);
        } finally {
          await client.setToken(undefined);
        }
        for (const path of closure.paths) assert.ok(client.hasPath(path), `${path} substituted over HTTP`);
      });
    },
  );
}
