// niche serving HTTPS itself (`--tls-cert/--tls-key`): curl over HTTP/1.1 and HTTP/2 (ALPN) with the test
// CA, uploads and downloads (the NAR through the buffer pool, a range, HEAD) intact over both, access log
// lines for HTTP/2, TLS 1.1 refused (a client that speaks it is shown to connect elsewhere); a certificate
// swapped on SIGHUP while a large NAR downloads over HTTP/2 (the download completes intact, new
// connections get the new certificate, a bad pair is refused and the new one stays); and a Unix socket
// (`--listen unix:…`): stale socket file removed, mode 0660, served to curl --unix-socket.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { connect as http2Connect } from 'node:http2';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { promisify } from 'node:util';
import pino from 'pino';
import { encodeNix32 } from '../../src/nix/nix32.js';
import { spawnServe } from '../helpers/cli-process.js';
import { largeNar, type LargeNar } from '../helpers/large-nar.js';
import { LogSink } from '../helpers/log-sink.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { TEST_CA_FILE } from '../helpers/tls-proxy.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const TLS_DIR = join(TEST_CA_FILE, '..');
const CERT_1 = join(TLS_DIR, 'localhost.crt');
const KEY_1 = join(TLS_DIR, 'localhost.key');
const CERT_2 = join(TLS_DIR, 'localhost-2.crt');
const KEY_2 = join(TLS_DIR, 'localhost-2.key');

async function fingerprintOf(file: string): Promise<string> {
  return new X509Certificate(await readFile(file)).fingerprint256;
}

/** curl with the test CA; resolves with stdout (binary) whatever the status. */
async function curl(args: readonly string[]): Promise<Buffer> {
  const { stdout } = await run('curl', ['-sS', '--cacert', TEST_CA_FILE, ...args], {
    encoding: 'buffer',
    maxBuffer: 1 << 30,
  });
  return stdout;
}

/** The certificate a fresh TLS connection to `port` is shown, as its SHA-256 fingerprint. */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

function sha256Nix32(data: Buffer): string {
  return encodeNix32(createHash('sha256').update(data).digest());
}

