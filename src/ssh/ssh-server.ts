// The embedded SSH server of `niche serve --ssh-listen`, on the ssh2 library: every cache as an ssh:// and
// ssh-ng:// store, with no OpenSSH to configure. The SSH user name is the cache (`ssh-ng://team@host`);
// only public keys registered with `niche ssh-key add` get in (the signature is checked here, the key
// looked up in the metadata store); a session may only run Nix's two remote commands (src/ssh/command.ts),
// which run as any SSH session does (src/ssh/session.ts). No shell, no pty, no subsystem (sftp), no port
// or agent or X11 forwarding, no environment: each is refused.
//
// Bounded: sessions in total and per key (more are refused with a message on the channel's stderr), one
// command per channel and a few channels per connection, the time to authenticate, and each session's
// idle time. The host key is generated at the first start (ed25519, mode 0600) and reused after.

import { readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import ssh2 from 'ssh2';
import type { Connection, ParsedKey, PublicKeyAuthContext, ServerChannel, Session } from 'ssh2';
import type { Authenticator, Principal } from '../cache/auth.js';
import type { CacheService } from '../cache/cache-service.js';
import { sshKeyFingerprint } from '../cache/ssh-keys.js';
import { ConfigError } from '../errors.js';
import { DEFAULT_MAX_SSH_SESSIONS, DEFAULT_MAX_SSH_SESSIONS_PER_KEY } from './limits.js';
import { runSshSession, type SshSessionLog } from './session.js';

const { Server, utils } = ssh2;

/** A connection must authenticate within this long. */
const AUTH_TIMEOUT_MS = 20_000;
/** Channels a connection may open over its life (Nix opens one). */
const MAX_CHANNELS_PER_CONNECTION = 4;
/** Authentication attempts per connection (each offered key counts). */
const MAX_AUTH_ATTEMPTS = 10;

export interface SshServerOptions {
  readonly service: CacheService;
  readonly authenticator: Authenticator;
  readonly hostKeyFile: string;
  readonly host: string;
  readonly port: number;
  readonly maxSessions?: number;
  readonly maxSessionsPerKey?: number;
  readonly idleTimeoutMs?: number;
  readonly log: SshSessionLog & { error(obj: object, msg: string): void };
}

export interface RunningSshServer {
  readonly port: number;
  /** `ssh-ed25519 AAAA…`, the host's public key. */
  readonly hostKey: string;
  /** For known_hosts: `[host]:port ssh-ed25519 AAAA…` (host as given). */
  knownHostsLine(host: string): string;
  /** Stops accepting, ends every session. */
  close(): Promise<void>;
}

/** The host key in the file, created (ed25519, mode 0600) if there is none. */
export async function loadOrCreateHostKey(file: string): Promise<{ privateKey: string; publicKey: string }> {
  let privateKey: string;
  try {
    privateKey = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ConfigError(
        'KEY_FILE_INVALID',
        `cannot read the SSH host key ${file}: ${(error as Error).message}`,
      );
    }
    const pair = utils.generateKeyPairSync('ed25519', { comment: 'niche host key' });
    try {
      // `wx`: two servers starting at once never overwrite each other's key.
      await writeFile(file, pair.private, { mode: 0o600, flag: 'wx' });
      privateKey = pair.private;
    } catch (writeError) {
      if ((writeError as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new ConfigError(
          'KEY_FILE_INVALID',
          `cannot write the SSH host key ${file}: ${(writeError as Error).message}`,
        );
      }
      privateKey = await readFile(file, 'utf8');
    }
  }
  const parsed = utils.parseKey(privateKey);
  const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey | undefined) : parsed;
  if (key === undefined || key instanceof Error || !key.isPrivateKey()) {
    throw new ConfigError('KEY_FILE_INVALID', `the SSH host key ${file} is not an unencrypted private key`);
  }
  const publicKey = `${key.type} ${key.getPublicSSH().toString('base64')}`;
  return { privateKey, publicKey };
}

/** Whether the client proved it holds the private key of the public key it offered. */
function signatureValid(ctx: PublicKeyAuthContext): boolean {
  if (ctx.signature === undefined || ctx.blob === undefined) return false;
  const key = utils.parseKey(ctx.key.data);
  if (key instanceof Error || Array.isArray(key)) return false;
  // ssh2 returns an Error (truthy) rather than false on some failures: only `true` is a valid signature.
  const verified: unknown = key.verify(ctx.blob, ctx.signature, ctx.hashAlgo);
  return verified === true;
}

