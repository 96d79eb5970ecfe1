// The embedded SSH server of `niche serve --ssh-listen`, on the ssh2 library: every cache as an ssh:// and
// ssh-ng:// store, with no OpenSSH to configure. The SSH user name is the cache (`ssh-ng://team@host`);
// only public keys registered with `niche ssh-key add` get in (the signature is checked here, the key
// looked up in the metadata store); a session may only run Nix's two remote commands (src/ssh/command.ts),
// which run as any SSH session does (src/ssh/session.ts). No shell, no pty, no subsystem (sftp), no port
// or agent or X11 forwarding, no environment: each is refused.
//
// Bounded: sessions in total and per key (more are refused with a message on the channel's stderr), one
// command per channel and a few channels open at once per connection, connections not yet authenticated
// (at once, and each for 20 s from the TCP connection: OpenSSH's MaxStartups and LoginGraceTime), the
// time an authenticated connection may stay without a running session, and each session's idle time.
// No compression (see below). The host key is generated at the first start (ed25519, mode 0600) and
// reused after.
//
// The TCP listener is ours and hands each socket to ssh2 (injectSocket): ssh2 only reports a connection
// once the client has sent its identification line, so a peer that sends nothing would otherwise escape
// every timer and hold close() open.

import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import ssh2 from 'ssh2';
import type { Connection, ParsedKey, PublicKeyAuthContext, ServerChannel, Session } from 'ssh2';
import type { Authenticator, Principal } from '../cache/auth.js';
import type { CacheService } from '../cache/cache-service.js';
import { sshKeyFingerprint } from '../cache/ssh-keys.js';
import { ConfigError } from '../errors.js';
import { knownHostsLine } from './known-hosts.js';
import { DEFAULT_MAX_SSH_SESSIONS, DEFAULT_MAX_SSH_SESSIONS_PER_KEY } from './limits.js';
import { DEFAULT_IDLE_TIMEOUT_MS, runSshSession, type SshSessionLog } from './session.js';

const { Server, utils } = ssh2;

/** A connection must authenticate within this long of being accepted. */
const DEFAULT_AUTH_TIMEOUT_MS = 20_000;
/** Connections not yet authenticated, at once; more are dropped as they come. */
const DEFAULT_MAX_UNAUTHENTICATED = 32;
/** Channels a connection may have open at once (Nix opens one; a ControlMaster one per command, in turn). */
const MAX_CHANNELS_PER_CONNECTION = 4;
/** Refused authentication attempts per connection (each unregistered key offered counts; `none` does not). */
const MAX_AUTH_FAILURES = 10;
/** How long a connection that was told to go may take before its socket is destroyed. */
const HANG_UP_GRACE_MS = 5_000;

export interface SshServerOptions {
  readonly service: CacheService;
  readonly authenticator: Authenticator;
  readonly hostKeyFile: string;
  readonly host: string;
  readonly port: number;
  readonly maxSessions?: number;
  readonly maxSessionsPerKey?: number;
  /** A session's idle time, and an authenticated connection's without a running session. */
  readonly idleTimeoutMs?: number;
  /** Time to authenticate, from the TCP connection (default 20 s). */
  readonly authTimeoutMs?: number;
  /** Connections not yet authenticated, at once (default 32); more are dropped. */
  readonly maxUnauthenticated?: number;
  readonly log: SshSessionLog & { error(obj: object, msg: string): void };
  /** Told of sessions (the server's metrics). */
  readonly observer?: SshObserver | undefined;
}

/** What an SSH session was, for whoever counts them (src/metrics). */
export type SshSessionOutcome = 'ok' | 'failed' | 'refused';

export interface SshObserver {
  sessionOpened(): void;
  /** `command`: what the client ran (`nix-store --serve --write`, `nix-daemon --stdio`, or anything else). */
  sessionClosed(cacheName: string, command: string | undefined, outcome: SshSessionOutcome): void;
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

/**
 * A new ed25519 key pair in OpenSSH's formats. ssh2's generator drops the leading zero byte of about one
 * public key in three hundred (measured: 17 of 5000), writing a private key that no parser, its own
 * included, accepts; such a pair is made again.
 */
export function generateEd25519KeyPair(comment?: string): { private: string; public: string } {
  for (;;) {
    const pair = utils.generateKeyPairSync('ed25519', comment === undefined ? {} : { comment });
    const parsed = utils.parseKey(pair.private);
    const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey | undefined) : parsed;
    if (key !== undefined && !(key instanceof Error) && key.isPrivateKey()) return pair;
  }
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
    const pair = generateEd25519KeyPair('niche host key');
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
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const authTimeoutMs = options.authTimeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS;
  const maxUnauthenticated = options.maxUnauthenticated ?? DEFAULT_MAX_UNAUTHENTICATED;
  const log = options.log;
  const sessionsByKey = new Map<string, number>();
  let sessions = 0;
  /** Every accepted socket, until it closes. */
  const sockets = new Set<Socket>();
  /** Connections not yet authenticated and their deadlines, by the peer's address and port (how ssh2
   *  names a connection to its listener). */
  const unauthenticated = new Map<string, { readonly socket: Socket; readonly deadline: NodeJS.Timeout }>();
  const connections = new Set<Connection>();
  /** Every session until it has ended (close() waits for them: the stores close after it). */
  const sessionsRunning = new Set<Promise<void>>();
  const stop = new AbortController();
  const peerOf = (ip: string | undefined, port: number | undefined): string => `${ip ?? ''}|${port ?? ''}`;

