// The embedded SSH server's own rules, with ssh2's client: public keys only, registered keys only, with
// their signatures checked; no forwarding, shell, pty, subsystem or agent; the two protocols on exec and
// nothing else; sessions bounded per key and in total, channels per connection; connections bounded before
// authentication (in time and number) and after it (without a session); a host key made once and kept.
import assert from 'node:assert/strict';
import { connect as connectTcp, type Socket } from 'node:net';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import ssh2 from 'ssh2';
import type {
  AnyAuthMethod,
  ClientChannel,
  ConnectConfig,
  ExecOptions,
  IdentityCallback,
  ParsedKey,
  SignCallback,
  SigningRequestOptions,
} from 'ssh2';
import { registerSshKey, createCacheWithKey } from '../../src/cache/admin-service.js';
import { Authenticator } from '../../src/cache/auth.js';
import { encodeU64 } from '../../src/nix/wire.js';
import { SERVE_MAGIC_1, SERVE_MAGIC_2 } from '../../src/ssh/serve-protocol.js';
import {
  generateEd25519KeyPair,
  startSshServer,
  type RunningSshServer,
  type SshServerOptions,
} from '../../src/ssh/ssh-server.js';
import { WORKER_MAGIC_1, WORKER_MAGIC_2 } from '../../src/ssh/worker-protocol.js';
import { freePort, runCli, startServe } from '../helpers/cli-process.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const { BaseAgent, Client, utils } = ssh2;
type SshClient = InstanceType<typeof Client>;
const quiet = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

let t: TestServer;
let ssh: RunningSshServer;
const alice = generateEd25519KeyPair();
const bob = generateEd25519KeyPair();
const stranger = generateEd25519KeyPair();

function parsed(text: string): ParsedKey {
  const key = utils.parseKey(text);
  assert.ok(!(key instanceof Error) && !Array.isArray(key));
  return key;
}

/** An SSH agent that offers one public key and signs with whichever private key it was given. */
class TestAgent extends BaseAgent<ParsedKey> {
  readonly #offered: ParsedKey;
  readonly #signer: ParsedKey;
  /** Offered before that key, each signing for itself. */
  readonly #before: { key: ParsedKey; signer: ParsedKey }[];
  constructor(offered: string, signer: string, before: { public: string; private: string }[] = []) {
    super();
    this.#offered = parsed(offered);
    this.#signer = parsed(signer);
    this.#before = before.map((pair) => ({ key: parsed(pair.public), signer: parsed(pair.private) }));
  }
  getIdentities(cb: IdentityCallback<ParsedKey>): void {
    cb(null, [...this.#before.map(({ key }) => key), this.#offered]);
  }
  sign(key: ParsedKey, data: Buffer, options: SigningRequestOptions | SignCallback, cb?: SignCallback): void {
    const done = typeof options === 'function' ? options : cb;
    const other = this.#before.find((pair) => pair.key.getPublicSSH().equals(key.getPublicSSH()));
    const signature = (other?.signer ?? this.#signer).sign(data);
    if (signature instanceof Error) done?.(signature);
    else done?.(null, signature);
  }
}

function connect(config: Partial<ConnectConfig>, port = ssh.port): Promise<SshClient> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    client.on('ready', () => {
      resolve(client);
    });
    client.on('error', reject);
    client.on('close', () => {
      reject(new Error('the server closed the connection before authentication'));
    });
    client.connect({ host: '127.0.0.1', port, username: 'team', readyTimeout: 10_000, ...config });
  });
}

function exec(client: SshClient, command: string, options: ExecOptions = {}): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    client.exec(command, options, (error, channel) => {
      if (error) reject(error);
      else resolve(channel);
    });
  });
}

