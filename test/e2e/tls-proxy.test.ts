// niche behind a TLS-terminating proxy, as a new user meets it: `niche login edge https://…`, then
// `niche use edge/team` must write an https:// substituter that the real Nix substitutes from. Twice:
// with the server trusting the proxy's X-Forwarded-Proto (its API answers https:// itself), and with an
// unconfigured server, whose API still answers http://, where `niche use` keeps the https:// URL the user
// logged in with and says why. With Nix 2.8 and 2.26.
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cacheInfoSchema } from '../../src/api/v1.js';
import { runCli } from '../helpers/cli-process.js';
import {
  nixBinDir,
  nixTestOptions,
  nixVersionsUnderTest,
  onClientMachine,
  runNix,
  TEST_NIX_CONFIG,
} from '../helpers/nix.js';
import { buildClosure, nixClient, type BuiltClosure, type NixClient } from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { startTlsProxy, TEST_CA_FILE, type TlsProxy } from '../helpers/tls-proxy.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const CACHE = 'team';

for (const version of nixVersionsUnderTest())
  describe(`Nix ${version}: niche use behind a TLS proxy`, nixTestOptions(version), () => {
    let work: TempDir;
    let nix: NixClient;
    let caFile: string;
    const servers: TestServer[] = [];
    const proxies: TlsProxy[] = [];
    const closures: BuiltClosure[] = [];

    before(async () => {
      work = await makeTempDir('e2e-tls');
      nix = await nixClient({ version });
      // Under /tmp, where Nix 2.26 in its chroot can read it too.
      caFile = join(work.path, 'ca.pem');
      await copyFile(TEST_CA_FILE, caFile);
    });
    after(async () => {
      for (const closure of closures) await closure.cleanup().catch(() => undefined);
      for (const proxy of proxies) await proxy.close();
      for (const server of servers) await server.stop();
      await nix.cleanup();
      await work.cleanup();
    });

    /** A server with a private cache, behind a TLS proxy that sends X-Forwarded-Proto: https. */
    async function deploy(trustedProxies: string[]): Promise<{ proxy: TlsProxy; token: string }> {
      const server = await startTestServer({ flags: { trustedProxies } });
      servers.push(server);
      const admin = await server.token(['*'], ['pull', 'push', 'cache-admin', 'server-admin']);
      const created = await fetch(`${server.url}/api/v1/caches`, {
        method: 'POST',
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: CACHE, public: false }),
      });
      assert.equal(created.status, 201, await created.text());
      const proxy = await startTlsProxy(server.url, { forwardedProto: true });
      proxies.push(proxy);
      return { proxy, token: await server.token([CACHE], ['pull', 'push']) };
    }

    /** A user's machine: own HOME and nix.conf; Node and Nix trust the test certificate. */
    async function machine(name: string): Promise<{ env: NodeJS.ProcessEnv; nixConf: string; home: string }> {
      const home = join(work.path, name);
      const nixConf = join(home, '.config', 'nix', 'nix.conf');
      const base = join(work.path, `${name}-base.conf`);
      await writeFile(base, 'substituters =\n');
      return {
        home,
        nixConf,
        env: {
          HOME: home,
          XDG_CONFIG_HOME: join(home, '.config'),
          XDG_CACHE_HOME: join(home, '.cache'),
          NIX_USER_CONF_FILES: `${nixConf}:${base}`,
          NIX_CONFIG: TEST_NIX_CONFIG.split('\n')
            .filter((line) => !line.startsWith('substituters'))
            .concat(['narinfo-cache-negative-ttl = 0', 'narinfo-cache-positive-ttl = 0'])
            .join('\n'),
          NODE_EXTRA_CA_CERTS: TEST_CA_FILE,
          NIX_SSL_CERT_FILE: caFile,
        },
      };
    }

    // With Nix 2.26 only behind the trusted proxy: how niche use picks the URL does not depend on the Nix.
    for (const trusted of version === '2.8' ? [true, false] : [true]) {
      it(`writes the https:// URL the user logged in with (${trusted ? 'trusted proxy' : 'unconfigured server'})`, async () => {
        const { proxy, token } = await deploy(trusted ? ['127.0.0.1'] : []);
        const info = cacheInfoSchema.parse(
          await (
            await fetch(`${servers.at(-1)?.url ?? ''}/api/v1/caches/${CACHE}`, {
              headers: { authorization: `Bearer ${token}`, 'x-forwarded-proto': 'https' },
            })
          ).json(),
        );
        // The server's own answer, seen from the proxy's address: https only when it trusts the proxy.
        assert.equal(info.url.startsWith('https://'), trusted);

        const user = await machine(trusted ? 'trusted' : 'unconfigured');
        const login = await runCli(['login', 'edge', proxy.url, token], { env: user.env });
        assert.equal(login.code, 0, login.stderr);
        const use = await runCli(['use', `edge/${CACHE}`], { env: user.env });
        assert.equal(use.code, 0, use.stderr);
        const conf = await readFile(user.nixConf, 'utf8');
        assert.match(
          conf,
          new RegExp(`^extra-substituters = ${proxy.url.replace(/[.]/g, '\\.')}/${CACHE}$`, 'm'),
        );
        assert.doesNotMatch(conf, /http:\/\//);
        const netrc = await readFile(join(user.home, '.config', 'nix', 'netrc'), 'utf8');
        assert.match(netrc, /^machine 127\.0\.0\.1 login niche password /m);
        if (trusted) assert.doesNotMatch(use.stderr, /warning: the server gives/);
        else
          assert.match(
            use.stderr,
            /warning: the server gives this cache's URL as http:\/\/.*using https:\/\//,
          );

        // Nix substitutes through the proxy with nothing but what niche wrote.
        const closure = await buildClosure(nix, { label: `tls-${String(trusted)}-${version}` });
        closures.push(closure);
        // As on a machine whose Nix is this one (test/helpers/nix.ts): its nix, its /nix/store.
        const bin = nixBinDir(version, user.home);
        const push = await runCli(['push', `edge/${CACHE}`, closure.top], {
          env: { ...user.env, PATH: `${bin === undefined ? '' : `${bin}:`}${process.env.PATH ?? ''}` },
          wrap: (program, args) => onClientMachine(version, program, args),
          timeoutMs: 120_000,
        });
        assert.equal(push.code, 0, push.stderr);
        await closure.deleteOutputs();
        await runNix('nix-store', ['--realise', closure.top], { home: user.home, env: user.env, version });
        await runNix('nix-store', ['--verify-path', ...closure.paths], {
          home: user.home,
          env: user.env,
          version,
        });
      });
    }
  });
