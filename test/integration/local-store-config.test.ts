// Configuring the local store: flags and their environment equivalents, options that make no sense alone,
// mount paths that would hide something, and the signing keys (a bad key file stops the start; without
// one, a key is generated once into the data directory, private, and reused).
import assert from 'node:assert/strict';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { startServer } from '../../src/app/server.js';
import { loadServeConfig, type ServeFlags } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { SecretKey } from '../../src/nix/signing.js';

let root: string;
let nixDb: string;
let storeDir: string;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'niche-local-store-config-'));
  storeDir = join(root, 'store');
  mkdirSync(storeDir);
  nixDb = join(root, 'db.sqlite');
  const db = new Database(nixDb);
  db.exec(
    'CREATE TABLE ValidPaths (id integer primary key autoincrement not null, path text unique not null, hash text not null, registrationTime integer not null, deriver text, narSize integer, ultimate integer, sigs text, ca text);' +
      'CREATE TABLE Refs (referrer integer not null, reference integer not null, primary key (referrer, reference));',
  );
  db.close();
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

function expectConfigError(run: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof ConfigError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  });
}

describe('local store configuration', () => {
  it('is off by default, and on with --local-store or --local-store-root', () => {
    assert.equal(loadServeConfig({}, {}).localStore, undefined);
    assert.deepEqual(loadServeConfig({ localStore: true }, {}).localStore, {
      mountPath: '/local',
      mountAtRoot: false,
      storeDir: '/nix/store',
      nixDb: '/nix/var/nix/db/db.sqlite',
      logDir: '/nix/var/log/nix',
      keyFiles: [],
    });
    assert.equal(loadServeConfig({ localStoreRoot: true }, {}).localStore?.mountAtRoot, true);
  });

  it('reads the environment equivalents, flags first', () => {
    const env = {
      NICHE_LOCAL_STORE: '1',
      NICHE_LOCAL_STORE_PATH: '/host',
      NICHE_LOCAL_STORE_ROOT: 'true',
      NICHE_STORE_DIR: '/gnu/store',
      NICHE_NIX_DB: '/var/db.sqlite',
      NICHE_NIX_LOG_DIR: '/var/log/nix',
      NICHE_LOCAL_STORE_KEY_FILES: '/keys/a.sk, /keys/b.sk,',
    };
    assert.deepEqual(loadServeConfig({}, env).localStore, {
      mountPath: '/host',
      mountAtRoot: true,
      storeDir: '/gnu/store',
      nixDb: '/var/db.sqlite',
      logDir: '/var/log/nix',
      keyFiles: ['/keys/a.sk', '/keys/b.sk'],
    });
    const flags: ServeFlags = {
      localStorePath: '/mine',
      localStoreKeyFiles: ['/k.sk'],
      localStoreRoot: false,
    };
    const config = loadServeConfig(flags, env).localStore;
    assert.ok(config);
    assert.equal(config.mountPath, '/mine');
    assert.equal(config.mountAtRoot, false);
    assert.deepEqual(config.keyFiles, ['/k.sk']);
    assert.equal(loadServeConfig({}, { NICHE_LOCAL_STORE: '0' }).localStore, undefined);
  });

  it('reports options without the local store, bad values and mount paths that would hide routes', () => {
    expectConfigError(
      () => loadServeConfig({ storeDir: '/nix/store', nixDb: '/x' }, {}),
      'CONFIG_INVALID',
      /--store-dir: only applies to the local store[\s\S]*--nix-db: only applies to the local store/,
    );
    for (const mountPath of ['/', 'local', '/local/', '/api', '/nar', '/Local', '/a//b']) {
      expectConfigError(
        () => loadServeConfig({ localStore: true, localStorePath: mountPath }, {}),
        'CONFIG_INVALID',
        /--local-store-path: /,
      );
    }
    expectConfigError(
      () =>
        loadServeConfig({ localStore: true, storeDir: 'nix/store/' }, { NICHE_LOCAL_STORE_ROOT: 'maybe' }),
      'CONFIG_INVALID',
      /NICHE_LOCAL_STORE_ROOT: [\s\S]*--store-dir: |--store-dir: [\s\S]*NICHE_LOCAL_STORE_ROOT: /,
    );
    assert.equal(
      loadServeConfig({ localStore: true, localStorePath: '/stores/host' }, {}).localStore?.mountPath,
      '/stores/host',
    );
  });
});

describe('local store start-up', () => {
  async function start(flags: ServeFlags, dataDir: string) {
    return startServer(
      loadServeConfig(
        { data: dataDir, listen: '127.0.0.1:0', logLevel: 'silent', storeDir, nixDb, ...flags },
        {},
      ),
    );
  }

  it('generates a private key at the first start and reuses it', async () => {
    const data = join(root, 'generated');
    const first = await start({ localStore: true }, data);
    let publicKeys: string[];
    try {
      assert.equal(first.localStore?.generatedKeyFile, join(data, 'local-store.sk'));
      publicKeys = first.localStore.publicKeys;
      assert.equal(publicKeys.length, 1);
      assert.match(publicKeys[0] ?? '', /-local-1:/);
      assert.equal(statSync(join(data, 'local-store.sk')).mode & 0o777, 0o600);
    } finally {
      await first.close();
    }
    const second = await start({ localStore: true }, data);
    try {
      assert.ok(second.localStore);
      assert.equal(second.localStore.generatedKeyFile, undefined);
      assert.deepEqual(second.localStore.publicKeys, publicKeys);
    } finally {
      await second.close();
    }
  });

  it('signs with every configured key file', async () => {
    const keys = [SecretKey.generate('host-a-1'), SecretKey.generate('host-b-1')];
    const files = keys.map((key, i) => {
      const file = join(root, `key-${i}.sk`);
      writeFileSync(file, key.toString());
      return file;
    });
    const server = await start({ localStore: true, localStoreKeyFiles: files }, join(root, 'two-keys'));
    try {
      assert.deepEqual(
        server.localStore?.publicKeys,
        keys.map((key) => key.publicKey.toString()),
      );
    } finally {
      await server.close();
    }
  });

  it('refuses to start with a bad key file, a missing database or a mount that hides a cache', async () => {
    const badKey = join(root, 'bad.sk');
    writeFileSync(badKey, 'not-a-key');
    const cases: [ServeFlags, string, RegExp][] = [
      [{ localStore: true, localStoreKeyFiles: [badKey] }, 'KEY_FILE_INVALID', /bad\.sk/],
      [
        { localStore: true, localStoreKeyFiles: [join(root, 'missing.sk')] },
        'KEY_FILE_INVALID',
        /missing\.sk/,
      ],
      [{ localStore: true, nixDb: join(root, 'no-such-db.sqlite') }, 'CONFIG_INVALID', /Nix database/],
      [{ localStore: true, localStorePath: '/main' }, 'CONFIG_INVALID', /would hide the cache "main"/],
    ];
    for (const [flags, code, pattern] of cases) {
      await assert.rejects(start(flags, join(root, 'refused')), (error: unknown) => {
        assert.ok(error instanceof ConfigError, String(error));
        assert.equal(error.code, code);
        assert.match(error.message, pattern);
        return true;
      });
    }
  });
});