describe('HTTPS served by niche (HTTP/1.1 and HTTP/2)', { timeout: 120_000 }, () => {
  const sink = new LogSink();
  let t: TestServer;
  let work: TempDir;
  let nar: LargeNar;
  let narFile: string;
  let push: string;

  before(async () => {
    work = await makeTempDir('tls');
    t = await startTestServer({
      flags: { tlsCert: CERT_1, tlsKey: KEY_1 },
      start: { logger: pino({ level: 'info' }, sink) },
    });
    push = await t.token(['main'], ['pull', 'push']);
    nar = await largeNar(work.path, 'tls', 24 << 20);
    narFile = join(work.path, nar.fileName);
    await pipeline(nar.stream(), createWriteStream(narFile));
  });
  after(async () => {
    await t.stop();
    await work.cleanup();
  });

  it('listens on https:// and uploads over HTTP/2 and HTTP/1.1', async () => {
    assert.match(t.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const auth = ['-H', `authorization: ${basicAuth(push)}`];
    const putNar = await curl([
      '--http2',
      ...auth,
      '-T',
      narFile,
      '-w',
      '%{http_code} %{http_version}',
      '-o',
      '/dev/null',
      `${t.url}/main/nar/${nar.fileName}`,
    ]);
    assert.match(putNar.toString(), /^20[01] 2$/);
    const narInfo = join(work.path, 'tls.narinfo');
    await writeFile(narInfo, nar.narInfo());
    const putInfo = await curl([
      '--http1.1',
      ...auth,
      '-T',
      narInfo,
      '-w',
      '%{http_code} %{http_version}',
      '-o',
      '/dev/null',
      `${t.url}/main/${nar.baseName.slice(0, 32)}.narinfo`,
    ]);
    assert.match(putInfo.toString(), /^20[01] 1\.1$/);
  });

  for (const version of ['--http2', '--http1.1'] as const) {
    it(`serves narinfos and NARs intact over ${version.slice(2)}, with ranges and HEAD`, async () => {
      const proto = version === '--http2' ? '2' : '1.1';
      const info = await curl([
        version,
        '-w',
        '\n%{http_version}',
        `${t.url}/main/${nar.baseName.slice(0, 32)}.narinfo`,
      ]);
      assert.match(
        info.toString(),
        new RegExp(`^StorePath: /nix/store/${nar.baseName}\n[\\s\\S]*\n${proto}$`),
      );
      const body = await curl([version, `${t.url}/main/nar/${nar.fileName}`]);
      assert.equal(body.length, nar.size);
      assert.equal(sha256Nix32(body), nar.hash);
      const range = await curl([version, '-r', '1000-1999', `${t.url}/main/nar/${nar.fileName}`]);
      assert.deepEqual(range, body.subarray(1000, 2000));
      const head = (await curl([version, '-I', `${t.url}/main/nar/${nar.fileName}`])).toString();
      assert.match(head, new RegExp(`^HTTP/${proto.replace('.', '\\.')} 200`));
      assert.match(head, new RegExp(`content-length: ${nar.size}`, 'i'));
      // The read path's answers and fastify's, each with a request id.
      assert.match(head, /x-request-id: [0-9a-f]{12}-/i);
      const miss = (await curl([version, '-i', `${t.url}/main/${'0'.repeat(32)}.narinfo`])).toString();
      assert.match(miss, new RegExp(`^HTTP/${proto.replace('.', '\\.')} 404`));
      assert.match(miss, /cache-control: no-store/i);
      assert.match(miss, /x-request-id: [0-9a-f]{12}-/i);
      assert.match(miss, /error NOT_FOUND: 0{32} is not in cache main\n$/);
      const api = await curl([version, '-w', ' %{http_code}', `${t.url}/api/v1/caches/main`]);
      assert.match(api.toString(), /"url":"https:\/\/127\.0\.0\.1:\d+\/main".* 200$/);
    });
  }

  it('logs HTTP/2 requests', async () => {
    const lines = await waitFor(
      () => {
        const found = sink
          .matching(/"msg":"request"/)
          .map(
            (line) => JSON.parse(line) as { proto: string; kind: string; status: number; bytesOut?: number },
          )
          .filter((line) => line.proto === '2.0' && line.kind === 'nar' && line.status === 200);
        return found.length > 0 ? found : undefined;
      },
      { what: 'an HTTP/2 NAR line' },
    );
    assert.ok(lines.some((line) => line.bytesOut === nar.size));
  });

  it('offers h2 in ALPN, and refuses TLS 1.1 (which this client speaks to a server that allows it)', async () => {
    const caPem = await readFile(TEST_CA_FILE);
    const alpn = await new Promise<string | false>((resolve, reject) => {
      const socket = tlsConnect(
        { port: t.server.port, host: '127.0.0.1', ca: [caPem], ALPNProtocols: ['h2', 'http/1.1'] },
        () => {
          resolve(socket.alpnProtocol ?? false);
          socket.destroy();
        },
      );
      socket.once('error', reject);
    });
    assert.equal(alpn, 'h2');
    const old = { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const;
    const handshake = (port: number): Promise<string> =>
      new Promise((resolve) => {
        const socket = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...old }, () => {
          resolve(`connected ${socket.getProtocol() ?? ''}`);
          socket.destroy();
        });
        socket.once('error', (error: Error) => {
          resolve(`refused: ${error.message}`);
        });
      });
    const permissive = createTlsServer({
      cert: await readFile(CERT_1),
      key: await readFile(KEY_1),
      ...old,
      minVersion: 'TLSv1',
    });
    permissive.on('secureConnection', (socket) => socket.end());
    await new Promise<void>((resolve) => permissive.listen(0, '127.0.0.1', resolve));
    try {
      const address = permissive.address();
      assert.ok(address !== null && typeof address === 'object');
      assert.equal(await handshake(address.port), 'connected TLSv1.1');
    } finally {
      permissive.close();
    }
    assert.match(await handshake(t.server.port), /^refused: /);
  });

  it('refuses to start with a key that is not the certificate’s', async () => {
    await assert.rejects(startTestServer({ flags: { tlsCert: CERT_1, tlsKey: KEY_2 } }), (error: unknown) => {
      assert.equal((error as { code?: unknown }).code, 'TLS_INVALID');
      assert.match((error as Error).message, /is not the key of the certificate/);
      return true;
    });
  });
});