  /** Ends a connection politely, and for good if the peer does not close its side soon. */
  const hangUp = (client: Connection, socket: Socket | undefined): void => {
    client.end();
    if (socket !== undefined) setTimeout(() => socket.destroy(), HANG_UP_GRACE_MS).unref();
  };

  const server = new Server(
    {
      hostKeys: [privateKey],
      ident: 'niche',
      // No compression. ssh2's compressing packet writer throws ('Invalid Zlib instance') on any write
      // after the peer's connection ended, and some of those writes happen in ssh2's own stream callbacks
      // (a channel destroyed once both its sides ended): a client with `ssh -C` that vanished at the
      // wrong moment took the process down. Without it those writes are dropped, as ssh2 means them to
      // be. Clients asking for compression (`ssh -C`, `?compress=true`) also offer none, and get that.
      algorithms: { compress: ['none'] },
    },
    (client, info) => {
      const peer = peerOf(info.ip, info.port);
      const socket = unauthenticated.get(peer)?.socket;
      connections.add(client);
      let principal: Principal | undefined;
      let fingerprint: string | undefined;
      let cacheName = '';
      let failures = 0;
      let openChannels = 0;
      let running = 0;
      let idleTimer: NodeJS.Timeout | undefined;
      let ended = false;
      /** An authenticated connection with no session running is cut after the idle timeout. */
      const watchIdle = (): void => {
        clearTimeout(idleTimer);
        // A session can end after its connection did (it is told by the signal): nothing to watch then.
        if (running > 0 || ended) return;
        idleTimer = setTimeout(() => {
          log.info({ ip: info.ip }, 'SSH connection cut: no session for the idle timeout');
          hangUp(client, socket);
        }, idleTimeoutMs).unref();
      };
      client.on('error', (error) => {
        log.debug({ ip: info.ip, err: error }, 'SSH connection error');
      });
      // ssh2 tears the connection's protocol down as the socket ends, before it says so: nothing is
      // written to its channels after that.
      client.on('end', () => {
        ended = true;
      });
      client.on('close', () => {
        ended = true;
        clearTimeout(idleTimer);
        connections.delete(client);
      });

      client.on('authentication', (ctx) => {
        const refuse = (): void => {
          if (ctx.method !== 'none') failures++;
          if (failures >= MAX_AUTH_FAILURES) {
            ctx.reject([]);
            hangUp(client, socket);
            return;
          }
          ctx.reject(['publickey']);
        };
        if (ctx.method !== 'publickey') {
          refuse();
          return;
        }
        // A key is looked up first; the signature, when sent, is checked before anything is believed.
        const offered = ctx.key.data;
        options.authenticator.authenticateSshKey(offered).then(
          (found) => {
            if (found.kind !== 'token') {
              refuse();
              return;
            }
            if (ctx.signature === undefined) {
              // The client only asks whether this key would do.
              ctx.accept();
              return;
            }
            if (!signatureValid(ctx)) {
              refuse();
              return;
            }
            principal = found;
            fingerprint = sshKeyFingerprint(offered);
            cacheName = ctx.username;
            ctx.accept();
          },
          (error: unknown) => {
            log.error({ err: error }, 'SSH key lookup failed');
            refuse();
          },
        );
      });

      client.on('ready', () => {
        // Authenticated: the authentication deadline and the count of waiting connections no longer apply.
        clearTimeout(unauthenticated.get(peer)?.deadline);
        unauthenticated.delete(peer);
        watchIdle();
        client.on('session', (accept, reject) => {
          if (openChannels >= MAX_CHANNELS_PER_CONNECTION) {
            reject();
            return;
          }
          openChannels++;
          const session = accept();
          session.once('close', () => {
            openChannels--;
          });
          serveSession(session);
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
        // One command per channel: a second exec finds no listener, and ssh2 refuses it.
        session.once('exec', (accept, _reject, request) => {
          const channel = accept();
          channel.on('error', (error: Error) => {
            log.debug({ ip: info.ip, err: error }, 'SSH channel error');
          });
          running++;
          watchIdle();
          const done = runChannel(channel, request.command)
            .catch((error: unknown) => {
              log.error({ err: error }, 'SSH session failed');
            })
            .finally(() => {
              running--;
              watchIdle();
              sessionsRunning.delete(done);
            });
          sessionsRunning.add(done);
        });
      };

      /** The exit status (and a last message), then the end of the channel, unless the client has gone. */
      const farewell = (channel: ServerChannel, exitCode: number, message?: string): void => {
        if (ended || channel.destroyed) return;
        try {
          if (message !== undefined) channel.stderr.write(message);
          channel.exit(exitCode);
          channel.end();
        } catch (error) {
          log.debug({ ip: info.ip, err: error }, 'SSH channel could not be closed');
        }
      };

      const runChannel = async (channel: ServerChannel, command: string): Promise<void> => {
        const key = fingerprint ?? '';
        const perKey = sessionsByKey.get(key) ?? 0;
        if (principal === undefined || sessions >= maxSessions || perKey >= maxPerKey) {
          const why =
            sessions >= maxSessions
              ? `the server has ${maxSessions} SSH sessions open already`
              : `this key has ${maxPerKey} SSH sessions open already`;
          farewell(channel, 1, `error: niche: ${why}; try again later [UNAVAILABLE]\n`);
          options.observer?.sessionClosed(cacheName, command, 'refused');
          return;
        }
        sessions++;
        options.observer?.sessionOpened();
        let outcome: SshSessionOutcome = 'failed';
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
            idleTimeoutMs,
          });
          farewell(channel, result.exitCode);
          if (result.exitCode === 0) outcome = 'ok';
        } finally {
          options.observer?.sessionClosed(cacheName, command, outcome);
          sessions--;
          const left = (sessionsByKey.get(key) ?? 1) - 1;
          if (left <= 0) sessionsByKey.delete(key);
          else sessionsByKey.set(key, left);
        }
      };
    },
  );
  server.on('error', (error: Error) => {
    log.error({ err: error }, 'SSH server error');
  });

