// The operations settings (src/config.ts): access-log (on, off, a sample rate), tls-cert and tls-key
// (together or not at all), and Unix socket listen addresses, from flags, the environment and the file.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_ACCESS_LOG, loadServeConfig, parseHttpListen } from '../../src/config.js';

describe('operations settings', () => {
  it('access-log: on by default, off, or a sample rate from 0 to 1', () => {
    assert.deepEqual(loadServeConfig({}, {}).accessLog, DEFAULT_ACCESS_LOG);
    assert.equal(loadServeConfig({ accessLog: 'off' }, {}).accessLog, undefined);
    assert.equal(loadServeConfig({ accessLog: '0' }, {}).accessLog, undefined);
    assert.deepEqual(loadServeConfig({ accessLog: 'on' }, {}).accessLog, { sampleRate: 1 });
    assert.deepEqual(loadServeConfig({}, { NICHE_ACCESS_LOG: '0.1' }).accessLog, { sampleRate: 0.1 });
    assert.deepEqual(loadServeConfig({ accessLog: '.5' }, { NICHE_ACCESS_LOG: 'off' }).accessLog, {
      sampleRate: 0.5,
    });
    for (const bad of ['1.5', 'sometimes', '-0.1', '1e-3']) {
      assert.throws(
        () => loadServeConfig({ accessLog: bad }, {}),
        new RegExp(
          `--access-log: expected on, off or a sample rate from 0 to 1, got "${bad.replace('.', '\\.')}"`,
        ),
      );
    }
  });

  it('tls-cert and tls-key go together', () => {
    assert.equal(loadServeConfig({}, {}).tls, undefined);
    assert.deepEqual(loadServeConfig({ tlsCert: '/c.pem', tlsKey: '/k.pem' }, {}).tls, {
      certFile: '/c.pem',
      keyFile: '/k.pem',
    });
    assert.throws(() => loadServeConfig({ tlsCert: '/c.pem' }, {}), /--tls-cert: needs tls-key too/);
    assert.throws(
      () => loadServeConfig({}, { NICHE_TLS_KEY: '/k.pem' }),
      /NICHE_TLS_KEY: needs tls-cert too/,
    );
  });

  it('listen takes unix:/ABSOLUTE/PATH', () => {
    assert.deepEqual(parseHttpListen('unix:/run/niche/http.sock'), { socketPath: '/run/niche/http.sock' });
    assert.deepEqual(parseHttpListen('[::1]:5000'), { host: '::1', port: 5000 });
    assert.deepEqual(loadServeConfig({ listen: ['unix:/run/n.sock', '127.0.0.1:5000'] }, {}).listen, [
      { socketPath: '/run/n.sock' },
      { host: '127.0.0.1', port: 5000 },
    ]);
    assert.throws(() => parseHttpListen('unix:relative.sock'), /expected unix:\/ABSOLUTE\/PATH/);
    assert.throws(() => parseHttpListen(`unix:/${'x'.repeat(120)}`), /at most 107 bytes/);
  });
});
