// Configuration: flags over environment over defaults, every problem reported at once.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadServeConfig, parseListen, parseSize } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

describe('config', () => {
  it('uses defaults, then the environment, then flags', () => {
    const defaults = loadServeConfig({}, {});
    assert.equal(defaults.dataDir, './niche-data');
    assert.deepEqual(defaults.listen, { host: '127.0.0.1', port: 5000 });
    assert.equal(defaults.limits.maxNarSize, 64 * 2 ** 30);
    const fromEnv = loadServeConfig(
      {},
      { NICHE_DATA: '/srv/niche', NICHE_LISTEN: '[::1]:8080', NICHE_MAX_NAR_SIZE: '1G' },
    );
    assert.equal(fromEnv.dataDir, '/srv/niche');
    assert.deepEqual(fromEnv.listen, { host: '::1', port: 8080 });
    assert.equal(fromEnv.limits.maxNarSize, 2 ** 30);
    const fromFlags = loadServeConfig({ data: '/x', listen: '9000' }, { NICHE_DATA: '/srv/niche' });
    assert.equal(fromFlags.dataDir, '/x');
    assert.deepEqual(fromFlags.listen, { host: '127.0.0.1', port: 9000 });
    assert.ok(Object.isFrozen(fromFlags));
  });
  it('reports every problem at once', () => {
    try {
      loadServeConfig({ listen: 'nowhere', logLevel: 'loud', maxNarSize: 'big' }, {});
      assert.fail('expected a ConfigError');
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.code, 'CONFIG_INVALID');
      assert.match(error.message, /listen/);
      assert.match(error.message, /logLevel/);
      assert.match(error.message, /maxNarSize/);
    }
  });
  it('parses listen addresses and sizes', () => {
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
