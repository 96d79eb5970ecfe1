// `niche doctor` against healthy and broken configurations, run in-process through main().
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { main } from '../../src/cli/main.js';
import { SecretKey } from '../../src/nix/signing.js';

async function niche(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk));
  stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const code = await main(args, { stdout, stderr, env: {} });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

describe('niche doctor', () => {
  let dir: string;
  let busy: Server;
  let busyPort: number;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'niche-doctor-'));
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const address = busy.address();
    busyPort = typeof address === 'object' && address !== null ? address.port : 0;
  });
  after(async () => {
    busy.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reports a healthy data directory: backends reached, caches and their keys, listen address', async () => {
    const data = join(dir, 'healthy');
    assert.equal((await niche('cache', 'create', 'team', '--private', '--data', data)).code, 0);
    const result = await niche('doctor', '--data', data);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^ok {4}metadata store answers/m);
    assert.match(result.stdout, /^ok {4}cache team: private, priority 40, signing with \S+-team-1$/m);
    assert.match(result.stdout, /^ok {4}blob store takes a write and a delete/m);
    assert.match(result.stdout, /^ok {4}listen 127\.0\.0\.1:5000: /m);
    assert.match(
      result.stdout,
      /^ok {4}metrics: \/metrics on the listen addresses with a server-admin token$/m,
    );
    assert.match(result.stdout, /^ok {4}workers: 1 \(one process; \d+ cores here/m);
    assert.match(result.stdout, /^ok {4}ready to serve$/m);
    assert.doesNotMatch(result.stdout, /^FAIL/m);
  });

  it('fails on an unusable blob store, a bad key file and a config error, and warns on what merely looks wrong', async () => {
    const data = join(dir, 'broken');
    assert.equal((await niche('cache', 'create', 'main', '--data', data)).code, 0);
    // The blob directory is a file: nothing can be stored.
    await writeFile(join(dir, 'not-a-dir'), 'x');
    await writeFile(join(dir, 'bad-host-key'), 'not a key', { mode: 0o600 });
    const key = join(dir, 'open.sk');
    await writeFile(key, SecretKey.generate('doctor-1').toString());
    await chmod(key, 0o644);
    const config = join(dir, 'niche.toml');
    await writeFile(
      config,
      [
        `data-dir = "${data}"`,
        `listen = ["127.0.0.1:${busyPort}"]`,
        `signing-key-file = "${key}"`,
        'metrics = "off"',
        `metrics-listen = "127.0.0.1:${busyPort}"`,
        'workers = 256',
        '[storage]',
        `path = "${join(dir, 'not-a-dir')}"`,
        '[ssh]',
        `listen = "127.0.0.1:${busyPort}"`,
        `host-key-file = "${join(dir, 'bad-host-key')}"`,
      ].join('\n'),
    );
    const result = await niche('doctor', '--config', config);
    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stdout, /^FAIL {2}blobs: files under .*not-a-dir: /m);
    assert.match(result.stdout, new RegExp(`^warn {2}listen 127\\.0\\.0\\.1:${busyPort}: in use`, 'm'));
    assert.match(
      result.stdout,
      /^warn {2}signing-key-file .*open\.sk \(key doctor-1\) is readable by others \(mode 644\)/m,
    );
    assert.match(result.stdout, /^ok {4}cache main: public/m);
    assert.match(result.stdout, new RegExp(`^warn {2}ssh listen 127\\.0\\.0\\.1:${busyPort}: in use`, 'm'));
    assert.match(
      result.stdout,
      new RegExp(`^warn {2}metrics listen 127\\.0\\.0\\.1:${busyPort}: in use`, 'm'),
    );
    assert.match(result.stdout, /^ok {4}metrics: \/metrics on metrics-listen without credentials$/m);
    assert.match(result.stdout, /^warn {2}workers: 256 processes on \d+ cores \(more than one per core/m);
    assert.match(
      result.stdout,
      /^FAIL {2}SSH host key: the SSH host key .*bad-host-key is not an unencrypted private key/m,
    );
    assert.match(result.stdout, /^FAIL {2}niche would not start or work as configured$/m);

    await writeFile(key, 'not a key');
    await chmod(key, 0o600);
    const badKey = await niche('doctor', '--config', config);
    assert.match(badKey.stdout, /^FAIL {2}signing-key-file: signing key file .* is not a Nix secret key/m);

    await writeFile(config, 'no-such-key = 1\n');
    const badConfig = await niche('doctor', '--config', config);
    assert.equal(badConfig.code, 1);
    assert.match(badConfig.stdout, /^FAIL {2}configuration: [\s\S]*no-such-key/m);
  });
});
