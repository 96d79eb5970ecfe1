// `niche use` on real files: nix.conf and netrc written with the right modes, byte-identical on a second
// run, an existing netrc-file respected, the --system paths chosen from the environment, links into the
// Nix store refused, and the NixOS snippet.
import assert from 'node:assert/strict';
import { chmod, lstat, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CacheInfo } from '../../../src/api/v1.js';
import { FileNotWritableError } from '../../../src/client/atomic-file.js';
import { cacheUrlFor, configureNix, netrcHost, nixosSnippet } from '../../../src/client/use-cache.js';
import { loadClientPaths } from '../../../src/config.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';

const PUBLIC: CacheInfo = {
  name: 'main',
  public: true,
  priority: 40,
  storeDir: '/nix/store',
  url: 'http://127.0.0.1:5000/main',
  pushUrl: 'http://127.0.0.1:5000/main/push',
  publicKeys: ['host-main-1:Imv2z2mrgnZnYAcPriirpX3mrHwNga8WuxNYmahdemk='],
  upstreamKeys: [],
};
const PRIVATE: CacheInfo = {
  ...PUBLIC,
  name: 'secret',
  public: false,
  url: 'http://127.0.0.1:5000/secret',
  pushUrl: 'http://127.0.0.1:5000/secret/push',
};

let work: TempDir;
before(async () => {
  work = await makeTempDir('client-use');
});
after(async () => {
  await work.cleanup();
});

async function files(name: string): Promise<{ nixConf: string; defaultNetrc: string; dir: string }> {
  const dir = join(work.path, name);
  await mkdir(dir, { recursive: true });
  return { dir, nixConf: join(dir, 'nix', 'nix.conf'), defaultNetrc: join(dir, 'nix', 'netrc') };
}

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

describe('configureNix', () => {
  it('configures a public cache without touching any netrc, idempotently', async () => {
    const paths = await files('public');
    const first = await configureNix(PUBLIC, undefined, paths);
    assert.deepEqual(first, { nixConf: { file: paths.nixConf, changed: true }, netrc: undefined });
    const text = await readFile(paths.nixConf, 'utf8');
    assert.equal(
      text,
      `extra-substituters = ${PUBLIC.url}\nextra-trusted-public-keys = ${PUBLIC.publicKeys.join(' ')}\n`,
    );
    assert.equal(await mode(paths.nixConf), 0o644);
    const second = await configureNix(PUBLIC, 'a-token', paths);
    assert.equal(second.nixConf.changed, false);
    assert.equal(await readFile(paths.nixConf, 'utf8'), text);
    await assert.rejects(stat(paths.defaultNetrc), { code: 'ENOENT' });
  });

  it('writes a 0600 netrc and a netrc-file line for a private cache; a second run changes no byte', async () => {
    const paths = await files('private');
    await mkdir(join(paths.dir, 'nix'));
    const existing = '# mine\nsubstituters = https://cache.nixos.org/\n';
    await writeFile(paths.nixConf, existing);
    await chmod(paths.nixConf, 0o640);
    const first = await configureNix(PRIVATE, 'nch_tok', paths);
    assert.equal(first.netrc?.action, 'added');
    const conf = await readFile(paths.nixConf, 'utf8');
    assert.ok(conf.startsWith(existing));
    assert.match(conf, new RegExp(`^netrc-file = ${paths.defaultNetrc}$`, 'm'));
    assert.equal(await mode(paths.nixConf), 0o640, 'an existing nix.conf keeps its mode');
    const netrc = await readFile(paths.defaultNetrc, 'utf8');
    assert.equal(netrc, 'machine 127.0.0.1 login niche password nch_tok\n');
    assert.equal(await mode(paths.defaultNetrc), 0o600);

    const second = await configureNix(PRIVATE, 'nch_tok', paths);
    assert.equal(second.nixConf.changed, false);
    assert.equal(second.netrc?.action, 'unchanged');
    assert.equal(await readFile(paths.nixConf, 'utf8'), conf);
    assert.equal(await readFile(paths.defaultNetrc, 'utf8'), netrc);

    const third = await configureNix(PRIVATE, 'nch_new', paths);
    assert.equal(third.netrc?.action, 'replaced');
    assert.equal(
      await readFile(paths.defaultNetrc, 'utf8'),
      'machine 127.0.0.1 login niche password nch_new\n',
    );
  });

  it('writes the credentials to the netrc-file nix.conf already names', async () => {
    const paths = await files('named-netrc');
    const elsewhere = join(paths.dir, 'elsewhere-netrc');
    await writeFile(elsewhere, 'machine github.com login me password gh\n', { mode: 0o600 });
    await mkdir(join(paths.dir, 'nix'));
    await writeFile(paths.nixConf, `netrc-file = ${elsewhere}\n`);
    const result = await configureNix(PRIVATE, 'nch_tok', paths);
    assert.equal(result.netrc?.file, elsewhere);
    assert.equal(
      await readFile(elsewhere, 'utf8'),
      'machine github.com login me password gh\nmachine 127.0.0.1 login niche password nch_tok\n',
    );
    assert.equal((await readFile(paths.nixConf, 'utf8')).match(/netrc-file/g)?.length, 1);
    await assert.rejects(stat(paths.defaultNetrc), { code: 'ENOENT' });
  });

  it('refuses a private cache without a token', async () => {
    const paths = await files('no-token');
    await assert.rejects(configureNix(PRIVATE, undefined, paths), { code: 'TOKEN_MISSING' });
  });

  it('follows a symlinked nix.conf but refuses one that points into the Nix store', async () => {
    const paths = await files('links');
    await mkdir(join(paths.dir, 'nix'));
    const real = join(paths.dir, 'real.conf');
    await writeFile(real, 'max-jobs = 2\n');
    await symlink(real, paths.nixConf);
    await configureNix(PUBLIC, undefined, paths);
    assert.match(await readFile(real, 'utf8'), /^max-jobs = 2\nextra-substituters = /);
    assert.ok((await lstat(paths.nixConf)).isSymbolicLink());

    const storeLinked = await files('store-link');
    await mkdir(join(storeLinked.dir, 'nix'));
    await symlink('/nix/store/00000000000000000000000000000000-nix.conf', storeLinked.nixConf);
    await assert.rejects(configureNix(PUBLIC, undefined, storeLinked), (error: unknown) => {
      assert.ok(error instanceof FileNotWritableError);
      assert.match(error.message, /Nix store/);
      return true;
    });
  });
});

