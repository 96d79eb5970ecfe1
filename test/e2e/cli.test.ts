// The `niche` command as an operator meets it, run as a real process: what the first start prints, that
// `token create` prints the token and nothing else, that start-up problems are named and exit with 78,
// that a key file made by Nix becomes the cache's key, and that SIGTERM lets in-flight transfers finish.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Agent, request, type IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cacheInfoSchema, type CacheInfo } from '../../src/api/v1.js';
import { narInfoFingerprint, parseNarInfo } from '../../src/nix/narinfo.js';
import { encodeNix32 } from '../../src/nix/nix32.js';
import { PublicKey } from '../../src/nix/signing.js';
import { freePort, runCli, startServe, type CliResult, type ServeProcess } from '../helpers/cli-process.js';
import { largeNar, streamingPut } from '../helpers/large-nar.js';
import { fakeBaseName, fixture, narInfoText } from '../helpers/nar-fixtures.js';
import { nixTestOptions } from '../helpers/nix.js';
import { createTempDatabase, postgresTestOptions } from '../helpers/postgres.js';
import { generateNixKey, nixClient } from '../helpers/nix-closure.js';
import { basicAuth } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const EX_CONFIG = 78;
const postgres = await postgresTestOptions();
const MIB = 1 << 20;

let work: TempDir;
/** Servers started by a test; whatever is still running at the end is killed. */
const servers: ServeProcess[] = [];

before(async () => {
  work = await makeTempDir('cli');
});
after(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  await work.cleanup();
});

async function serve(dataDir: string, args: readonly string[] = []): Promise<ServeProcess> {
  const server = await startServe({ dataDir, args });
  servers.push(server);
  return server;
}

async function cacheInfo(server: ServeProcess): Promise<CacheInfo> {
  const response = await fetch(`${server.url}/api/v1/caches/main`);
  assert.equal(response.status, 200);
  return cacheInfoSchema.parse(await response.json());
}

/** Whether `token` may push: PUT nix-cache-info needs push permission and changes nothing. */
async function pushStatus(server: ServeProcess, token: string): Promise<number> {
  const response = await fetch(`${server.url}/main/nix-cache-info`, {
    method: 'PUT',
    body: 'StoreDir: /nix/store\n',
    headers: { authorization: basicAuth(token) },
  });
  await response.arrayBuffer();
  return response.status;
}

