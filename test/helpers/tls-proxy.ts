// A TLS-terminating reverse proxy for tests, as nginx or Caddy would run in front of niche: HTTPS on a
// loopback port with the test certificate (test/helpers/tls/localhost.crt, for localhost, 127.0.0.1 and
// ::1, valid until 2126; made with openssl req -x509 -newkey ec, committed so tests need no openssl),
// forwarding to a plain-HTTP niche with the client's Host header and, if asked, X-Forwarded-Proto/Prefix.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer, type Server } from 'node:https';
import { fileURLToPath } from 'node:url';

export const TEST_CA_FILE = fileURLToPath(new URL('./tls/localhost.crt', import.meta.url));
const KEY_FILE = fileURLToPath(new URL('./tls/localhost.key', import.meta.url));

export interface TlsProxy {
  /** `https://127.0.0.1:<port>` (the certificate names this address too) */
  readonly url: string;
  close(): Promise<void>;
}

export async function startTlsProxy(
  target: string,
  options: { forwardedProto?: boolean; forwardedPrefix?: string } = {},
): Promise<TlsProxy> {
  const upstream = new URL(target);
  const proxy: Server = createServer(
    { key: readFileSync(KEY_FILE), cert: readFileSync(TEST_CA_FILE) },
    (incoming, outgoing) => {
      const headers = { ...incoming.headers };
      if (options.forwardedProto === true) headers['x-forwarded-proto'] = 'https';
      let path = incoming.url ?? '/';
      if (options.forwardedPrefix !== undefined) {
        // Served under the prefix, passed on without it.
        if (!path.startsWith(`${options.forwardedPrefix}/`)) {
          outgoing.writeHead(404).end();
          return;
        }
        path = path.slice(options.forwardedPrefix.length);
        headers['x-forwarded-prefix'] = options.forwardedPrefix;
      }
      const forward = httpRequest(
        { host: upstream.hostname, port: upstream.port, method: incoming.method, path, headers },
        (answer) => {
          outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(outgoing);
        },
      );
      forward.on('error', () => outgoing.destroy());
      incoming.pipe(forward);
    },
  );
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address();
  if (address === null || typeof address === 'string') throw new Error('no proxy address');
  return {
    url: `https://127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        proxy.closeAllConnections();
        proxy.close(() => {
          resolve();
        });
      }),
  };
}