describe('cacheUrlFor', () => {
  const answer = (url: string): CacheInfo => ({ ...PUBLIC, name: 'team', url });
  it('keeps the URL the user reached the server at, and says when the server named another', () => {
    assert.deepEqual(cacheUrlFor(answer('https://c.example/team'), 'https://c.example'), {
      url: 'https://c.example/team',
      serverSays: undefined,
    });
    // Default ports and a trailing slash are the same URL.
    assert.equal(
      cacheUrlFor(answer('https://c.example:443/team/'), 'https://c.example').serverSays,
      undefined,
    );
    // Behind a TLS proxy the server may see http: the user's https stays (no downgrade, no clear text).
    assert.deepEqual(cacheUrlFor(answer('http://c.example/team'), 'https://c.example'), {
      url: 'https://c.example/team',
      serverSays: 'http://c.example/team',
    });
    assert.deepEqual(cacheUrlFor(answer('https://public.example/nix/team'), 'http://10.0.0.5:5000'), {
      url: 'http://10.0.0.5:5000/team',
      serverSays: 'https://public.example/nix/team',
    });
    assert.equal(
      cacheUrlFor(answer('https://c.example/nix/team'), 'https://c.example/nix').serverSays,
      undefined,
    );
  });
});

describe('client paths from the environment', () => {
  it('uses NICHE_CONFIG_DIR, XDG_CONFIG_HOME, HOME, NIX_USER_CONF_FILES and NIX_CONF_DIR', () => {
    assert.deepEqual(loadClientPaths({ HOME: '/home/u' }), {
      configFile: '/home/u/.config/niche/config.json',
      userNixConf: '/home/u/.config/nix/nix.conf',
      userNetrc: '/home/u/.config/nix/netrc',
      systemNixConf: '/etc/nix/nix.conf',
      systemNetrc: '/etc/nix/netrc',
    });
    assert.deepEqual(
      loadClientPaths({
        HOME: '/home/u',
        XDG_CONFIG_HOME: '/x',
        NICHE_CONFIG_DIR: '/n',
        NIX_USER_CONF_FILES: '/a/nix.conf:/b/nix.conf',
        NIX_CONF_DIR: '/etc/nix-test',
      }),
      {
        configFile: '/n/config.json',
        userNixConf: '/a/nix.conf',
        userNetrc: '/x/nix/netrc',
        systemNixConf: '/etc/nix-test/nix.conf',
        systemNetrc: '/etc/nix-test/netrc',
      },
    );
  });
});

describe('NixOS snippet', () => {
  it('lists the substituter and keys, and a netrc-file with a secrets note for private caches', () => {
    const publicSnippet = nixosSnippet(PUBLIC, '/etc/nix/netrc');
    assert.match(publicSnippet, /substituters = \[ "http:\/\/127\.0\.0\.1:5000\/main" \];/);
    assert.match(publicSnippet, /"host-main-1:Imv2z2mrgnZnYAcPriirpX3mrHwNga8WuxNYmahdemk="/);
    assert.doesNotMatch(publicSnippet, /netrc/);
    const privateSnippet = nixosSnippet(PRIVATE, '/run/secrets/niche-netrc');
    assert.match(privateSnippet, /netrc-file = "\/run\/secrets\/niche-netrc";/);
    assert.match(privateSnippet, /machine 127\.0\.0\.1 login niche password <token>/);
    assert.match(privateSnippet, /out of\n.*the Nix store/);
  });

  it('names the host without port or IPv6 brackets for netrc', () => {
    assert.equal(netrcHost('http://[::1]:5000/main'), '::1');
    assert.equal(netrcHost('https://cache.example.org/main'), 'cache.example.org');
  });
});