describe('first start and tokens', () => {
  it('prints the nix.conf lines and a token command that prints exactly one token', async () => {
    const dataDir = join(work.path, 'first-start');
    const server = await serve(dataDir);
    await server.waitForStderr(/login niche password <token>/);
    const stderr = server.stderr();
    const { publicKeys } = await cacheInfo(server);
    assert.equal(publicKeys.length, 1);
    const lines = stderr.split('\n').map((line) => line.trim());
    assert.ok(lines.includes(`extra-substituters = ${server.url}/main`), stderr);
    assert.ok(lines.includes(`extra-trusted-public-keys = ${publicKeys.join(' ')}`), stderr);
    assert.ok(lines.includes('machine 127.0.0.1 login niche password <token>'), stderr);
    assert.ok(lines.includes(`nix copy --to ${server.url}/main/push <paths>`), stderr);
    assert.match(stderr, /created cache "main"/);

    // The printed command works as printed.
    const command = lines.find((line) => line.startsWith('niche token create '));
    assert.equal(command, `niche token create --cache main --push --data ${dataDir}`);
    const created = await runCli(command.split(' ').slice(1));
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^\S+\n$/, 'one line: the token');
    const token = created.stdout.trim();
    assert.equal(await pushStatus(server, token), 204);

    // A pull-only token (the default) may not push.
    const pullOnly = await runCli(['token', 'create', '--cache', 'main', '--data', dataDir]);
    assert.equal(pullOnly.code, 0, pullOnly.stderr);
    assert.equal(pullOnly.stdout.split('\n').length, 2);
    assert.equal(await pushStatus(server, pullOnly.stdout.trim()), 403);
  });

  // Replicas share a PostgreSQL database: the printed command must reach it, not make a new SQLite file.
  it(
    'prints a token command for the configuration in use: --config, or the environment',
    postgres,
    async () => {
      assert.ok(postgres.url !== undefined);
      const database = await createTempDatabase(postgres.url);
      try {
        const dataDir = join(work.path, 'with-config');
        const file = join(work.path, 'replica.toml');
        await writeFile(file, `data-dir = "${dataDir}"\n[database]\nurl = "${database.url}"\n`);
        const server = await startServe({ dataDir, dataFlag: false, args: ['--config', file] });
        servers.push(server);
        await server.waitForStderr(/login niche password <token>/);
        const lines = server
          .stderr()
          .split('\n')
          .map((line) => line.trim());
        const command = lines.find((line) => line.startsWith('niche token create '));
        assert.equal(command, `niche token create --cache main --push --config ${file}`, server.stderr());
        const created = await runCli(command.split(' ').slice(1));
        assert.equal(created.code, 0, created.stderr);
        assert.equal(await pushStatus(server, created.stdout.trim()), 204, 'a token the server accepts');
        await server.stop();

        // Configured by the environment alone: the command says which variables it needs (not their values).
        const env = { NICHE_DATABASE_URL: database.url };
        const fromEnv = await startServe({ dataDir: join(work.path, 'env-only'), env });
        servers.push(fromEnv);
        await fromEnv.waitForStderr(/login niche password <token>/);
        const envLines = fromEnv
          .stderr()
          .split('\n')
          .map((line) => line.trim());
        const envCommand = envLines.find((line) => line.startsWith('niche token create '));
        assert.equal(envCommand, 'niche token create --cache main --push');
        assert.ok(envLines.includes('(with NICHE_DATABASE_URL set as for this server)'), fromEnv.stderr());
        assert.doesNotMatch(fromEnv.stderr(), /postgres:\/\//, 'the database URL (a secret) is not printed');
        const viaEnv = await runCli(envCommand.split(' ').slice(1), { env });
        assert.equal(viaEnv.code, 0, viaEnv.stderr);
        assert.equal(await pushStatus(fromEnv, viaEnv.stdout.trim()), 204);
        await fromEnv.stop();
      } finally {
        await database.drop();
      }
    },
  );

  it('prints only the token on stdout even when it warns', async () => {
    const created = await runCli([
      'token',
      'create',
      '--cache',
      'main',
      '--push',
      '--data',
      join(work.path, 'none'),
    ]);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^\S+\n$/);
    assert.match(created.stderr, /no cache named main/);
  });
});

