// `niche doctor` on the TLS pair and Unix socket listen addresses: a good pair (subject, serial, expiry,
// key matches) is ok, a key readable by others a warning, a key of another certificate and an unreadable
// file failures; a stale socket is reported as removed at start, a live one as in use.
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runMain } from '../helpers/cli-process.js';
import { TEST_CA_FILE } from '../helpers/tls-proxy.js';

const TLS_DIR = join(TEST_CA_FILE, '..');

describe('niche doctor: TLS and Unix sockets', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'niche-doctor-tls-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('checks the certificate and key as niche serve loads them', async () => {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    await copyFile(join(TLS_DIR, 'localhost.crt'), cert);
    await copyFile(join(TLS_DIR, 'localhost.key'), key);
    await chmod(key, 0o600);
    const env = { NICHE_TLS_CERT: cert, NICHE_TLS_KEY: key, NICHE_LISTEN: '127.0.0.1:0' };
    const data = join(dir, 'data');
    const good = await runMain(['doctor', '--data', data], env);
    assert.equal(good.code, 0, good.stdout);
    assert.match(
      good.stdout,
      /^ok {4}TLS certificate .*CN=localhost, serial 49E1D0CA.*, valid until .*2126 GMT, SHA-256 [0-9A-F:]+ \(\d+ days left\)$/m,
    );
    assert.match(good.stdout, /^ok {4}TLS key .*: matches the certificate, mode 600$/m);

    await chmod(key, 0o644);
    const loose = await runMain(['doctor', '--data', data], env);
    assert.equal(loose.code, 0);
    assert.match(loose.stdout, /^warn {2}TLS key .* is readable by others \(mode 644\)/m);

    await copyFile(join(TLS_DIR, 'localhost-2.key'), key);
    const mismatch = await runMain(['doctor', '--data', data], env);
    assert.equal(mismatch.code, 1);
    assert.match(mismatch.stdout, /^FAIL {2}TLS: the key in .* is not the key of the certificate in /m);

    const missing = await runMain(['doctor', '--data', data], {
      ...env,
      NICHE_TLS_CERT: join(dir, 'nope.pem'),
    });
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /^FAIL {2}TLS: cannot read the TLS certificate .*nope\.pem/m);
  });

  it('reports Unix socket listen addresses without touching them', async () => {
    const socketPath = join(dir, 'live.sock');
    const live = createServer();
    await new Promise<void>((resolve) => live.listen(socketPath, resolve));
    try {
      const free = join(dir, 'free.sock');
      const result = await runMain(['doctor', '--data', join(dir, 'data')], {
        NICHE_LISTEN: `unix:${socketPath},unix:${free}`,
      });
      assert.match(result.stdout, new RegExp(`^warn {2}listen unix:${socketPath}: in use`, 'm'));
      assert.match(result.stdout, new RegExp(`^ok {4}listen unix:${free}: free \\(made mode 660\\)$`, 'm'));
    } finally {
      live.close();
    }
  });
});
