// Configuration: defaults, then the TOML file, then the environment, then flags; every problem at once.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { availableParallelism } from 'node:os';
import {
  loadServeConfig,
  MAX_WORKERS,
  parseDuration,
  parseListen,
  parseRate,
  parseSize,
  parseWorkers,
} from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'niche-config-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function configFile(text: string): Promise<string> {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.toml`);
  await writeFile(file, text);
  return file;
}

function problemsOf(load: () => unknown): string {
  try {
    load();
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    assert.equal(error.code, 'CONFIG_INVALID');
    return error.message;
  }
  assert.fail('expected a ConfigError');
}

describe('config', () => {
  it('uses defaults, then the environment, then flags', () => {
    const defaults = loadServeConfig({}, {});
    assert.equal(defaults.dataDir, './niche-data');
    assert.deepEqual(defaults.listen, [{ host: '127.0.0.1', port: 5000 }]);
    assert.equal(defaults.limits.maxNarSize, 64 * 2 ** 30);
    assert.deepEqual(defaults.storage, { type: 'fs', path: 'niche-data/blobs' });
    assert.deepEqual(defaults.database, { type: 'sqlite', path: 'niche-data/niche.sqlite' });
    const fromEnv = loadServeConfig(
      {},
      { NICHE_DATA: '/srv/niche', NICHE_LISTEN: '[::1]:8080,127.0.0.1:8081', NICHE_MAX_NAR_SIZE: '1G' },
    );
    assert.equal(fromEnv.dataDir, '/srv/niche');
    assert.deepEqual(fromEnv.listen, [
      { host: '::1', port: 8080 },
      { host: '127.0.0.1', port: 8081 },
    ]);
    assert.equal(fromEnv.limits.maxNarSize, 2 ** 30);
    assert.deepEqual(fromEnv.database, { type: 'sqlite', path: '/srv/niche/niche.sqlite' });
    const fromFlags = loadServeConfig({ data: '/x', listen: '9000' }, { NICHE_DATA: '/srv/niche' });
    assert.equal(fromFlags.dataDir, '/x');
    assert.deepEqual(fromFlags.listen, [{ host: '127.0.0.1', port: 9000 }]);
    assert.ok(Object.isFrozen(fromFlags));
  });

  it('reads a TOML file, overridden by the environment and flags', async () => {
    const file = await configFile(`
data-dir = "/var/lib/niche"
listen = ["0.0.0.0:5000", "[::]:5000"]
log-level = "warn"

[limits]
max-nar-size = "2G"

[storage]
type = "s3"
bucket = "nix-cache"
endpoint = "http://127.0.0.1:9000"
part-size = "8M"

[database]
url = "postgres://niche@127.0.0.1/niche"
max-connections = 20
`);
    const config = loadServeConfig({ config: file, logLevel: 'debug' }, { NICHE_S3_PREFIX: 'niche/' });
    assert.equal(config.dataDir, '/var/lib/niche');
    assert.deepEqual(config.listen, [
      { host: '0.0.0.0', port: 5000 },
      { host: '::', port: 5000 },
    ]);
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.limits.maxNarSize, 2 * 2 ** 30);
    assert.deepEqual(config.storage, {
      type: 's3',
      bucket: 'nix-cache',
      endpoint: 'http://127.0.0.1:9000',
      region: undefined,
      forcePathStyle: true,
      prefix: 'niche/',
      partSize: 8 * 2 ** 20,
      partsInFlight: 4,
    });
    assert.deepEqual(config.database, {
      type: 'postgres',
      url: 'postgres://niche@127.0.0.1/niche',
      maxConnections: 20,
    });
    const fromEnvFile = loadServeConfig(
      {},
      { NICHE_CONFIG: file, NICHE_DATABASE_URL: 'postgres://other@db/x' },
    );
    assert.equal(fromEnvFile.storage.type, 's3');
    assert.deepEqual(fromEnvFile.database, {
      type: 'postgres',
      url: 'postgres://other@db/x',
      maxConnections: 20,
    });
    // Switching the type without dropping the file's URL is a contradiction, reported as such.
    assert.match(
      problemsOf(() => loadServeConfig({}, { NICHE_CONFIG: file, NICHE_DATABASE: 'sqlite' })),
      /database.url: only applies/,
    );
  });

  it('reads the GC schedule and grace from [gc], NICHE_GC_* and --gc-interval; hourly by default', async () => {
    assert.deepEqual(loadServeConfig({}, {}).gc, { intervalMs: 3_600_000, graceMs: 86_400_000 });
    const file = await configFile(`
[gc]
interval = "30m"
grace = "2h"
`);
    assert.deepEqual(loadServeConfig({ config: file }, {}).gc, { intervalMs: 1_800_000, graceMs: 7_200_000 });
    assert.deepEqual(loadServeConfig({ config: file }, { NICHE_GC_INTERVAL: 'off' }).gc, {
      intervalMs: undefined,
      graceMs: 7_200_000,
    });
    assert.equal(loadServeConfig({ config: file, gcInterval: '10m' }, {}).gc.intervalMs, 600_000);
    assert.match(
      problemsOf(() => loadServeConfig({ gcInterval: 'sometimes' }, {})),
      /--gc-interval: expected a duration such as 60s or 5m, got "sometimes"/,
    );
  });

  it('reads workers from the file, NICHE_WORKERS and --workers: a number, or auto for one per core', async () => {
    assert.equal(loadServeConfig({}, {}).workers, 1);
    assert.equal(loadServeConfig({ config: await configFile('workers = 4\n') }, {}).workers, 4);
    assert.equal(loadServeConfig({ config: await configFile('workers = "3"\n') }, {}).workers, 3);
    assert.equal(loadServeConfig({}, { NICHE_WORKERS: '2' }).workers, 2);
    assert.equal(loadServeConfig({ workers: '5' }, { NICHE_WORKERS: '2' }).workers, 5);
    const auto = Math.min(availableParallelism(), MAX_WORKERS);
    assert.equal(loadServeConfig({ workers: 'auto' }, {}).workers, auto);
    assert.equal(loadServeConfig({ config: await configFile('workers = "AUTO"\n') }, {}).workers, auto);
    assert.equal(
      parseWorkers('auto', () => 64),
      64,
    );
    assert.equal(
      parseWorkers('auto', () => 1000),
      MAX_WORKERS,
    );
    assert.equal(parseWorkers(String(MAX_WORKERS)), MAX_WORKERS);
    for (const bad of ['0', '-1', '1.5', 'many', '', String(MAX_WORKERS + 1)]) {
      assert.throws(() => parseWorkers(bad), /from 1 to 256, or auto/, bad);
    }
    assert.match(
      problemsOf(() => loadServeConfig({ workers: 'lots' }, {})),
      /--workers: expected a number of worker processes from 1 to 256, or auto \(one per core\), got "lots"/,
    );
    assert.match(
      problemsOf(() => loadServeConfig({}, { NICHE_WORKERS: '0' })),
      /NICHE_WORKERS: expected/,
    );
    const fractional = await configFile('workers = 2.5\n');
    assert.match(
      problemsOf(() => loadServeConfig({ config: fractional }, {})),
      /workers: expected a number of worker processes/,
    );
  });

  it('reports every problem at once, from every source', async () => {
    const file = await configFile(`
listen = "nowhere"
unknown-key = 1
[storage]
type = "s3"
part-size = "1M"
[database]
type = "postgres"
path = "/x.sqlite"
`);
    const message = problemsOf(() =>
      loadServeConfig({ config: file, logLevel: 'loud' }, { NICHE_MAX_NAR_SIZE: 'big' }),
    );
    // Each setting is named as the user gave it: the file's key as written, the flag, the variable.
    for (const expected of [
      /^ {2}unknown-key: unknown setting$/m,
      /^ {2}--log-level: Invalid option/m,
      /^ {2}NICHE_MAX_NAR_SIZE: expected a size such as 512M or 64G, got "big"$/m,
    ])
      assert.match(message, expected);
    // Once the values parse, what they mean together is checked, named the same way.
    const fixed = await configFile(`
listen = "nowhere"
[storage]
type = "s3"
bucket = "b"
part-size = "1M"
[database]
type = "postgres"
url = "postgres://x@y/z"
path = "/x.sqlite"
`);
    const meaning = problemsOf(() => loadServeConfig({ config: fixed }, {}));
    for (const expected of [
      /^ {2}listen: expected HOST:PORT/m,
      /^ {2}storage.part-size: S3 needs at least 5M$/m,
      /^ {2}database.path: only applies to database type "sqlite"$/m,
    ])
      assert.match(meaning, expected);
    const semantic = problemsOf(() =>
      loadServeConfig({}, { NICHE_STORAGE: 's3', NICHE_DATABASE: 'postgres', NICHE_LISTEN: 'host:99999' }),
    );
    for (const expected of [
      /storage.bucket: required/,
      /database.url: required/,
      /NICHE_LISTEN: expected HOST:PORT/,
    ]) {
      assert.match(semantic, expected);
    }
    assert.match(
      problemsOf(() => loadServeConfig({}, { NICHE_S3_BUCKET: 'b' })),
      /only applies to storage type "s3"/,
    );
    assert.match(
      problemsOf(() => loadServeConfig({ config: join(dir, 'missing.toml') }, {})),
      /cannot read config file/,
    );
    const broken = await configFile('listen = [');
    assert.match(
      problemsOf(() => loadServeConfig({ config: broken }, {})),
      /cannot parse/,
    );
  });

  it('names settings as written in the file, and by the variable or flag that set them', async () => {
    const file = await configFile(`
data-dir = "/srv/niche"
[storage]
type = "s3"
bucket = "b"
parts-in-flite = 3
[database]
maxConnections = 5
`);
    const message = problemsOf(() =>
      loadServeConfig(
        { config: file, publicUrl: 'ftp://x', trustedProxies: ['10.0.0.0/40'] },
        { NICHE_S3_FORCE_PATH_STYLE: 'perhaps', NICHE_LISTEN: '1.2.3.4:5,nowhere' },
      ),
    );
    for (const expected of [
      /^ {2}storage.parts-in-flite: unknown setting \(did you mean parts-in-flight\?\)$/m,
      /^ {2}NICHE_S3_FORCE_PATH_STYLE: expected true or false, got "perhaps"$/m,
      /^ {2}--public-url: expected an http or https URL/m,
      /^ {2}--trusted-proxy\[0\]: expected an IP address or a network/m,
    ])
      assert.match(message, expected);
    assert.doesNotMatch(message, /partsInFlite|forcePathStyle|publicUrl|trustedProxies/);
    const camelFile = await configFile('[database]\nmaxConnections = 5\n');
    const semantic = problemsOf(() =>
      loadServeConfig({ config: camelFile }, { NICHE_LISTEN: '1.2.3.4:5,nowhere', NICHE_S3_BUCKET: 'b' }),
    );
    for (const expected of [
      /^ {2}database.maxConnections: only applies to database type "postgres"$/m,
      /^ {2}NICHE_LISTEN: expected HOST:PORT/m,
      /^ {2}NICHE_S3_BUCKET: only applies to storage type "s3"$/m,
    ])
      assert.match(semantic, expected);
  });

  it('reads public-url and trusted-proxies from the file, the environment and flags', async () => {
    const file = await configFile(
      'public-url = "https://cache.example.org/nix/"\ntrusted-proxies = ["127.0.0.1", "10.0.0.0/8"]\n',
    );
    const fromFile = loadServeConfig({ config: file }, {});
    assert.equal(fromFile.publicUrl, 'https://cache.example.org/nix');
    assert.deepEqual(fromFile.trustedProxies, ['127.0.0.1', '10.0.0.0/8']);
    const fromEnv = loadServeConfig(
      {},
      { NICHE_PUBLIC_URL: 'http://[::1]:8080', NICHE_TRUSTED_PROXIES: '::1, fd00::/8' },
    );
    assert.equal(fromEnv.publicUrl, 'http://[::1]:8080');
    assert.deepEqual(fromEnv.trustedProxies, ['::1', 'fd00::/8']);
    const fromFlags = loadServeConfig(
      { publicUrl: 'https://c.example', trustedProxies: ['192.168.1.1'] },
      { NICHE_PUBLIC_URL: 'http://ignored' },
    );
    assert.equal(fromFlags.publicUrl, 'https://c.example');
    assert.deepEqual(loadServeConfig({}, {}).trustedProxies, []);
    assert.equal(loadServeConfig({}, {}).publicUrl, undefined);
    for (const bad of [
      'cache.example.org',
      'https://u:p@c.example',
      'https://c.example/?q',
      'https://c.example/a b',
    ])
      assert.match(
        problemsOf(() => loadServeConfig({ publicUrl: bad }, {})),
        /--public-url: /,
      );
    for (const bad of ['localhost', '10.0.0.0/33', '::1/129', '1.2.3.4/8/8'])
      assert.match(
        problemsOf(() => loadServeConfig({}, { NICHE_TRUSTED_PROXIES: bad })),
        /NICHE_TRUSTED_PROXIES/,
      );
  });

  it('reads idle-timeout and min-transfer-rate from the file, the environment and flags', async () => {
    assert.deepEqual(loadServeConfig({}, {}).connections, { idleTimeoutMs: 60_000, minTransferRate: 1024 });
    const file = await configFile('idle-timeout = "2m"\nmin-transfer-rate = "4K/s"\n');
    assert.deepEqual(loadServeConfig({ config: file }, {}).connections, {
      idleTimeoutMs: 120_000,
      minTransferRate: 4096,
    });
    const seconds = await configFile('idle-timeout = 30\nmin-transfer-rate = 0\n');
    assert.deepEqual(loadServeConfig({ config: seconds }, {}).connections, {
      idleTimeoutMs: 30_000,
      minTransferRate: 0,
    });
    assert.deepEqual(
      loadServeConfig(
        { config: file, idleTimeout: '500ms' },
        { NICHE_IDLE_TIMEOUT: '10s', NICHE_MIN_TRANSFER_RATE: '100' },
      ).connections,
      { idleTimeoutMs: 500, minTransferRate: 100 },
    );
    const message = problemsOf(() =>
      loadServeConfig({ idleTimeout: 'soon', minTransferRate: 'fast' }, { NICHE_IDLE_TIMEOUT: '1' }),
    );
    assert.match(message, /^ {2}--idle-timeout: expected a duration such as 60s or 5m, got "soon"$/m);
    assert.match(message, /^ {2}--min-transfer-rate: expected a size such as 512M or 64G, got "fast"$/m);
    assert.match(
      problemsOf(() => loadServeConfig({}, { NICHE_IDLE_TIMEOUT: '0' })),
      /NICHE_IDLE_TIMEOUT: expected a duration from 1ms to 24h/,
    );
    assert.match(
      problemsOf(() => loadServeConfig({}, { NICHE_IDLE_TIMEOUT: '2d' })),
      /NICHE_IDLE_TIMEOUT: expected a duration from 1ms to 24h, got "2d"/,
    );
    assert.match(
      problemsOf(() => loadServeConfig({}, { NICHE_IDLE_TIMEOUT: '2 weeks' })),
      /NICHE_IDLE_TIMEOUT: expected a duration such as/,
    );
  });

  it('reads the embedded SSH server from [ssh], NICHE_SSH_LISTEN and --ssh-listen; off by default', async () => {
    assert.equal(loadServeConfig({}, {}).ssh, undefined);
    const file = await configFile(
      '[ssh]\nlisten = ["0.0.0.0:2222", "[::]:2222"]\nhost-key-file = "/etc/niche/ssh_host"\nmax-sessions = 10\n',
    );
    assert.deepEqual(loadServeConfig({ config: file, data: '/srv/niche' }, {}).ssh, {
      listen: [
        { host: '0.0.0.0', port: 2222 },
        { host: '::', port: 2222 },
      ],
      hostKeyFile: '/etc/niche/ssh_host',
      maxSessions: 10,
      maxSessionsPerKey: 8,
    });
    assert.deepEqual(loadServeConfig({ data: '/srv/niche' }, { NICHE_SSH_LISTEN: '127.0.0.1:2200' }).ssh, {
      listen: [{ host: '127.0.0.1', port: 2200 }],
      hostKeyFile: '/srv/niche/ssh_host_ed25519_key',
      maxSessions: 64,
      maxSessionsPerKey: 8,
    });
    assert.deepEqual(
      loadServeConfig({ config: file, sshListen: ['2223'] }, { NICHE_SSH_LISTEN: '2200' }).ssh?.listen,
      [{ host: '127.0.0.1', port: 2223 }],
    );
    assert.match(
      problemsOf(() => loadServeConfig({ sshListen: ['nowhere:99999'] }, {})),
      /^ {2}--ssh-listen: expected HOST:PORT/m,
    );
    const bad = await configFile('[ssh]\nlisten = "2222"\nmax-session = 3\n');
    assert.match(
      problemsOf(() => loadServeConfig({ config: bad }, {})),
      /ssh.*max-session.*did you mean max-sessions/,
    );
  });

  it('parses listen addresses and sizes', () => {
    assert.equal(parseDuration('90'), 90_000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseRate('1K/s'), 1024);
    assert.equal(parseRate('100KiB/s'), 100 * 1024);
    assert.equal(parseRate('0'), 0);
    assert.deepEqual(parseListen('0.0.0.0:80'), { host: '0.0.0.0', port: 80 });
    assert.deepEqual(parseListen(':5000'), { host: '127.0.0.1', port: 5000 });
    assert.throws(() => parseListen('host:99999'));
    assert.throws(() => parseListen('::1:80'));
    assert.equal(parseSize('512M'), 512 * 2 ** 20);
    assert.equal(parseSize('2GiB'), 2 * 2 ** 30);
    assert.equal(parseSize('1000'), 1000);
    assert.throws(() => parseSize('-1'));
  });
});