describe('start-up errors', () => {
  let blocker: Server;
  let takenPort: number;

  before(async () => {
    takenPort = await freePort();
    blocker = createServer();
    await new Promise<void>((resolve, reject) => {
      blocker.once('error', reject);
      blocker.listen(takenPort, '127.0.0.1', resolve);
    });
  });
  after(async () => {
    await new Promise<void>((resolve) => {
      blocker.close(() => {
        resolve();
      });
    });
  });

  /** Runs `serve`, which must exit with 78 and say each of `messages` on stderr. */
  async function failsToStart(args: readonly string[], ...messages: string[]): Promise<CliResult> {
    const result = await runCli(['serve', '--log-level', 'silent', ...args]);
    assert.equal(result.code, EX_CONFIG, `exit code; stderr: ${result.stderr}`);
    for (const message of messages) assert.ok(result.stderr.includes(message), result.stderr);
    return result;
  }

  it('names a port that is already taken', async () => {
    await failsToStart(
      ['--data', join(work.path, 'port-taken'), '--listen', `127.0.0.1:${takenPort}`],
      `cannot listen on 127.0.0.1:${takenPort}: the address is already in use`,
    );
  });

  it('names a data directory that cannot be created', async () => {
    const file = join(work.path, 'a-regular-file');
    await writeFile(file, 'not a directory\n');
    const dataDir = join(file, 'data');
    await failsToStart(['--data', dataDir, '--listen', '127.0.0.1:0'], dataDir, 'DATA_DIR_UNUSABLE');
  });

  it('names a signing key file that is not a key, without echoing it', async () => {
    const secret = randomBytes(40).toString('base64');
    for (const [label, contents, reason] of [
      ['garbage', 'this is not a key\n', 'expected <key name>:<base64>'],
      ['truncated', `broken-1:${secret}\n`, 'has 40 bytes, expected 64'],
    ] as const) {
      const keyFile = join(work.path, `${label}.key`);
      await writeFile(keyFile, contents);
      const result = await failsToStart(
        ['--data', join(work.path, `${label}-key`), '--listen', '127.0.0.1:0', '--signing-key-file', keyFile],
        `signing key file ${keyFile} is not a Nix secret key`,
        reason,
        'KEY_FILE_INVALID',
      );
      assert.ok(!result.stderr.includes(secret), 'the key material is not printed');
    }
  });

  it('names a signing key file that does not exist', async () => {
    const keyFile = join(work.path, 'missing.key');
    await failsToStart(
      ['--data', join(work.path, 'missing-key'), '--listen', '127.0.0.1:0', '--signing-key-file', keyFile],
      `cannot read signing key file ${keyFile}`,
      'KEY_FILE_INVALID',
    );
  });
});

describe('--signing-key-file', nixTestOptions(), () => {
  it('signs with a key made by nix-store --generate-binary-cache-key', async () => {
    const client = await nixClient();
    try {
      const key = await generateNixKey(client, 'niche-cli-test-1');
      const dataDir = join(work.path, 'nix-key');
      const server = await serve(dataDir, ['--signing-key-file', key.secretFile]);
      const { publicKeys } = await cacheInfo(server);
      assert.ok(publicKeys.includes(key.publicKey), `${key.publicKey} in ${publicKeys.join(' ')}`);

      // And what it publishes carries a signature that key verifies.
      const created = await runCli(['token', 'create', '--cache', 'main', '--push', '--data', dataDir]);
      const auth = { authorization: basicAuth(created.stdout.trim()) };
      const fx = await fixture('signed with a key from nix\n');
      const base = fakeBaseName('cli-signed');
      const nar = await fetch(`${server.url}/main/nar/${fx.fileName}`, {
        method: 'PUT',
        body: fx.file,
        headers: auth,
      });
      assert.equal(nar.status, 201, await nar.text());
      const put = await fetch(`${server.url}/main/${base.slice(0, 32)}.narinfo`, {
        method: 'PUT',
        body: narInfoText(base, fx),
        headers: auth,
      });
      assert.equal(put.status, 201, await put.text());
      const info = parseNarInfo(
        await (await fetch(`${server.url}/main/${base.slice(0, 32)}.narinfo`)).text(),
      );
      const publicKey = PublicKey.parse(key.publicKey);
      const signature = info.signatures.find((sig) => sig.startsWith('niche-cli-test-1:'));
      assert.ok(signature !== undefined, info.signatures.join(' '));
      assert.ok(publicKey.verify(narInfoFingerprint(info), signature));
    } finally {
      await client.cleanup();
    }
  });
});

