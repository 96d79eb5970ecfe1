// Test doubles for the client: a small in-memory niche API server (the endpoints the client uses, with
// the server's rule that a path's references must already be in the cache, and injectable failures), and
// a fake local store (real directories under a temporary store dir, with the `nix path-info --json` that
// describes them), so push can be tested without nix or the real server.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { CacheInfo, PathUpload } from '../../../src/api/v1.js';
import type { NixRunner } from '../../../src/client/nix-command.js';
import { narFromPath } from '../../../src/nix/nar-writer.js';
import { encodeNix32 } from '../../../src/nix/nix32.js';
import { createDecompressor } from '../../../src/util/compression.js';

export interface RecordedUpload {
  readonly hash: string;
  readonly header: PathUpload;
  readonly authorization: string | undefined;
  readonly contentType: string | undefined;
  /** The Content-Length header (undefined: sent chunked), and the length of the body that came. */
  readonly contentLength: string | undefined;
  readonly bodyLength: number;
}

export interface FakeNiche {
  readonly url: string;
  readonly info: CacheInfo;
  /** Store paths the cache holds. */
  readonly paths: Set<string>;
  /** Store paths its upstream serves (accepted as references). */
  readonly upstream: Set<string>;
  readonly uploads: RecordedUpload[];
  readonly missingQueries: string[][];
  /** Statuses to answer the next PUTs of a hash part with (then normal service). */
  readonly failures: Map<string, number[]>;
  /** Most PUTs in progress at once. */
  peakConcurrency(): number;
  close(): Promise<void>;
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

function apiError(response: ServerResponse, status: number, code: string, message: string): void {
  sendJson(response, status, { error: { code, message } });
}

async function readBody(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

export async function startFakeNiche(
  options: { token?: string; cache?: Partial<CacheInfo>; delayMs?: number } = {},
): Promise<FakeNiche> {
  const token = options.token ?? 'nch_test';
  const paths = new Set<string>();
  const upstream = new Set<string>();
  const uploads: RecordedUpload[] = [];
  const missingQueries: string[][] = [];
  const failures = new Map<string, number[]>();
  let running = 0;
  let peak = 0;
  let info: CacheInfo = {
    name: 'main',
    public: false,
    priority: 40,
    storeDir: '/nix/store',
    url: '',
    pushUrl: '',
    publicKeys: ['fake-1:Imv2z2mrgnZnYAcPriirpX3mrHwNga8WuxNYmahdemk='],
    upstreamKeys: [],
    ...options.cache,
  };

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const url = new URL(request.url ?? '/', 'http://fake');
    const authorized = request.headers.authorization === `Bearer ${token}`;
    if (url.pathname === '/api/v1/whoami') {
      if (request.headers.authorization !== undefined && !authorized) {
        apiError(response, 401, 'TOKEN_INVALID', 'the token is not valid');
        return;
      }
      sendJson(response, 200, {
        token: authorized
          ? {
              id: 7,
              description: 'ci',
              scopes: [{ cache: 'main', permissions: ['pull', 'push'] }],
              createdAt: '2025-01-01T00:00:00.000Z',
              expiresAt: null,
              revokedAt: null,
            }
          : null,
      });
      return;
    }
    if (!authorized) {
      apiError(
        response,
        401,
        request.headers.authorization === undefined ? 'TOKEN_MISSING' : 'TOKEN_INVALID',
        'no',
      );
      return;
    }
    const match = /^\/api\/v1\/caches\/([a-z0-9-]+)(\/missing|\/paths\/([a-z0-9]{32}))?$/.exec(url.pathname);
    if (match === null || match[1] !== info.name) {
      apiError(response, 404, 'CACHE_NOT_FOUND', 'no such cache');
      return;
    }
    if (match[2] === undefined && request.method === 'GET') {
      sendJson(response, 200, info);
      return;
    }
    if (match[2] === '/missing' && request.method === 'POST') {
      const body = JSON.parse((await readBody(request)).toString('utf8')) as { paths: string[] };
      missingQueries.push(body.paths);
      sendJson(response, 200, { missing: body.paths.filter((path) => !paths.has(path)) });
      return;
    }
    const hash = match[3];
    if (hash !== undefined && request.method === 'PUT') {
      running++;
      peak = Math.max(peak, running);
      try {
        const body = await readBody(request);
        if (options.delayMs !== undefined)
          await new Promise((resolve) => setTimeout(resolve, options.delayMs));
        const failure = failures.get(hash)?.shift();
        const newline = body.indexOf(0x0a);
        const header = JSON.parse(body.subarray(0, newline).toString('utf8')) as PathUpload;
        uploads.push({
          hash,
          header,
          authorization: request.headers.authorization,
          contentType: request.headers['content-type'],
          contentLength: request.headers['content-length'],
          bodyLength: body.length,
        });
        if (failure !== undefined) {
          apiError(
            response,
            failure,
            failure >= 500 ? 'STORAGE_FAILURE' : 'NAR_INVALID',
            `injected ${failure}`,
          );
          return;
        }
        const storeDir = header.storePath.slice(0, header.storePath.lastIndexOf('/'));
        for (const reference of header.references) {
          const full = `${storeDir}/${reference}`;
          if (full !== header.storePath && !paths.has(full) && !upstream.has(full)) {
            apiError(response, 400, 'REFERENCE_MISSING', `${reference} is not in the cache`);
            return;
          }
        }
        const nar = await readBody(
          Readable.from([body.subarray(newline + 1)]).pipe(
            header.compression === 'none' ? new PassThrough() : createDecompressor(header.compression),
          ),
        );
        const narHash = `sha256:${encodeNix32(createHash('sha256').update(nar).digest())}`;
        if (nar.length !== header.narSize || narHash !== header.narHash) {
          apiError(response, 400, 'NAR_HASH_MISMATCH', 'the NAR does not match');
          return;
        }
        const existed = paths.has(header.storePath);
        paths.add(header.storePath);
        sendJson(response, 200, { status: existed ? 'unchanged' : 'added', storePath: header.storePath });
      } finally {
        running--;
      }
      return;
    }
    apiError(response, 404, 'NOT_FOUND', 'no route');
  };

  const server: Server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      apiError(response, 500, 'INTERNAL', String(error));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const url = `http://127.0.0.1:${address.port}`;
  info = { ...info, url: `${url}/${info.name}`, pushUrl: `${url}/${info.name}/push` };
  return {
    url,
    get info() {
      return info;
    },
    paths,
    upstream,
    uploads,
    missingQueries,
    failures,
    peakConcurrency: () => peak,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}

export interface FakePath {
  readonly path: string;
  readonly hash: string;
  readonly references: readonly string[];
  signatures: string[];
}

/** A fake store: real directories under `storeDir`, described by a `nix path-info --json` stand-in. */
export class FakeStore {
  readonly paths = new Map<string, FakePath>();
  readonly queries: string[][] = [];

  constructor(readonly storeDir: string) {}

  /** Creates `<storeDir>/<random hash>-<name>` holding `bytes` random bytes and referring to `references`. */
  async add(name: string, references: readonly string[] = [], bytes = 1000): Promise<string> {
    const hash = encodeNix32(randomBytes(20));
    const path = join(this.storeDir, `${hash}-${name}`);
    await mkdir(path, { recursive: true });
    await writeFile(join(path, 'data'), randomBytes(bytes));
    await writeFile(join(path, 'refs'), references.join('\n'));
    this.paths.set(path, { path, hash, references, signatures: [] });
    return path;
  }

  closure(roots: readonly string[]): FakePath[] {
    const seen = new Map<string, FakePath>();
    const visit = (path: string): void => {
      if (seen.has(path)) return;
      const entry = this.paths.get(path);
      if (entry === undefined) throw new Error(`unknown fake path ${path}`);
      seen.set(path, entry);
      for (const reference of entry.references) visit(reference);
    };
    for (const root of roots) visit(root);
    return [...seen.values()];
  }

  /** `nix path-info --recursive --json` in Nix 2.8's format. */
  readonly runner: NixRunner = async (args) => {
    const roots = args.slice(args.indexOf('--') + 1);
    this.queries.push(roots);
    const entries = [];
    for (const entry of this.closure(roots)) {
      const nar = await readBody(narFromPath(entry.path));
      entries.push({
        path: entry.path,
        narHash: `sha256-${createHash('sha256').update(nar).digest('base64')}`,
        narSize: nar.length,
        references: entry.references,
        ...(entry.signatures.length === 0 ? {} : { signatures: entry.signatures }),
      });
    }
    return JSON.stringify(entries);
  };
}
