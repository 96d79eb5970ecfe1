// The client commands run in-process against the fake server: `niche login` checks the token, saves it
// with mode 0600 and refuses a bad one without saving; `niche use` edits the given files and prints a
// NixOS module with --nixos; both say what they did. (Pushing with the real nix is in test/e2e.)
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runMain } from '../../helpers/cli-process.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';
import { startFakeNiche, type FakeNiche } from './fake-niche.js';

const TOKEN = 'nch_cli';

let work: TempDir;
let fake: FakeNiche;
before(async () => {
  work = await makeTempDir('client-cli');
  fake = await startFakeNiche({ token: TOKEN });
});
after(async () => {
  await fake.close();
  await work.cleanup();
});

const cli = runMain;

function envFor(name: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const home = join(work.path, name);
  // No nix on PATH: the commands must cope.
  return { HOME: home, XDG_CONFIG_HOME: join(home, '.config'), PATH: '/nonexistent', ...extra };
}

describe('niche login', () => {
  it('checks the token, reports what it grants and saves it with mode 0600', async () => {
    const env = envFor('login-ok');
    const result = await cli(['login', 'home', `${fake.url}/`, TOKEN], env);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /saved home = http:\/\/127\.0\.0\.1:\d+ in /);
    assert.match(result.stdout, /token 7 \(ci\)/);
    assert.match(result.stdout, /main: pull, push/);
    assert.doesNotMatch(result.stdout + result.stderr, new RegExp(TOKEN));
    const file = join(env.XDG_CONFIG_HOME ?? '', 'niche', 'config.json');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), {
      version: 1,
      servers: { home: { url: fake.url, token: TOKEN } },
    });
  });

  it('takes the token from NICHE_TOKEN and the file location from NICHE_CONFIG_DIR', async () => {
    const dir = join(work.path, 'custom-config-dir');
    const result = await cli(
      ['login', 'ci', fake.url],
      envFor('login-env', { NICHE_TOKEN: TOKEN, NICHE_CONFIG_DIR: dir }),
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(await readFile(join(dir, 'config.json'), 'utf8'), /"token": "nch_cli"/);
  });

  it('refuses a bad token with a clear error, a non-zero exit, and nothing saved', async () => {
    const env = envFor('login-bad');
    const result = await cli(['login', 'home', fake.url, 'nch_wrong'], env);
    assert.equal(result.code, 77);
    assert.match(result.stderr, /the token is not valid.*nothing was saved \(TOKEN_INVALID\)/);
    await assert.rejects(stat(join(env.XDG_CONFIG_HOME ?? '', 'niche', 'config.json')), { code: 'ENOENT' });
  });

  it('refuses a server that is not there, and a bad alias', async () => {
    const env = envFor('login-down');
    assert.equal((await cli(['login', 'x', 'http://127.0.0.1:1', TOKEN], env)).code, 69);
    assert.equal((await cli(['login', 'a/b', fake.url, TOKEN], env)).code, 65);
  });
});

