// An HTTP binary cache that stores nothing: it answers nix-cache-info, says every narinfo and NAR is
// absent, and accepts every upload by reading and discarding it. `nix copy --to` this server measures what
// Nix's HTTP store costs by itself (a HEAD per narinfo and NAR, a PUT per NAR and narinfo, sequential per
// path), which no server can go below; the bench reports it beside niche and file://.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

const CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n';

export interface NullServer {
  readonly url: string;
  close(): Promise<void>;
}

export async function startNullServer(): Promise<NullServer> {
  const server: Server = createServer((request, response) => {
    if (request.method === 'PUT') {
      request.resume();
      request.once('end', () => {
        response.writeHead(201, { 'content-length': 0 });
        response.end();
      });
      return;
    }
    if (request.url === '/nix-cache-info') {
      response.writeHead(200, {
        'content-type': 'text/x-nix-cache-info',
        'content-length': CACHE_INFO.length,
      });
      response.end(CACHE_INFO);
      return;
    }
    response.writeHead(404, { 'content-length': 0 });
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}