  const listener = createServer((socket) => {
    const peer = peerOf(socket.remoteAddress, socket.remotePort);
    if (stop.signal.aborted || socket.remoteAddress === undefined || unauthenticated.has(peer)) {
      socket.destroy();
      return;
    }
    if (unauthenticated.size >= maxUnauthenticated) {
      log.debug({ ip: socket.remoteAddress }, 'SSH connection dropped: too many not yet authenticated');
      socket.destroy();
      return;
    }
    sockets.add(socket);
    const deadline = setTimeout(() => {
      log.info({ ip: socket.remoteAddress }, 'SSH connection cut: not authenticated in time');
      socket.destroy();
    }, authTimeoutMs).unref();
    unauthenticated.set(peer, { socket, deadline });
    socket.once('close', () => {
      clearTimeout(deadline);
      sockets.delete(socket);
      if (unauthenticated.get(peer)?.socket === socket) unauthenticated.delete(peer);
    });
    server.injectSocket(socket);
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error): void => {
      reject(
        new ConfigError(
          'LISTEN_FAILED',
          `cannot listen for SSH on ${options.host}:${options.port}: ${error.message}`,
          { cause: error },
        ),
      );
    };
    listener.once('error', onError);
    listener.listen(options.port, options.host, () => {
      listener.off('error', onError);
      listener.on('error', (error: Error) => {
        log.error({ err: error }, 'SSH listener error');
      });
      resolve();
    });
  });
  const port = (listener.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    hostKey: publicKey,
    knownHostsLine: (host) => knownHostsLine(host, port, publicKey),
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        stop.abort(new Error('the server is shutting down'));
        // Sessions end (the signal); authenticated peers are told, the others just cut.
        const force = setTimeout(() => {
          for (const socket of sockets) socket.destroy();
        }, HANG_UP_GRACE_MS);
        listener.close(() => {
          clearTimeout(force);
          resolve();
        });
        for (const connection of connections) connection.end();
        for (const { socket } of unauthenticated.values()) socket.destroy();
      }).then(async () => {
        // Told to stop, each session ends at its next read or write.
        await Promise.all([...sessionsRunning]);
      });
      return closing;
    },
  };
}