export async function startSshServer(options: SshServerOptions): Promise<RunningSshServer> {
  const { privateKey, publicKey } = await loadOrCreateHostKey(options.hostKeyFile);
  const maxSessions = options.maxSessions ?? DEFAULT_MAX_SSH_SESSIONS;
  const maxPerKey = options.maxSessionsPerKey ?? DEFAULT_MAX_SSH_SESSIONS_PER_KEY;
  const log = options.log;
  const sessionsByKey = new Map<string, number>();
  let sessions = 0;
  const connections = new Set<Connection>();
  const stop = new AbortController();

  const server = new Server({ hostKeys: [privateKey], ident: 'niche' }, (client, info) => {
    connections.add(client);
    let principal: Principal | undefined;
    let fingerprint: string | undefined;
    let cacheName = '';
    let attempts = 0;
    let channels = 0;
    const authTimer = setTimeout(() => {
      log.info({ ip: info.ip }, 'SSH connection cut: not authenticated in time');
      client.end();
    }, AUTH_TIMEOUT_MS);
    client.on('error', (error) => {
      log.debug({ ip: info.ip, err: error }, 'SSH connection error');
    });
    client.on('close', () => {
      clearTimeout(authTimer);
      connections.delete(client);
    });

    client.on('authentication', (ctx) => {
      attempts++;
      if (attempts > MAX_AUTH_ATTEMPTS) {
        ctx.reject([]);
        client.end();
        return;
      }
      if (ctx.method !== 'publickey') {
        ctx.reject(['publickey']);
        return;
      }
      // A key is looked up first; the signature, when sent, is checked before anything is believed.
      const offered = ctx.key.data;
      options.authenticator.authenticateSshKey(offered).then(
        (found) => {
          if (found.kind !== 'token') {
            ctx.reject(['publickey']);
            return;
          }
          if (ctx.signature === undefined) {
            // The client only asks whether this key would do.
            ctx.accept();
            return;
          }
          if (!signatureValid(ctx)) {
            ctx.reject(['publickey']);
            return;
          }
          principal = found;
          fingerprint = sshKeyFingerprint(offered);
          cacheName = ctx.username;
          ctx.accept();
        },
        (error: unknown) => {
          log.error({ err: error }, 'SSH key lookup failed');
          ctx.reject(['publickey']);
        },
      );
    });

    client.on('ready', () => {
      clearTimeout(authTimer);
      client.on('session', (accept, reject) => {
        channels++;
        if (channels > MAX_CHANNELS_PER_CONNECTION) {
          reject();
          return;
        }
        serveSession(accept());
      });
      client.on('tcpip', (_accept, reject) => {
        reject();
      });
      client.on('openssh.streamlocal', (_accept, reject) => {
        reject();
      });
      client.on('request', (_accept, reject) => {
        reject?.();
      });
    });

    const serveSession = (session: Session): void => {
      for (const refused of [
        'pty',
        'shell',
        'subsystem',
        'sftp',
        'env',
        'x11',
        'auth-agent',
        'signal',
      ] as const) {
        session.on(refused, (_accept: unknown, reject?: () => void) => {
          reject?.();
        });
      }
      session.once('exec', (accept, _reject, request) => {
        const channel = accept();
        void runChannel(channel, request.command);
      });
    };

    const runChannel = async (channel: ServerChannel, command: string): Promise<void> => {
      const key = fingerprint ?? '';
      const perKey = sessionsByKey.get(key) ?? 0;
      if (principal === undefined || sessions >= maxSessions || perKey >= maxPerKey) {
        const why =
          sessions >= maxSessions
            ? `the server has ${maxSessions} SSH sessions open already`
            : `this key has ${maxPerKey} SSH sessions open already`;
        channel.stderr.write(`error: niche: ${why}; try again later [UNAVAILABLE]\n`);
        channel.exit(1);
        channel.end();
        return;
      }
      sessions++;
      sessionsByKey.set(key, perKey + 1);
      try {
        const result = await runSshSession({
          service: options.service,
          principal,
          refreshPrincipal: async () => {
            const blobKey = principal?.kind === 'token' ? principal.token.sshKey : undefined;
            if (blobKey === undefined) return { kind: 'invalid', reason: 'SSH key removed' };
            const blob = Buffer.from(blobKey.publicKey.split(' ')[1] ?? '', 'base64');
            return options.authenticator.authenticateSshKey(blob);
          },
          cacheName,
          command,
          input: channel,
          output: channel,
          stderr: channel.stderr,
          log,
          signal: stop.signal,
          ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
        });
        if (!channel.destroyed) {
          channel.exit(result.exitCode);
          channel.end();
        }
      } finally {
        sessions--;
        const left = (sessionsByKey.get(key) ?? 1) - 1;
        if (left <= 0) sessionsByKey.delete(key);
        else sessionsByKey.set(key, left);
      }
    };
  });
  server.on('error', (error: Error) => {
    log.error({ err: error }, 'SSH server error');
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error): void => {
      reject(
        new ConfigError(
          'LISTEN_FAILED',
          `cannot listen for SSH on ${options.host}:${options.port}: ${error.message}`,
          {
            cause: error,
          },
        ),
      );
    };
    server.once('error', onError);
    server.listen(options.port, options.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    hostKey: publicKey,
    knownHostsLine: (host) => `${port === 22 ? host : `[${host}]:${port}`} ${publicKey}`,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        stop.abort(new Error('the server is shutting down'));
        server.close(() => {
          resolve();
        });
        for (const connection of connections) connection.end();
      });
      return closing;
    },
  };
}