/** Resolves with what a callback-style request of the client gave, rejects with its error. */
function request<T>(
  start: (callback: (error: Error | null | undefined, value?: T) => void) => void,
): Promise<T> {
  return new Promise((resolve, reject) => {
    start((error, value) => {
      if (error) reject(error);
      else resolve(value as T);
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

/** Resolves when the client's connection closes. */
function closed(client: SshClient): Promise<void> {
  return new Promise((resolve) =>
    client.once('close', () => {
      resolve();
    }),
  );
}

/** A raw TCP connection to the server; `ended` resolves when the server hangs up. */
async function tcp(port: number): Promise<{ socket: Socket; ended: Promise<void> }> {
  const socket = connectTcp(port, '127.0.0.1');
  socket.on('data', () => undefined);
  socket.on('error', () => undefined);
  const ended = new Promise<void>((resolve) =>
    socket.once('close', () => {
      resolve();
    }),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, ended };
}

/** A second server on the same service, with its own limits, closed after `use`. */
async function withServer(
  limits: Partial<SshServerOptions>,
  use: (server: RunningSshServer) => Promise<void> | void,
): Promise<void> {
  const server = await startSshServer({
    service: t.server.service,
    authenticator: new Authenticator(t.server.stores.db),
    hostKeyFile: join(t.dataDir, 'ssh_host_ed25519_key'),
    host: '127.0.0.1',
    port: 0,
    log: quiet,
    ...limits,
  });
  try {
    await use(server);
  } finally {
    await server.close();
  }
}

const within = <T>(ms: number, promise: Promise<T>, what: string): Promise<T> =>
  Promise.race([
    promise,
    new Promise<never>((_resolve, reject) =>
      setTimeout(() => {
        reject(new Error(`${what}: not within ${ms} ms`));
      }, ms).unref(),
    ),
  ]);

before(async () => {
  t = await startTestServer();
  await createCacheWithKey(t.server.stores.db, { name: 'team', isPublic: false, priority: 40 });
  for (const key of [alice, bob]) {
    await registerSshKey(
      t.server.stores.db,
      {
        publicKey: key.public,
        scopes: [{ cachePattern: 'team', permissions: ['pull', 'push'] }],
        expiresAt: undefined,
      },
      new Date(),
    );
  }
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

describe('embedded SSH server: authentication', () => {
  it('takes registered public keys only', async () => {
    await assert.rejects(connect({ password: 'secret' }), /authentication methods failed/);
    await assert.rejects(connect({ privateKey: stranger.private }), /authentication methods failed/);
    const client = await connect({ privateKey: alice.private });
    client.end();
  });

  it('refuses none, password, keyboard-interactive and hostbased, even with a registered key', async () => {
    const methods: AnyAuthMethod[][] = [
      [{ type: 'none', username: 'team' }],
      [{ type: 'password', username: 'team', password: 'secret' }],
      [
        {
          type: 'keyboard-interactive',
          username: 'team',
          prompt: (_name, _instructions, _lang, prompts, finishPrompts) => {
            finishPrompts(prompts.map(() => 'secret'));
          },
        },
      ],
      [
        {
          type: 'hostbased',
          username: 'team',
          localHostname: 'laptop',
          localUsername: 'alice',
          key: alice.private,
        },
      ],
    ];
    for (const authHandler of methods) {
      await assert.rejects(connect({ authHandler }), /authentication methods failed/);
    }
  });

  it('does not compress, and takes clients that would (they offer none too, as ssh -C does)', async () => {
    for (const compress of [['zlib'], ['zlib@openssh.com']] as const) {
      await assert.rejects(
        connect({ privateKey: alice.private, algorithms: { compress: [...compress] } }),
        /no matching C->S compression/i,
      );
    }
    const client = await connect({
      privateKey: alice.private,
      algorithms: { compress: ['zlib@openssh.com', 'zlib', 'none'] },
    });
    try {
      const channel = await exec(client, 'nix-store --serve');
      channel.write(Buffer.concat([encodeU64(SERVE_MAGIC_1), encodeU64(0x207)]));
      const reply = await new Promise<Buffer>((resolve) => channel.once('data', resolve));
      assert.equal(reply.readUInt32LE(0), SERVE_MAGIC_2);
      const done = finish(channel);
      channel.end();
      assert.equal((await done).code, 0);
    } finally {
      client.end();
    }
  });

  it('checks the signature: a registered key signed by another key is refused', async () => {
    // The same agent, signing honestly, gets in: what is refused below is the forged signature only.
    const honest = await connect({ agent: new TestAgent(alice.public, alice.private) });
    honest.end();
    await assert.rejects(
      connect({ agent: new TestAgent(alice.public, stranger.private) }),
      /authentication methods failed/,
    );
  });
  it('counts refused keys: nine unregistered ones before a registered one do, ten do not', async () => {
    const unknown = Array.from({ length: 10 }, () => generateEd25519KeyPair());
    const client = await connect({ agent: new TestAgent(alice.public, alice.private, unknown.slice(0, 9)) });
    client.end();
    await assert.rejects(
      connect({ agent: new TestAgent(alice.public, alice.private, unknown) }),
      /closed the connection before authentication/,
    );
  });
});

describe('embedded SSH server: sessions', () => {
  it('refuses port forwarding both ways, over TCP and Unix sockets, and shells', async () => {
    const client = await connect({ privateKey: alice.private });
    try {
      await assert.rejects(
        request((cb) => client.forwardOut('127.0.0.1', 1, '127.0.0.1', t.server.port, cb)),
      );
      await assert.rejects(request((cb) => client.forwardIn('127.0.0.1', 0, cb)));
      await assert.rejects(request((cb) => client.openssh_forwardOutStreamLocal('/run/nscd/socket', cb)));
      await assert.rejects(
        request((cb) => client.openssh_forwardInStreamLocal(join(t.dataDir, 'forwarded.sock'), cb)),
      );
      await assert.rejects(request((cb) => client.shell(cb)));
    } finally {
      client.end();
    }
  });

  it('refuses a pty, X11 and agent forwarding, sftp and other subsystems', async () => {
    const client = await connect({ agent: new TestAgent(alice.public, alice.private) });
    try {
      await assert.rejects(exec(client, 'nix-daemon --stdio', { pty: true }));
      await assert.rejects(exec(client, 'nix-daemon --stdio', { x11: true }));
      // ssh2 reads agentForward from exec's options; its types do not list it.
      const agentForward: ExecOptions & { agentForward: boolean } = { agentForward: true };
      await assert.rejects(exec(client, 'nix-daemon --stdio', agentForward));
      await assert.rejects(request((cb) => client.sftp(cb)));
      await assert.rejects(request((cb) => client.subsys('nix-daemon', cb)));
      // The connection still serves what it may.
      const refused = await finish(await exec(client, 'ls /'));
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /niche serves Nix caches only/);
    } finally {
      client.end();
    }
  });

  it('speaks the serve protocol on exec of nix-store --serve', async () => {
    const client = await connect({ privateKey: alice.private });
    try {
      const channel = await exec(client, 'nix-store --serve --write');
      channel.write(Buffer.concat([encodeU64(SERVE_MAGIC_1), encodeU64(0x207)]));
      const reply = await new Promise<Buffer>((resolve) => channel.once('data', resolve));
      assert.equal(reply.readUInt32LE(0), SERVE_MAGIC_2);
      const done = finish(channel);
      channel.end();
      assert.equal((await done).code, 0);
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

  it('frees the session of a client that vanished mid-session, and lives on', async () => {
    // The main server allows alice one session: the next one gets in only once the first is let go.
    const gone = await connect({ privateKey: alice.private });
    const open = await exec(gone, 'nix-daemon --stdio');
    open.write(encodeU64(WORKER_MAGIC_1));
    await new Promise((resolve) => open.once('data', resolve));
    gone.destroy();
    const deadline = Date.now() + 5_000;
    for (;;) {
      const client = await connect({ privateKey: alice.private });
      try {
        const channel = await exec(client, 'nix-daemon --stdio');
        const first = await new Promise<Buffer | undefined>((resolve) => {
          channel.once('data', resolve);
          channel.once('close', () => {
            resolve(undefined);
          });
          channel.write(encodeU64(WORKER_MAGIC_1));
        });
        if (first !== undefined) {
          assert.equal(first.readUInt32LE(0), WORKER_MAGIC_2);
          break;
        }
        assert.ok(Date.now() < deadline, 'the vanished session still holds its slot');
        await new Promise((resolve) => setTimeout(resolve, 100));
      } finally {
        client.end();
      }
    }
  });

  it('bounds the sessions of all keys together', async () => {
    await withServer({ maxSessions: 1 }, async (server) => {
      const first = await connect({ privateKey: alice.private }, server.port);
      const second = await connect({ privateKey: bob.private }, server.port);
      try {
        const open = await exec(first, 'nix-daemon --stdio');
        open.write(encodeU64(WORKER_MAGIC_1));
        await new Promise((resolve) => open.once('data', resolve));
        const refused = await finish(await exec(second, 'nix-daemon --stdio'));
        assert.equal(refused.code, 1);
        assert.match(refused.stderr, /the server has 1 SSH sessions open already/);
        const done = finish(open);
        open.end();
        await done;
        // The slot is free again.
        const next = await exec(second, 'nix-daemon --stdio');
        next.write(encodeU64(WORKER_MAGIC_1));
        assert.equal(
          (await new Promise<Buffer>((resolve) => next.once('data', resolve))).readUInt32LE(0),
          WORKER_MAGIC_2,
        );
        next.end();
      } finally {
        first.end();
        second.end();
      }
    });
  });

  it('bounds the channels open at once on a connection, not the commands run over its life', async () => {
    await withServer({}, async (server) => {
      const client = await connect({ privateKey: bob.private }, server.port);
      try {
        // One after another, as through an OpenSSH ControlMaster: more commands than the bound all run.
        for (let i = 0; i < 6; i++) {
          const refused = await finish(await exec(client, 'ls /'));
          assert.match(refused.stderr, /niche serves Nix caches only/, `command ${i + 1}`);
        }
        // Four open at once; a fifth is refused while they are.
        const open = await Promise.all([1, 2, 3, 4].map(() => exec(client, 'nix-store --serve')));
        await assert.rejects(exec(client, 'nix-store --serve'));
        const done = finish(open[0] as ClientChannel);
        open[0]?.end();
        await done;
        const fifth = await exec(client, 'nix-store --serve');
        for (const channel of [...open.slice(1), fifth]) channel.end();
      } finally {
        client.end();
      }
    });
  });
});

describe('embedded SSH server: connections', () => {
  it('cuts a connection that does not authenticate in time, whether or not it spoke', async () => {
    await withServer({ authTimeoutMs: 300 }, async (server) => {
      const silent = await tcp(server.port);
      const spoke = await tcp(server.port);
      spoke.socket.write('SSH-2.0-OpenSSH_9.2\r\n');
      await within(5_000, Promise.all([silent.ended, spoke.ended]), 'unauthenticated connections cut');
      // An authenticated one stays past that time.
      const client = await connect({ privateKey: alice.private }, server.port);
      const gone = closed(client);
      const outcome = await Promise.race([
        gone.then(() => 'closed'),
        new Promise((resolve) =>
          setTimeout(() => {
            resolve('open');
          }, 800),
        ),
      ]);
      assert.equal(outcome, 'open');
      client.end();
      await gone;
    });
  });

  it('drops connections beyond the number waiting to authenticate, and takes new ones once they go', async () => {
    await withServer({ maxUnauthenticated: 2 }, async (server) => {
      const waiting = [await tcp(server.port), await tcp(server.port)];
      const third = await tcp(server.port);
      await within(5_000, third.ended, 'the third connection dropped');
      for (const { socket } of waiting) socket.destroy();
      await Promise.all(waiting.map(({ ended }) => ended));
      const client = await connect({ privateKey: alice.private }, server.port);
      client.end();
    });
  });

  it('cuts an authenticated connection that runs no session for the idle timeout', async () => {
    await withServer({ idleTimeoutMs: 300 }, async (server) => {
      const client = await connect({ privateKey: alice.private }, server.port);
      await within(5_000, closed(client), 'the idle connection cut');
    });
  });

  it('closes with a peer that never spoke, once the sessions it stopped have ended', async () => {
    const logged: string[] = [];
    const record = (_obj: object, msg: string): void => {
      logged.push(msg);
    };
    // A store that answers only when let go: the session is in the middle of a call when the server closes.
    let letGo = (): void => undefined;
    const gate = new Promise<void>((resolve) => {
      letGo = resolve;
    });
    let entered = (): void => undefined;
    const inStore = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const real = t.server.service;
    const service = new Proxy(real, {
      get(target, property) {
        if (property === 'open') {
          return async (...args: Parameters<typeof real.open>) => {
            entered();
            await gate;
            return target.open(...args);
          };
        }
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const server = await startSshServer({
      service,
      authenticator: new Authenticator(t.server.stores.db),
      hostKeyFile: join(t.dataDir, 'ssh_host_ed25519_key'),
      host: '127.0.0.1',
      port: 0,
      log: { debug: record, info: record, warn: record, error: record },
    });
    const silent = await tcp(server.port);
    const client = await connect({ privateKey: bob.private }, server.port);
    const open = await exec(client, 'nix-store --serve');
    open.on('error', () => undefined);
    open.write(encodeU64(SERVE_MAGIC_1));
    await within(2_000, inStore, 'the session in the store');
    let closedAt = 0;
    const closing = server.close().then(() => (closedAt = Date.now()));
    await within(2_000, Promise.all([silent.ended, closed(client)]), 'the peers hung up');
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(closedAt, 0, 'close() resolved with a session still in a store call');
    const releasedAt = Date.now();
    letGo();
    await within(2_000, closing, 'close()');
    assert.ok(closedAt >= releasedAt);
    assert.ok(logged.includes('SSH session ended with an error'), logged.join('; '));
  });

  it('keeps its host key, private to the server', async () => {
    const file = join(t.dataDir, 'ssh_host_ed25519_key');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    await withServer({}, (again) => {
      assert.equal(again.hostKey, ssh.hostKey);
      assert.match(ssh.hostKey, /^ssh-ed25519 AAAA/);
      assert.equal(
        again.knownHostsLine('cache.example.org'),
        `[cache.example.org]:${again.port} ${ssh.hostKey}`,
      );
    });
  });
});

describe('niche serve --ssh-listen', () => {
  it('prints the host key as a known_hosts line a client checks, the same after a restart, and stops on SIGTERM with a session open', async () => {
    const dataDir = join(t.dataDir, 'serve');
    const sshPort = await freePort();
    const printed = async (serve: Awaited<ReturnType<typeof startServe>>): Promise<string> => {
      await serve.waitForStderr(/known_hosts: /);
      const line = /known_hosts: (.*)$/m.exec(serve.stderr())?.[1] ?? '';
      assert.match(line, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${sshPort} ssh-ed25519 AAAA[\\w+/=]+$`));
      return line;
    };
    const first = await startServe({ dataDir, args: ['--ssh-listen', `127.0.0.1:${sshPort}`] });
    let line: string;
    try {
      line = await printed(first);
      assert.equal((await stat(join(dataDir, 'ssh_host_ed25519_key'))).mode & 0o777, 0o600);
    } finally {
      await first.stop();
    }

    const serve = await startServe({ dataDir, args: ['--ssh-listen', `127.0.0.1:${sshPort}`] });
    try {
      assert.equal(await printed(serve), line, 'the host key changed across a restart');
      const keyFile = join(dataDir, 'alice.pub');
      await writeFile(keyFile, `${alice.public}\n`);
      const added = await runCli(['ssh-key', 'add', '--cache', 'main', keyFile, '--data', dataDir]);
      assert.equal(added.code, 0, added.stderr);
      // The client takes the server only with the key printed.
      const expected = Buffer.from(line.split(' ')[2] ?? '', 'base64');
      await assert.rejects(
        connect({ privateKey: alice.private, username: 'main', hostVerifier: () => false }, sshPort),
      );
      const client = await connect(
        { privateKey: alice.private, username: 'main', hostVerifier: (key: Buffer) => key.equals(expected) },
        sshPort,
      );
      const open = await exec(client, 'nix-store --serve');
      open.on('error', () => undefined);
      open.write(Buffer.concat([encodeU64(SERVE_MAGIC_1), encodeU64(0x207)]));
      assert.equal(
        (await new Promise<Buffer>((resolve) => open.once('data', resolve))).readUInt32LE(0),
        SERVE_MAGIC_2,
      );
      const gone = closed(client);
      serve.child.kill('SIGTERM');
      const exit = await serve.exitWithin(10_000);
      assert.equal(exit.code, 0, serve.stderr());
      await within(2_000, gone, 'the client told');
    } finally {
      await serve.stop();
    }
  });
});
