// An HTTP binary cache that stores next to nothing: it answers nix-cache-info, accepts every upload by
// reading it, discards NARs and keeps only the narinfo texts in memory (Nix reads back the narinfos of a
// path's references before uploading it). `nix copy --to` this server measures what Nix's HTTP store
// costs by itself (a HEAD per narinfo and NAR, a PUT per NAR and narinfo, sequential per path), which no
// server can go below; the bench reports it beside niche and file://.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

const CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n';

export interface NullServer {
  readonly url: string;
  close(): Promise<void>;
}

export async function startNullServer(): Promise<NullServer> {
  const narinfos = new Map<string, Buffer>();
  const server: Server = createServer((request, response) => {
    const url = request.url ?? '/';
    if (request.method === 'PUT') {
      const parts: Buffer[] = [];
      const keep = url.endsWith('.narinfo');
      request.on('data', (chunk: Buffer) => {
        if (keep) parts.push(chunk);
      });
      request.once('end', () => {
        if (keep) narinfos.set(url, Buffer.concat(parts));
        response.writeHead(201, { 'content-length': 0 });
        response.end();
      });
      return;
    }
    const narinfo = narinfos.get(url);
    if (narinfo !== undefined) {
      response.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': narinfo.length });
      response.end(request.method === 'HEAD' ? undefined : narinfo);
      return;
    }
    if (url === '/nix-cache-info') {
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