describe('graceful shutdown', () => {
  /** A server with a token, and the first NAR upload (to download later) done. */
  async function shutdownFixture(label: string): Promise<{
    server: ServeProcess;
    headers: Record<string, string>;
  }> {
    const dataDir = join(work.path, label);
    const server = await serve(dataDir);
    const created = await runCli(['token', 'create', '--cache', 'main', '--push', '--data', dataDir]);
    assert.equal(created.code, 0, created.stderr);
    return { server, headers: { authorization: basicAuth(created.stdout.trim()) } };
  }

  /** SIGTERM, then waits until the server says so and turns new requests away. */
  async function terminate(server: ServeProcess): Promise<void> {
    server.child.kill('SIGTERM');
    await server.waitForStderr(/shutting down/);
    await waitFor(
      async () => {
        try {
          const refused = await fetch(`${server.url}/main/nix-cache-info`);
          await refused.arrayBuffer();
          return refused.status === 503;
        } catch {
          return true; // connection refused: no longer listening
        }
      },
      { what: 'the server to stop taking new requests' },
    );
  }

  it('lets an in-flight download and upload finish after SIGTERM, then exits 0', async () => {
    const { server, headers } = await shutdownFixture('shutdown');
    // Clients that close their connections after each request, so only in-flight requests keep the
    // server up (kept-alive connections: next test).
    const agent = new Agent({ keepAlive: false });
    try {
      // A NAR to download, large enough not to fit in the socket buffers.
      const downloaded = await largeNar(work.path, 'shutdown-download', 48 * MIB);
      const first = await streamingPut(`${server.url}/main/nar/${downloaded.fileName}`, {
        body: downloaded.stream(),
        contentLength: downloaded.size,
        headers,
        agent,
      }).response;
      assert.equal(first.status, 201, first.body);

      // The download starts and is not read: the server is stuck writing it. (The NAR has no narinfo:
      // only a token that may push sees it.)
      const response = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = request(`${server.url}/main/nar/${downloaded.fileName}`, { agent, headers });
        req.once('error', reject);
        req.once('response', (res) => {
          res.pause();
          resolve(res);
        });
        req.end();
      });
      assert.equal(response.statusCode, 200);

      // The upload sends part of its body and stalls.
      const uploaded = await largeNar(work.path, 'shutdown-upload', 16 * MIB);
      const upload = streamingPut(`${server.url}/main/nar/${uploaded.fileName}`, {
        body: uploaded.stream(),
        contentLength: uploaded.size,
        headers,
        agent,
        stallAfter: 4 * MIB,
      });
      upload.response.catch(() => undefined);
      await waitFor(() => upload.sent() >= 4 * MIB, { what: 'the upload to send 4 MiB' });

      assert.equal(response.complete, false, 'the download is still in flight');
      await terminate(server);

      upload.resume();
      const hasher = createHash('sha256');
      let received = 0;
      response.on('data', (chunk: Buffer) => {
        hasher.update(chunk);
        received += chunk.length;
      });
      const ended = new Promise<void>((resolve, reject) => {
        response.once('end', resolve);
        response.once('error', reject);
        response.once('aborted', () => {
          reject(new Error('the download was cut off'));
        });
      });
      response.resume();
      await ended;
      assert.equal(received, downloaded.size);
      assert.equal(encodeNix32(hasher.digest()), downloaded.hash);
      const finished = await upload.response;
      assert.equal(finished.status, 201, finished.body);

      assert.deepEqual(await server.exitWithin(10_000), { code: 0, signal: null }, server.stderr());
    } finally {
      agent.destroy();
    }
  });

  // Nix (curl) keeps connections open between requests. A request that finishes during shutdown must
  // not leave its connection holding the server up until the client or the keep-alive timeout closes it.
  it('does not wait for kept-alive connections once their request is done', async () => {
    const { server, headers } = await shutdownFixture('shutdown-keepalive');
    const agent = new Agent({ keepAlive: true, timeout: 120_000 });
    try {
      const uploaded = await largeNar(work.path, 'shutdown-keepalive', 2 * MIB);
      const upload = streamingPut(`${server.url}/main/nar/${uploaded.fileName}`, {
        body: uploaded.stream(),
        contentLength: uploaded.size,
        headers,
        agent,
        stallAfter: MIB,
      });
      upload.response.catch(() => undefined);
      await waitFor(() => upload.sent() >= MIB, { what: 'the upload to send 1 MiB' });
      await terminate(server);
      upload.resume();
      const finished = await upload.response;
      assert.equal(finished.status, 201, finished.body);
      assert.deepEqual(await server.exitWithin(10_000), { code: 0, signal: null }, server.stderr());
    } finally {
      agent.destroy();
    }
  });
});