describe('niche serve: the certificate swapped on SIGHUP during a download', { timeout: 120_000 }, () => {
  let work: TempDir;
  before(async () => {
    work = await makeTempDir('tls-sighup');
  });
  after(async () => {
    await work.cleanup();
  });

  it('completes the download intact, shows new connections the new certificate, and keeps it over a bad one', async () => {
    const certFile = join(work.path, 'cert.pem');
    const keyFile = join(work.path, 'key.pem');
    await copyFile(CERT_1, certFile);
    await copyFile(KEY_1, keyFile);
    const nar = await largeNar(work.path, 'sighup', 64 << 20);
    const narFile = join(work.path, nar.fileName);
    await pipeline(nar.stream(), createWriteStream(narFile));
    const server = await spawnServe({
      dataDir: join(work.path, 'data'),
      logLevel: 'info',
      args: ['--tls-cert', certFile, '--tls-key', keyFile, '--access-log', 'off'],
    });
    try {
      await server.waitForStderr(/niche: serving https:\/\/127\.0\.0\.1:/);
      const url = `https://127.0.0.1:${server.port}`;
      const token = await (async () => {
        const { stdout } = await run(
          process.execPath,
          [
            '--import',
            'tsx',
            'src/cli/main.ts',
            'token',
            'create',
            '--cache',
            'main',
            '--push',
            '--data',
            server.dataDir,
          ],
          { cwd: join(TLS_DIR, '..', '..', '..') },
        );
        return stdout.trim();
      })();
      const auth = ['-H', `authorization: ${basicAuth(token)}`];
      await curl([...auth, '-f', '-T', narFile, `${url}/main/nar/${nar.fileName}`]);
      const narInfo = join(work.path, 'sighup.narinfo');
      await writeFile(narInfo, nar.narInfo());
      await curl([...auth, '-f', '-T', narInfo, `${url}/main/${nar.baseName.slice(0, 32)}.narinfo`]);
      const first = await fingerprintOf(CERT_1);
      const second = await fingerprintOf(CERT_2);
      assert.equal(await servedFingerprint(server.port), first);

      // An HTTP/2 download, paused after its first chunk (the server is then held by flow control).
      const session = http2Connect(url, { ca: await readFile(TEST_CA_FILE) });
      const stream = session.request({ ':path': `/main/nar/${nar.fileName}` });
      const hasher = createHash('sha256');
      let received = 0;
      let resolveFirst = (): void => undefined;
      const firstChunk = new Promise<void>((resolve) => (resolveFirst = resolve));
      stream.on('data', (chunk: Buffer) => {
        hasher.update(chunk);
        received += chunk.length;
        if (received === chunk.length) {
          stream.pause();
          resolveFirst();
        }
      });
      const done = new Promise<number>((resolve, reject) => {
        stream.on('response', (headers) => {
          assert.equal(headers[':status'], 200);
        });
        stream.once('end', () => {
          resolve(received);
        });
        stream.once('error', reject);
      });
      await firstChunk;

      await copyFile(CERT_2, certFile);
      await copyFile(KEY_2, keyFile);
      server.child.kill('SIGHUP');
      await waitFor(() => server.stdout().includes('TLS certificate reloaded'), { what: 'the reload line' });
      assert.equal(await servedFingerprint(server.port), second, 'a new connection gets the new certificate');
      assert.ok(received < nar.size, 'the download was still in progress');

      stream.resume();
      assert.equal(await done, nar.size);
      assert.equal(encodeNix32(hasher.digest()), nar.hash, 'the NAR arrived intact');
      session.close();

      // A broken pair is refused; the one in use stays.
      await writeFile(certFile, 'not a certificate\n');
      server.child.kill('SIGHUP');
      await waitFor(() => server.stdout().includes('TLS certificate not reloaded'), {
        what: 'the refusal line',
      });
      assert.equal(await servedFingerprint(server.port), second);
      const bundle = join(work.path, 'both.pem');
      await writeFile(bundle, Buffer.concat([await readFile(CERT_1), await readFile(CERT_2)]));
      const answer = await curl([
        '--cacert',
        bundle,
        '--http2',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `${url}/main/nix-cache-info`,
      ]);
      assert.equal(answer.toString(), '200');
      assert.equal(server.child.exitCode, null, 'still running');
    } finally {
      server.child.kill('SIGTERM');
      await server.exitWithin(30_000).catch(() => server.stop());
    }
  });
});

describe('listening on a Unix socket', { timeout: 60_000 }, () => {
  let work: TempDir;
  before(async () => {
    work = await makeTempDir('unix-socket');
  });
  after(async () => {
    await work.cleanup();
  });

  it('removes a stale socket file, serves curl --unix-socket with mode 0660, and removes it at close', async () => {
    const socketPath = join(work.path, 'http.sock');
    // A socket file left by a process killed while listening.
    const stale = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await new Promise((resolve) => stale.once('exit', resolve));
    assert.ok((await stat(socketPath)).isSocket(), 'a stale socket is there');

    const t = await startTestServer({ flags: { listen: `unix:${socketPath}` } });
    try {
      assert.equal(t.url, 'http://localhost');
      assert.equal((await stat(socketPath)).mode & 0o777, 0o660);
      const answer = await curl([
        '--unix-socket',
        socketPath,
        '-w',
        ' %{http_code}',
        'http://localhost/main/nix-cache-info',
      ]);
      assert.match(answer.toString(), /^StoreDir: \/nix\/store\n[\s\S]* 200$/);
      // A second server on the same, live, socket is refused; the first keeps serving.
      await assert.rejects(startTestServer({ flags: { listen: `unix:${socketPath}` } }), (error: unknown) => {
        assert.equal((error as { code?: unknown }).code, 'LISTEN_FAILED');
        assert.match((error as Error).message, /unix:.*already in use/);
        return true;
      });
    } finally {
      await t.stop();
    }
    await assert.rejects(stat(socketPath), { code: 'ENOENT' });
    // A file that is not a socket is never removed.
    await writeFile(socketPath, 'data');
    await assert.rejects(startTestServer({ flags: { listen: `unix:${socketPath}` } }), /not a socket/);
    assert.equal(await readFile(socketPath, 'utf8'), 'data');
  });
});
