// The client config file (mode 0600, atomic, strictly validated) and how `<alias>/<cache>` and URLs
// resolve to a server, a cache and a token.
import assert from 'node:assert/strict';
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  emptyConfig,
  normaliseServerUrl,
  readClientConfig,
  writeClientConfig,
} from '../../../src/client/client-config.js';
import { resolveTarget } from '../../../src/client/target.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';

let work: TempDir;
before(async () => {
  work = await makeTempDir('client-config');
});
after(async () => {
  await work.cleanup();
});

describe('client config file', () => {
  it('is written with mode 0600 in a 0700 directory, atomically, and reads back', async () => {
    const file = join(work.path, 'fresh', 'niche', 'config.json');
    const config = emptyConfig();
    config.servers.home = { url: 'http://127.0.0.1:5000', token: 'nch_secret' };
    const previous = process.umask(0o022);
    try {
      await writeClientConfig(file, config);
    } finally {
      process.umask(previous);
    }
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(join(work.path, 'fresh', 'niche'))).mode & 0o777, 0o700);
    assert.deepEqual(await readClientConfig(file), config);
    assert.deepEqual(await readdir(join(work.path, 'fresh', 'niche')), ['config.json'], 'no temp files left');

    // Rewriting a file that someone made world-readable makes it private again.
    await chmod(file, 0o644);
    await writeClientConfig(file, config);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  it('reads a missing file as empty and reports a broken one with its name', async () => {
    assert.deepEqual(await readClientConfig(join(work.path, 'missing.json')), emptyConfig());
    const broken = join(work.path, 'broken.json');
    await writeFile(broken, '{"version":1,"servers":{"a":{"url":"x","tokn":"t"}}}');
    await assert.rejects(readClientConfig(broken), (error: Error) => {
      assert.match(error.message, /broken\.json/);
      assert.equal((error as { code?: string }).code, 'CLIENT_CONFIG_INVALID');
      return true;
    });
    await writeFile(broken, 'not json');
    await assert.rejects(readClientConfig(broken), { code: 'CLIENT_CONFIG_INVALID' });
  });

  it('normalises server URLs and refuses credentials, queries and other schemes', () => {
    assert.equal(normaliseServerUrl('http://127.0.0.1:5000/'), 'http://127.0.0.1:5000');
    assert.equal(normaliseServerUrl('https://Example.org/prefix/'), 'https://example.org/prefix');
    assert.throws(() => normaliseServerUrl('ftp://x'));
    assert.throws(() => normaliseServerUrl('http://u:p@x'));
    assert.throws(() => normaliseServerUrl('http://x/?a=b'));
    assert.throws(() => normaliseServerUrl('not a url'));
  });

  it('does not keep the token in the file readable by others even after a crash-free replace', async () => {
    const file = join(work.path, 'replace', 'config.json');
    const config = emptyConfig();
    config.servers.a = { url: 'http://a', token: 't1' };
    await writeClientConfig(file, config);
    config.servers.a = { url: 'http://a', token: 't2' };
    await writeClientConfig(file, config);
    assert.match(await readFile(file, 'utf8'), /"t2"/);
  });
});

describe('resolving targets', () => {
  const config = emptyConfig();
  config.servers.home = { url: 'http://127.0.0.1:5000', token: 'saved' };
  config.servers.anon = { url: 'https://cache.example.org/niche' };

  it('resolves <alias>/<cache> with the saved token, NICHE_TOKEN winning', () => {
    assert.deepEqual(resolveTarget('home/main', config, undefined), {
      serverUrl: 'http://127.0.0.1:5000',
      cache: 'main',
      token: 'saved',
      label: 'home/main',
    });
    assert.equal(resolveTarget('home/main', config, 'from-env').token, 'from-env');
    assert.equal(resolveTarget('anon/x', config, undefined).token, undefined);
  });

  it('resolves URLs, with a path prefix, using a saved token for the same server', () => {
    assert.deepEqual(resolveTarget('http://127.0.0.1:5000/main', config, undefined), {
      serverUrl: 'http://127.0.0.1:5000',
      cache: 'main',
      token: 'saved',
      label: 'http://127.0.0.1:5000/main',
    });
    const prefixed = resolveTarget('https://cache.example.org/niche/team/', config, 'env');
    assert.equal(prefixed.serverUrl, 'https://cache.example.org/niche');
    assert.equal(prefixed.cache, 'team');
    assert.equal(prefixed.token, 'env');
    assert.equal(resolveTarget('http://elsewhere:1/c', config, undefined).token, undefined);
  });

  it('explains unknown aliases and malformed targets', () => {
    assert.throws(() => resolveTarget('nope/main', config, undefined), /niche login nope/);
    assert.throws(() => resolveTarget('constructor/main', config, undefined), { code: 'SERVER_UNKNOWN' });
    assert.throws(() => resolveTarget('main', config, undefined), { code: 'SERVER_UNKNOWN' });
    assert.throws(() => resolveTarget('http://127.0.0.1:5000', config, undefined), {
      code: 'SERVER_UNKNOWN',
    });
    assert.throws(() => resolveTarget('home/Bad_Name', config, undefined), { code: 'CACHE_NAME_INVALID' });
  });
});
