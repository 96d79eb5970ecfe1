// The niche client against a real server and the real Nix (2.8, and 2.26 as on a machine whose Nix it is:
// test/helpers/nix.ts): `niche login` + `niche push` a closure
// into a private cache, `niche use` on a clean nix.conf, delete the paths locally and substitute them back
// with plain `nix-store -r` (signatures required, no --option); pushing again uploads nothing, a
// half-present closure uploads only the missing half (counted at a proxy in front of the server),
// `--stdin` and NICHE_TOKEN-with-a-URL work (these two with 2.8 only), and `watch-store` pushes a freshly
// built path (reading that Nix's database) and exits 0 on SIGTERM.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { cacheInfoSchema, missingResponseSchema } from '../../src/api/v1.js';
import { REPO_ROOT, runNicheOn } from '../helpers/cli-process.js';
import {
  nixBinDir,
  nixTestOptions,
  nixVersionsUnderTest,
  onClientMachine,
  runNix,
  TEST_NIX_CONFIG,
  type NixVersion,
} from '../helpers/nix.js';
import {
  buildClosure,
  generateNixKey,
  nixClient,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const CLI_ENTRY = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const CACHE = 'team';

/** Counts path uploads on their way to the server. */
interface CountingProxy {
  readonly url: string;
  uploads: number;
  close(): Promise<void>;
}

async function countingProxy(target: string): Promise<CountingProxy> {
  const upstream = new URL(target);
  const state = { uploads: 0 };
  const proxy: Server = createServer((incoming, outgoing) => {
    if (incoming.method === 'PUT' && /^\/api\/v1\/caches\/[^/]+\/paths\//.test(incoming.url ?? ''))
      state.uploads++;
    const forward = httpRequest(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: incoming.method,
        path: incoming.url,
        headers: incoming.headers,
      },
      (answer) => {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(outgoing);
      },
    );
    forward.on('error', () => outgoing.destroy());
    incoming.pipe(forward);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address();
  if (address === null || typeof address === 'string') throw new Error('no proxy address');
  return {
    url: `http://127.0.0.1:${address.port}`,
    get uploads() {
      return state.uploads;
    },
    set uploads(value: number) {
      state.uploads = value;
    },
    close: () =>
      new Promise<void>((resolve) => {
        proxy.closeAllConnections();
        proxy.close(() => {
          resolve();
        });
      }),
  };
}

function summaryCounts(stdout: string): { pushed: number; present: number; failed: number } {
  const match = /pushed (\d+), already present (\d+), skipped upstream \d+, failed (\d+)/.exec(stdout);
  assert.ok(match !== null, `no summary in ${JSON.stringify(stdout)}`);
  return { pushed: Number(match[1]), present: Number(match[2]), failed: Number(match[3]) };
}

function suite(version: NixVersion): void {
  let work: TempDir;
  let server: TestServer;
  let nix: NixClient;
  let adminToken: string;
  let pushToken: string;
  const closures: BuiltClosure[] = [];

  /** A client machine: its own HOME/XDG dirs, and nix reading the nix.conf `niche use` writes. */
  interface Machine {
    readonly home: string;
    readonly env: NodeJS.ProcessEnv;
    /** The nix.conf niche edits (the user's nix.conf, as Nix sees it). */
    readonly nixConf: string;
  }

  async function machine(name: string, extra: NodeJS.ProcessEnv = {}): Promise<Machine> {
    const home = join(work.path, name);
    const nixConf = join(home, '.config', 'nix', 'nix.conf');
    // Nix applies NIX_USER_CONF_FILES last to first: the base file (no network substituters) goes first,
    // then the nix.conf niche writes, whose extra-substituters append to it. NIX_CONFIG must not set
    // `substituters`, or it would replace them.
    const base = join(work.path, `${name}-base.conf`);
    await writeFile(base, 'substituters =\n');
    const nixConfig = TEST_NIX_CONFIG.split('\n')
      .filter((line) => !line.startsWith('substituters'))
      .concat(['narinfo-cache-negative-ttl = 0', 'narinfo-cache-positive-ttl = 0'])
      .join('\n');
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: home,
      XDG_CONFIG_HOME: join(home, '.config'),
      XDG_CACHE_HOME: join(home, '.cache'),
      XDG_DATA_HOME: join(home, '.local', 'share'),
      XDG_STATE_HOME: join(home, '.local', 'state'),
      NIX_USER_CONF_FILES: `${nixConf}:${base}`,
      NIX_CONFIG: nixConfig,
      ...extra,
    };
    return { home, env, nixConf };
  }

  const niche = (args: readonly string[], env: NodeJS.ProcessEnv, stdin?: string) =>
    runNicheOn(version, args, env, stdin);

  /** Which of `paths` the cache lacks (asked with the admin token). */
  async function missingIn(paths: readonly string[]): Promise<string[]> {
    const response = await fetch(`${server.url}/api/v1/caches/${CACHE}/missing`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ paths }),
    });
    assert.equal(response.status, 200);
    return missingResponseSchema.parse(await response.json()).missing;
  }

  async function build(label: string, bigBytes = 200_000): Promise<BuiltClosure> {
    const closure = await buildClosure(nix, { label, bigBytes });
    closures.push(closure);
    return closure;
  }

  describe(`Nix ${version}: niche client end to end`, nixTestOptions(version), () => {
    before(async () => {
      work = await makeTempDir('e2e-client');
      server = await startTestServer();
      nix = await nixClient({ version });
      adminToken = await server.token(['*'], ['pull', 'push', 'delete', 'cache-admin', 'server-admin']);
      const created = await fetch(`${server.url}/api/v1/caches`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: CACHE, public: false }),
      });
      assert.equal(created.status, 201, await created.text());
      pushToken = await server.token([CACHE], ['pull', 'push']);
    });
    after(async () => {
      for (const closure of closures) await closure.cleanup().catch(() => undefined);
      await nix.cleanup();
      await server.stop();
      await work.cleanup();
    });

    it('login, push, use on a clean nix.conf, then substitute with plain nix-store -r', async () => {
      const client = await machine('first');
      const bogus = await niche(['login', 'e2e', server.url, 'nch_not-a-real-token'], client.env);
      assert.equal(bogus.code, 77);
      assert.match(bogus.stderr, /invalid credentials.*nothing was saved \(TOKEN_INVALID\)/);
      await assert.rejects(stat(join(client.home, '.config', 'niche', 'config.json')), { code: 'ENOENT' });
      const login = await niche(['login', 'e2e', server.url, pushToken], client.env);
      assert.equal(login.code, 0, login.stderr);
      assert.match(login.stdout, new RegExp(`${CACHE}: pull, push`));

      const closure = await build('client-first');
      assert.ok(closure.paths.length >= 5);
      const push = await niche(['push', `e2e/${CACHE}`, closure.top], client.env);
      assert.equal(push.code, 0, push.stderr);
      assert.deepEqual(summaryCounts(push.stdout), { pushed: closure.paths.length, present: 0, failed: 0 });
      assert.match(push.stderr, /^pushed \/nix\/store\/\S+-niche-e2e-leaf {2}\d+\.\d KiB$/m);
      assert.deepEqual(await missingIn(closure.paths), []);

      await assert.rejects(stat(client.nixConf), { code: 'ENOENT' }, 'the nix.conf starts clean');
      const use = await niche(['use', `e2e/${CACHE}`], client.env);
      assert.equal(use.code, 0, use.stderr);
      const conf = await readFile(client.nixConf, 'utf8');
      const netrcFile = join(client.home, '.config', 'nix', 'netrc');
      const info = cacheInfoSchema.parse(
        await (
          await fetch(`${server.url}/api/v1/caches/${CACHE}`, {
            headers: { authorization: `Bearer ${pushToken}` },
          })
        ).json(),
      );
      assert.equal(
        conf,
        `extra-substituters = ${server.url}/${CACHE}\nextra-trusted-public-keys = ${info.publicKeys.join(' ')}\nnetrc-file = ${netrcFile}\n`,
      );
      assert.equal((await stat(netrcFile)).mode & 0o777, 0o600);
      const netrc = await readFile(netrcFile, 'utf8');
      const again = await niche(['use', `e2e/${CACHE}`], client.env);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(await readFile(client.nixConf, 'utf8'), conf, 'a second use changes no byte');
      assert.equal(await readFile(netrcFile, 'utf8'), netrc);

      await closure.deleteOutputs();
      for (const path of closure.paths) assert.ok(!nix.hasPath(path), `${path} was deleted`);
      // Plain nix-store -r: substituters, keys and credentials all come from what niche use wrote.
      await runNix('nix-store', ['--realise', closure.top], { home: client.home, env: client.env, version });
      for (const path of closure.paths) assert.ok(nix.hasPath(path), `${path} was substituted`);
      await runNix('nix-store', ['--verify-path', ...closure.paths], {
        home: client.home,
        env: client.env,
        version,
      });
      // They came from the cache: substituted paths carry its signature.
      const keyName = info.publicKeys[0]?.split(':')[0] ?? '';
      const sigs = await runNix('nix', ['path-info', '--sigs', closure.top], {
        home: client.home,
        env: client.env,
        version,
      });
      assert.match(sigs.stdout.toString('utf8'), new RegExp(`${keyName.replace(/[.]/g, '\\.')}:`));
    });

    // niche's own bookkeeping, the same whatever the Nix: with Nix 2.8 only (CI time).
    if (version === '2.8')
      it('a second push uploads nothing; a half-present closure uploads only the missing half', async () => {
        const client = await machine('second');
        const proxy = await countingProxy(server.url);
        try {
          const login = await niche(['login', 'e2e', proxy.url, pushToken], client.env);
          assert.equal(login.code, 0, login.stderr);
          const closure = await build('client-second');
          const top = closure.top;
          // First the half below `mid` (mid and leaf), then the whole closure.
          const mid = closure.paths.find((path) => path.endsWith('-niche-e2e-mid'));
          assert.ok(mid !== undefined);
          const half = await niche(['push', `e2e/${CACHE}`, mid], client.env);
          assert.equal(half.code, 0, half.stderr);
          assert.deepEqual(summaryCounts(half.stdout), { pushed: 2, present: 0, failed: 0 });
          assert.equal(proxy.uploads, 2);

          proxy.uploads = 0;
          const rest = await niche(['push', `e2e/${CACHE}`, top], client.env);
          assert.equal(rest.code, 0, rest.stderr);
          assert.deepEqual(summaryCounts(rest.stdout), {
            pushed: closure.paths.length - 2,
            present: 2,
            failed: 0,
          });
          assert.equal(proxy.uploads, closure.paths.length - 2, 'only the missing half was uploaded');

          proxy.uploads = 0;
          const again = await niche(['push', `e2e/${CACHE}`, top], client.env);
          assert.equal(again.code, 0, again.stderr);
          assert.deepEqual(summaryCounts(again.stdout), {
            pushed: 0,
            present: closure.paths.length,
            failed: 0,
          });
          assert.equal(proxy.uploads, 0, 'a second push uploads nothing');
          assert.deepEqual(await missingIn(closure.paths), []);
        } finally {
          await proxy.close();
        }
      });

    it('skips paths signed upstream; the server accepts them as references on the upstream signature', async () => {
      const key = await generateNixKey(nix, `upstream-${randomBytes(4).toString('hex')}`);
      const name = 'with-upstream';
      const created = await fetch(`${server.url}/api/v1/caches`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name, public: false, upstreamKeys: [key.publicKey] }),
      });
      assert.equal(created.status, 201, await created.text());
      const closure = await build('client-upstream', 0);
      const leaf = closure.paths.find((path) => path.endsWith('-niche-e2e-leaf'));
      const file = closure.paths.find((path) => path.endsWith('-niche-e2e-file'));
      assert.ok(leaf !== undefined && file !== undefined);
      await nix.run('nix', ['store', 'sign', '--key-file', key.secretFile, leaf, file]);
      const client = await machine('upstream', { NICHE_TOKEN: adminToken });
      const push = await niche(['push', `${server.url}/${name}`, closure.top], client.env);
      assert.equal(push.code, 0, push.stderr);
      // niche skips the two upstream paths; their referrers carry the upstream signatures, which the
      // server verifies with the cache's upstream key instead of requiring the paths themselves.
      assert.doesNotMatch(push.stderr, /signed upstream are not in the cache/);
      assert.deepEqual(summaryCounts(push.stdout), {
        pushed: closure.paths.length - 2,
        present: 0,
        failed: 0,
      });
      const missing = await fetch(`${server.url}/api/v1/caches/${name}/missing`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ paths: closure.paths }),
      });
      assert.deepEqual(((await missing.json()) as { missing: string[] }).missing.sort(), [leaf, file].sort());
    });

    // niche's own bookkeeping, the same whatever the Nix: with Nix 2.8 only (CI time).
    if (version === '2.8')
      it('pushes paths from --stdin, and to a URL with NICHE_TOKEN and no login', async () => {
        const closure = await build('client-stdin', 0);
        const viaStdin = await machine('stdin');
        await niche(['login', 'e2e', server.url, pushToken], viaStdin.env);
        const file = closure.paths.find((path) => path.endsWith('-niche-e2e-file'));
        const link = closure.paths.find((path) => path.endsWith('-niche-e2e-link'));
        assert.ok(file !== undefined && link !== undefined);
        const stdin = await niche(
          ['push', `e2e/${CACHE}`, '--stdin', '--compression', 'xz'],
          viaStdin.env,
          `${link}\n  ${file}\n`,
        );
        assert.equal(stdin.code, 0, stdin.stderr);
        assert.deepEqual(summaryCounts(stdin.stdout), { pushed: 2, present: 0, failed: 0 });

        const ci = await machine('ci', { NICHE_TOKEN: pushToken });
        const viaEnv = await niche(['push', `${server.url}/${CACHE}`, closure.top], ci.env);
        assert.equal(viaEnv.code, 0, viaEnv.stderr);
        assert.deepEqual(summaryCounts(viaEnv.stdout), {
          pushed: closure.paths.length - 2,
          present: 2,
          failed: 0,
        });
        assert.deepEqual(await missingIn(closure.paths), []);

        const denied = await niche(
          ['push', `${server.url}/${CACHE}`, closure.top],
          (await machine('no-token')).env,
        );
        assert.equal(denied.code, 77);
        assert.match(denied.stderr, /needs a token/);
      });

    it('watch-store pushes a newly built path and exits 0 on SIGTERM', async () => {
      const client = await machine('watch');
      await niche(['login', 'e2e', server.url, pushToken], client.env);
      // As on a machine whose Nix is this one: its /nix (watch-store reads the Nix database) and its nix.
      const [program, args] = onClientMachine(version, process.execPath, [
        '--import',
        'tsx',
        CLI_ENTRY,
        'watch-store',
        `e2e/${CACHE}`,
        '--interval',
        '0.2',
      ]);
      const bin = nixBinDir(version, client.home);
      const child = spawn(program, args, {
        cwd: REPO_ROOT,
        env: { ...client.env, PATH: bin === undefined ? client.env.PATH : `${bin}:${client.env.PATH ?? ''}` },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      let stdout = '';
      child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
      child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
      const exited = new Promise<number | null>((resolve) => {
        child.on('exit', (code) => {
          resolve(code);
        });
      });
      try {
        await waitFor(() => stderr.includes('watching'), { what: 'watch-store to start', timeoutMs: 30_000 });
        const nonce = randomBytes(8).toString('hex');
        const expression = `derivation { name = "niche-watched"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${nonce} > $out" ]; }`;
        const built = await runNix('nix-build', ['--no-out-link', '-E', expression], {
          home: nix.home,
          version,
        });
        const path = built.stdout.toString('utf8').trim();
        closures.push({
          top: path,
          paths: [path],
          derivations: [],
          infos: new Map(),
          deleteOutputs: () => Promise.resolve(),
          cleanup: async () => {
            await runNix('nix-store', ['--delete', path], { home: nix.home, version }).catch(() => undefined);
          },
        });
        await waitFor(async () => (await missingIn([path])).length === 0, {
          what: `${path} to arrive in the cache (watch-store said: ${stderr})`,
          timeoutMs: 30_000,
          intervalMs: 200,
        });
        // The server has it once it has answered; watch-store says so when it reads the answer.
        await waitFor(() => stderr.includes(`pushed ${path}`), {
          what: `watch-store to report pushing ${path} (it said: ${stderr})`,
          timeoutMs: 10_000,
        });
        assert.doesNotMatch(stderr, /\.drv {2}/, 'derivations are not pushed');
        child.kill('SIGTERM');
        assert.equal(await exited, 0, stderr);
        assert.match(stdout, /stopped: pushed \d+ paths/);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  });
}

for (const version of nixVersionsUnderTest()) suite(version);