describe('niche use', () => {
  it('configures nix.conf and netrc for a private cache, twice without change, and notes nix is absent', async () => {
    const env = envFor('use', { NICHE_TOKEN: TOKEN });
    const nixConf = join(work.path, 'use', 'nix.conf');
    const netrc = join(work.path, 'use', 'netrc');
    const args = ['use', `${fake.url}/main`, '--nix-conf', nixConf, '--netrc', netrc];
    const first = await cli(args, env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /added http:\/\/127\.0\.0\.1:\d+\/main to extra-substituters/);
    assert.match(
      first.stdout,
      /^to push: niche push \S+ <paths>, or nix copy --to http:\/\/127\.0\.0\.1:\d+\/main\/push <paths>$/m,
    );
    assert.match(first.stdout, /added the credentials for 127\.0\.0\.1 \(mode 0600\)/);
    assert.match(first.stderr, /nix is not installed/);
    const conf = await readFile(nixConf, 'utf8');
    assert.equal(
      conf,
      `extra-substituters = ${fake.info.url}\nextra-trusted-public-keys = ${fake.info.publicKeys.join(' ')}\nnetrc-file = ${netrc}\n`,
    );
    assert.equal(await readFile(netrc, 'utf8'), `machine 127.0.0.1 login niche password ${TOKEN}\n`);
    assert.equal((await stat(netrc)).mode & 0o777, 0o600);

    const second = await cli(args, env);
    assert.equal(second.code, 0);
    assert.match(second.stdout, /already uses/);
    assert.match(second.stdout, /already has the credentials/);
    assert.equal(await readFile(nixConf, 'utf8'), conf);
  });

  it('edits $NIX_CONF_DIR/nix.conf and $NIX_CONF_DIR/netrc with --system', async () => {
    const confDir = join(work.path, 'etc-nix');
    const env = envFor('use-system', { NICHE_TOKEN: TOKEN, NIX_CONF_DIR: confDir });
    const result = await cli(['use', `${fake.url}/main`, '--system'], env);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      await readFile(join(confDir, 'nix.conf'), 'utf8'),
      new RegExp(`^netrc-file = ${confDir}/netrc$`, 'm'),
    );
    assert.equal(
      await readFile(join(confDir, 'netrc'), 'utf8'),
      `machine 127.0.0.1 login niche password ${TOKEN}\n`,
    );
    assert.match(result.stderr, /restart the nix-daemon/);
    await assert.rejects(
      stat(join(env.HOME ?? '', '.config')),
      { code: 'ENOENT' },
      'the user files are untouched',
    );
  });

  it('prints a NixOS module with --nixos and writes nothing', async () => {
    const env = envFor('use-nixos', { NICHE_TOKEN: TOKEN });
    const result = await cli(['use', `${fake.url}/main`, '--nixos'], env);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /nix\.settings = \{/);
    assert.match(result.stdout, /netrc-file = "\/etc\/nix\/netrc";/);
    assert.doesNotMatch(result.stdout, new RegExp(TOKEN));
    await assert.rejects(stat(join(env.HOME ?? '', '.config')), { code: 'ENOENT' });
  });

  it('explains a private cache to an anonymous user, and a refused token, instead of a bare 401', async () => {
    const nixConf = join(work.path, 'anon.conf');
    const anonymous = await cli(['use', `${fake.url}/main`, '--nix-conf', nixConf], envFor('use-anon-401'));
    assert.equal(anonymous.code, 77);
    assert.match(
      anonymous.stderr,
      /^error: cache http:\/\/127\.0\.0\.1:\d+\/main is private \(or does not exist\): log in with a token that may pull from it first \(niche login <alias> <server-url> <token>, or set NICHE_TOKEN\) \(TOKEN_MISSING\)$/m,
    );
    const refused = await cli(
      ['use', `${fake.url}/main`, '--nix-conf', nixConf],
      envFor('use-refused', { NICHE_TOKEN: 'nch_revoked' }),
    );
    assert.equal(refused.code, 77);
    assert.match(
      refused.stderr,
      /the server refused the token used for .*main .*log in again with a valid token/,
    );
    await assert.rejects(stat(nixConf), { code: 'ENOENT' });
  });

  it('names unknown aliases and missing tokens', async () => {
    const unknown = await cli(['use', 'nowhere/main'], envFor('use-unknown'));
    assert.equal(unknown.code, 78);
    assert.match(unknown.stderr, /niche login nowhere/);
    const noToken = await cli(
      ['use', `${fake.url}/main`, '--nix-conf', join(work.path, 'x.conf')],
      envFor('use-anon'),
    );
    assert.equal(noToken.code, 77);
  });
});

describe('niche push', () => {
  it('says that a directory outside the store is not a store path, before asking nix', async () => {
    const env = envFor('push-tmp', { NICHE_TOKEN: TOKEN });
    for (const path of ['/tmp', work.path]) {
      const result = await cli(['push', `${fake.url}/main`, path], env);
      assert.equal(result.code, 65, result.stderr);
      assert.match(
        result.stderr,
        new RegExp(
          `^error: ${path.replace(/[.]/g, '\\.')} is not a store path: expected /nix/store/<hash>-<name> .*or a link to one such as \\./result \\(STORE_PATH_INVALID\\)$`,
          'm',
        ),
      );
      assert.doesNotMatch(result.stderr, /flake|nix is not installed/);
    }
    const missing = await cli(['push', `${fake.url}/main`, join(work.path, 'no-such-result')], env);
    assert.equal(missing.code, 65);
    assert.match(missing.stderr, /no-such-result does not exist \(ENOENT\); expected a store path/);
    assert.equal(fake.uploads.length, 0);
  });
});
