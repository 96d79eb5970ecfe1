// The embedded SSH server's own rules, with ssh2's client: public keys only, registered keys only, no
// forwarding, sessions bounded per key, and a host key made once and kept.
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import ssh2 from 'ssh2';
import type { ClientChannel, ConnectConfig } from 'ssh2';
import { registerSshKey } from '../../src/cache/admin-service.js';
import { Authenticator } from '../../src/cache/auth.js';
import { createCacheWithKey } from '../../src/cache/admin-service.js';
import { encodeU64 } from '../../src/nix/wire.js';
import { startSshServer, type RunningSshServer } from '../../src/ssh/ssh-server.js';
import { WORKER_MAGIC_1, WORKER_MAGIC_2 } from '../../src/ssh/worker-protocol.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const { Client, utils } = ssh2;
const quiet = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

let t: TestServer;
let ssh: RunningSshServer;
const alice = utils.generateKeyPairSync('ed25519');
const stranger = utils.generateKeyPairSync('ed25519');

function connect(config: Partial<ConnectConfig>): Promise<InstanceType<typeof Client>> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    client.on('ready', () => {
      resolve(client);
    });
    client.on('error', reject);
    client.connect({ host: '127.0.0.1', port: ssh.port, username: 'team', readyTimeout: 10_000, ...config });
  });
}

function exec(client: InstanceType<typeof Client>, command: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    client.exec(command, (error, channel) => {
      if (error) reject(error);
      else resolve(channel);
    });
  });
}

/** Everything the channel writes to stderr and its exit code. */
function finish(channel: ClientChannel): Promise<{ code: number | undefined; stderr: string }> {
  return new Promise((resolve) => {
    let stderr = '';
    let code: number | undefined;
    channel.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    channel.on('exit', (exitCode: number) => (code = exitCode));
    channel.on('data', () => undefined);
    channel.on('close', () => {
      resolve({ code, stderr });
    });
  });
}

before(async () => {
  t = await startTestServer();
  await createCacheWithKey(t.server.stores.db, { name: 'team', isPublic: false, priority: 40 });
  await registerSshKey(
    t.server.stores.db,
    {
      publicKey: alice.public,
      scopes: [{ cachePattern: 'team', permissions: ['pull', 'push'] }],
      expiresAt: undefined,
    },
    new Date(),
  );
  ssh = await startSshServer({
    service: t.server.service,
    authenticator: new Authenticator(t.server.stores.db),
    hostKeyFile: join(t.dataDir, 'ssh_host_ed25519_key'),
    host: '127.0.0.1',
    port: 0,
    maxSessionsPerKey: 1,
    log: quiet,
  });
});
after(async () => {
  await ssh.close();
  await t.stop();
});

describe('embedded SSH server', () => {
  it('takes registered public keys only', async () => {
    await assert.rejects(connect({ password: 'secret' }), /authentication methods failed/);
    await assert.rejects(connect({ privateKey: stranger.private }), /authentication methods failed/);
    const client = await connect({ privateKey: alice.private });
    client.end();
  });

  it('refuses port forwarding and shells', async () => {
    const client = await connect({ privateKey: alice.private });
    try {
      await assert.rejects(
        new Promise((resolve, reject) => {
          client.forwardOut('127.0.0.1', 1, '127.0.0.1', t.server.port, (error, stream) => {
            if (error) reject(error);
            else resolve(stream);
          });
        }),
      );
      await assert.rejects(
        new Promise((resolve, reject) => {
          client.shell((error, stream) => {
            if (error) reject(error);
            else resolve(stream);
          });
        }),
      );
    } finally {
      client.end();
    }
  });

  it('speaks the worker protocol on exec, and bounds the sessions of one key', async () => {
    const first = await connect({ privateKey: alice.private });
    const second = await connect({ privateKey: alice.private });
    try {
      const open = await exec(first, 'nix-daemon --stdio');
      open.write(encodeU64(WORKER_MAGIC_1));
      const reply = await new Promise<Buffer>((resolve) => open.once('data', resolve));
      assert.equal(reply.readUInt32LE(0), WORKER_MAGIC_2);
      // The first session is open: the key's limit (1) refuses the next one, with the reason.
      const refused = await finish(await exec(second, 'nix-daemon --stdio'));
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /this key has 1 SSH sessions open already/);
      open.end();
    } finally {
      first.end();
      second.end();
    }
  });

  it('keeps its host key, private to the server', async () => {
    const file = join(t.dataDir, 'ssh_host_ed25519_key');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const again = await startSshServer({
      service: t.server.service,
      authenticator: new Authenticator(t.server.stores.db),
      hostKeyFile: file,
      host: '127.0.0.1',
      port: 0,
      log: quiet,
    });
    try {
      assert.equal(again.hostKey, ssh.hostKey);
      assert.match(ssh.hostKey, /^ssh-ed25519 AAAA/);
      assert.equal(
        again.knownHostsLine('cache.example.org'),
        `[cache.example.org]:${again.port} ${ssh.hostKey}`,
      );
    } finally {
      await again.close();
    }
  });
});
