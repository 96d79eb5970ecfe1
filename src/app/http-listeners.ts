// Where the HTTP front end listens: TCP addresses and Unix sockets (`--listen unix:/run/niche/http.sock`),
// and the certificate of its TLS listeners, reloaded on SIGHUP.
//
// A Unix socket file left by a process that died (SIGKILL, a crash) would make listening fail with
// EADDRINUSE; it is removed at start when nothing answers on it. One that something answers on is
// another server's, and the start fails. The socket is made mode 0660: the owner and its group (say, the
// group of a proxy in front) may connect; Node removes the file when the server closes.
import { lstat, chmod, unlink } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { HttpListenAddress, TlsConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { describeCertificate, loadTlsMaterial } from './tls-files.js';

/** Mode of a Unix socket niche listens on. */
export const UNIX_SOCKET_MODE = 0o660;

/** How an address is written in settings and messages. */
export function describeListen(address: HttpListenAddress): string {
  if ('socketPath' in address) return `unix:${address.socketPath}`;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path: socketPath });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      resolve(false);
    });
  });
}

/** What is at a Unix socket path: nothing, a socket nobody answers on, a live one, or something else. */
export async function inspectSocketPath(
  socketPath: string,
): Promise<'absent' | 'stale' | 'in-use' | 'not-a-socket'> {
  const found = await lstat(socketPath).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  });
  if (found === undefined) return 'absent';
  if (!found.isSocket()) return 'not-a-socket';
  return (await answers(socketPath)) ? 'in-use' : 'stale';
}

/** Removes a stale socket file at `socketPath`; throws if a server answers there or it is not a socket. */
export async function removeStaleSocket(socketPath: string): Promise<void> {
  const state = await inspectSocketPath(socketPath);
  if (state === 'not-a-socket') {
    throw Object.assign(new Error(`${socketPath} exists and is not a socket`), { code: 'EEXIST' });
  }
  if (state === 'in-use') throw Object.assign(new Error('a server answers on it'), { code: 'EADDRINUSE' });
  if (state === 'stale') await unlink(socketPath);
}

/** The start-up error for an address that cannot be listened on, with the likely reason. */
export function listenFailed(address: HttpListenAddress, error: unknown): ConfigError {
  const code = (error as NodeJS.ErrnoException).code;
  const reason =
    code === 'EADDRINUSE'
      ? 'the address is already in use (is another server running?)'
      : code === 'EACCES'
        ? 'permission denied (ports below 1024 need privileges)'
        : code === 'EADDRNOTAVAIL'
          ? 'the address is not available on this machine'
          : (error as Error).message;
  return new ConfigError('LISTEN_FAILED', `cannot listen on ${describeListen(address)}: ${reason}`, {
    cause: error,
  });
}

/**
 * Starts `http` listening on `address`. `shared`: a worker of a cluster, whose listener the primary holds
 * (a live socket file at the path is the primary's own, not a stale one).
 */
export async function listenHttp(
  http: FastifyInstance,
  address: HttpListenAddress,
  options: { readonly shared?: boolean } = {},
): Promise<void> {
  try {
    if ('socketPath' in address) {
      if (options.shared !== true) await removeStaleSocket(address.socketPath);
      await http.listen({ path: address.socketPath });
      await chmod(address.socketPath, UNIX_SOCKET_MODE);
    } else {
      await http.listen({ host: address.host, port: address.port });
    }
  } catch (error) {
    throw listenFailed(address, error);
  }
}

/** The URL a listening server answers at (`http://localhost` for a Unix socket), and its port (0 there). */
export function listenedUrl(http: FastifyInstance, secure: boolean): { url: string; port: number } {
  const scheme = secure ? 'https' : 'http';
  const address = http.server.address();
  if (address === null || typeof address === 'string') return { url: `${scheme}://localhost`, port: 0 };
  const { family, address: ip, port }: AddressInfo = address;
  return { url: `${scheme}://${family === 'IPv6' ? `[${ip}]` : ip}:${port}`, port };
}

/**
 * Reads the certificate and key again and gives them to every TLS listener: new connections get the new
 * certificate, connections already open keep theirs. A pair that fails its checks is logged and the one
 * in use stays. Resolves with whether the new pair is in use.
 */
export async function reloadTls(
  servers: readonly FastifyInstance[],
  config: TlsConfig,
  logger: Logger,
): Promise<boolean> {
  try {
    const material = await loadTlsMaterial(config);
    for (const http of servers) {
      (http.server as unknown as TlsServer).setSecureContext({ cert: material.cert, key: material.key });
    }
    logger.info(
      { certificate: describeCertificate(material.leaf) },
      `TLS certificate reloaded from ${config.certFile}`,
    );
    return true;
  } catch (error) {
    logger.error({ err: error }, 'TLS certificate not reloaded; the one in use stays');
    return false;
  }
}
