// The separate metrics address (`--metrics-listen`): `GET /metrics` and nothing else, without
// credentials, on a plain Node server of its own, so that an operator can scrape on an internal address
// (or loopback) while the main listener faces clients. Its requests are not counted in the metrics.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { ServerMetrics } from '../metrics/server-metrics.js';

export interface MetricsListener {
  /** `http://host:port` */
  readonly url: string;
  close(): Promise<void>;
}

function answer(response: ServerResponse, status: number, type: string, body: string, head: boolean): void {
  response.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  response.end(head ? undefined : body);
}

export async function startMetricsListener(
  metrics: ServerMetrics,
  address: { readonly host: string; readonly port: number },
  logger: Logger,
): Promise<MetricsListener> {
  const serve = (request: IncomingMessage, response: ServerResponse): void => {
    const url = request.url ?? '/';
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const head = request.method === 'HEAD';
    if (path !== '/metrics') {
      answer(response, 404, 'text/plain', 'not found: this address serves /metrics only\n', head);
      return;
    }
    if (request.method !== 'GET' && !head) {
      response.setHeader('allow', 'GET, HEAD');
      answer(response, 405, 'text/plain', 'method not allowed\n', false);
      return;
    }
    metrics.render().then(
      (text) => {
        answer(response, 200, metrics.contentType, text, head);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'metrics could not be rendered');
        answer(response, 500, 'text/plain', 'internal server error\n', head);
      },
    );
  };
  const server = createServer(serve);
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    url: `http://${host}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections();
      }),
  };
}
