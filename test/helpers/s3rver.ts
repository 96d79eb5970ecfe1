// A local S3 for the S3 blob store tests: s3rver (an S3 emulator on the filesystem) in a child process on a
// loopback port, so the tests need no cloud credentials and its memory never counts against ours. A proxy
// can sit in front of it to record requests and inject failures. The proxy also covers s3rver 3.7's gaps,
// following S3's documented API so the code under test talks to it as it would to S3: it answers the three
// calls s3rver lacks (AbortMultipartUpload, ListMultipartUploads, UploadPartCopy), cuts the answer to
// `Range: bytes=0-0` to one byte (s3rver reads an end of 0 as "to the end"), and runs CopyObjects to one
// key one at a time (s3rver's concurrent copies to one file fail with 500 InternalError).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';

import { createS3Client } from '../../src/storage/s3/s3-client.js';
import { makeTempDir, type TempDir } from './tmp.js';

/** s3rver accepts these (and only these) credentials. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;
/** s3rver's pagination tokens only work in this region. */
export const S3RVER_REGION = 'us-east-1';

export interface S3rver {
  /** `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  /** Where s3rver keeps its buckets: `<directory>/<bucket>/...`. */
  readonly directory: string;
  /** A client for the tests' own looks behind the store's back. */
  readonly client: S3Client;
  /** Creates a bucket with a fresh name and returns the name. */
  createBucket(): Promise<string>;
  /** Every key in the bucket, staging objects included, sorted. */
  listAll(bucket: string): Promise<string[]>;
  /** Upload ids of multipart uploads begun and neither completed nor aborted. */
  openUploads(bucket: string): Promise<string[]>;
  stop(): Promise<void>;
}

const require = createRequire(import.meta.url);

export async function startS3rver(): Promise<S3rver> {
  const dir = await makeTempDir('s3rver');
  const directory = join(dir.path, 'data');
  let child: ChildProcess | undefined;
  try {
    child = spawn(
      process.execPath,
      // s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only has in its
      // legacy provider: without it every truncated listing is a 500.
      [
        '--openssl-legacy-provider',
        require.resolve('s3rver/bin/s3rver.js'),
        '-d',
        directory,
        '-a',
        '127.0.0.1',
        '-p',
        '0',
        '--silent',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const port = await listeningPort(child);
    const endpoint = `http://127.0.0.1:${port}`;
    return s3rverHandle(child, dir, directory, endpoint);
  } catch (error) {
    child?.kill('SIGKILL');
    await dir.cleanup();
    throw error;
  }
}

function s3rverHandle(child: ChildProcess, dir: TempDir, directory: string, endpoint: string): S3rver {
  const client = createS3Client({
    endpoint,
    region: S3RVER_REGION,
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
  });
  return {
    endpoint,
    directory,
    client,
    async createBucket() {
      const bucket = `t-${randomBytes(8).toString('hex')}`;
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      return bucket;
    },
    async listAll(bucket) {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(
          new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }),
        );
        for (const object of page.Contents ?? []) if (object.Key !== undefined) keys.push(object.Key);
        token = page.NextContinuationToken;
      } while (token !== undefined);
      return keys.sort();
    },
    async openUploads(bucket) {
      return (await listUploadDirs(directory, bucket)).sort();
    },
    async stop() {
      client.destroy();
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
      await dir.cleanup();
    },
  };
}

async function listeningPort(child: ChildProcess): Promise<number> {
  const { stdout, stderr } = child;
  if (stdout === null || stderr === null) throw new Error('s3rver was started without pipes');
  let output = '';
  const collect = (chunk: Buffer): void => {
    output += chunk.toString('utf8');
  };
  stdout.on('data', collect);
  stderr.on('data', collect);
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`s3rver did not start within 20 s: ${output}`));
      }, 20_000);
      const check = (): void => {
        const match = /S3rver listening on [\d.]+:(\d+)/.exec(output);
        if (match?.[1] !== undefined) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      };
      stdout.on('data', check);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`s3rver exited (${code ?? signal ?? '?'}) before listening: ${output}`));
      });
    });
  } finally {
    // Keep draining, so a chatty child never blocks on a full pipe.
    stdout.removeAllListeners('data');
    stderr.removeAllListeners('data');
    stdout.resume();
    stderr.resume();
  }
}

/** Where s3rver 3.7 keeps the parts of multipart uploads in progress: one directory per upload id. */
function uploadsDir(directory: string, bucket: string): string {
  return join(directory, bucket, '._S3rver_uploads');
}

async function listUploadDirs(directory: string, bucket: string): Promise<string[]> {
  try {
    return await readdir(uploadsDir(directory, bucket));
  } catch (error) {
    if (error instanceof Error && 'code' in error && error.code === 'ENOENT') return [];
    throw error;
  }
}

export interface ProxiedRequest {
  readonly method: string;
  /** The path, without the query: `/<bucket>/<key>`. */
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: IncomingMessage['headers'];
}

export interface S3Proxy {
  readonly endpoint: string;
  /** Every request that reached the proxy, in order of arrival. */
  readonly requests: ProxiedRequest[];
  /** While set, matching requests are refused with 403 AccessDenied (not retried by the SDK). */
  failWhen: ((request: ProxiedRequest) => boolean) | undefined;
  close(): Promise<void>;
}

/** A recording, fault-injecting proxy in front of `target` that also fills s3rver's gaps (see the top). */
export async function startS3Proxy(target: S3rver): Promise<S3Proxy> {
  const targetUrl = new URL(target.endpoint);
  const requests: ProxiedRequest[] = [];
  const copiesByKey = new Map<string, Promise<void>>();
  const proxy: { failWhen: S3Proxy['failWhen'] } = { failWhen: undefined };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy.invalid');
    const recorded: ProxiedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
    };
    requests.push(recorded);
    handle(recorded, req, res).catch((error: unknown) => {
      if (res.headersSent) res.destroy();
      else sendError(res, 500, 'InternalError', error instanceof Error ? error.message : String(error));
    });
  });

  async function handle(recorded: ProxiedRequest, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { method, path, query } = recorded;
    const [bucket = '', ...keyParts] = path.slice(1).split('/');
    const key = keyParts.map(decodeURIComponent).join('/');
    if (proxy.failWhen?.(recorded) === true) {
      req.resume();
      sendError(res, 403, 'AccessDenied', 'refused by the test proxy');
      return;
    }
    if (method === 'DELETE' && query.has('uploadId')) {
      req.resume();
      await abortUpload(res, bucket, query.get('uploadId') ?? '');
      return;
    }
    if (method === 'GET' && key === '' && query.has('uploads')) {
      await listUploads(res, bucket, query.get('prefix') ?? '');
      return;
    }
    if (method === 'PUT' && query.has('uploadId') && req.headers['x-amz-copy-source'] !== undefined) {
      req.resume();
      await uploadPartCopy(res, recorded, bucket, key);
      return;
    }
    if (method === 'PUT' && req.headers['x-amz-copy-source'] !== undefined) {
      const previous = copiesByKey.get(path) ?? Promise.resolve();
      const copy = previous.then(() => forward(req, res));
      copiesByKey.set(path, copy);
      await copy;
      if (copiesByKey.get(path) === copy) copiesByKey.delete(path);
      return;
    }
    await forward(req, res);
  }

  /** Passes the request to s3rver as it is (its signature stays valid); resolves once it is answered. */
  async function forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const answered = once(res, 'close').then(() => undefined);
    const upstream = httpRequest(
      {
        host: targetUrl.hostname,
        port: targetUrl.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upstreamRes) => {
        const total = /^bytes 0-\d+\/(\d+)$/.exec(upstreamRes.headers['content-range'] ?? '')?.[1];
        if (req.headers.range === 'bytes=0-0' && upstreamRes.statusCode === 206 && total !== undefined) {
          res.writeHead(206, {
            ...upstreamRes.headers,
            'content-range': `bytes 0-0/${total}`,
            'content-length': '1',
          });
          upstreamRes.once('data', (chunk: Buffer) => {
            res.end(chunk.subarray(0, 1));
            upstreamRes.destroy();
          });
          return;
        }
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
        upstreamRes.on('error', () => res.destroy());
      },
    );
    upstream.on('error', () => {
      if (res.headersSent) res.destroy();
      else sendError(res, 502, 'InternalError', 'the proxy could not reach s3rver');
    });
    req.on('error', () => upstream.destroy());
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
    await answered;
  }

  async function abortUpload(res: ServerResponse, bucket: string, uploadId: string): Promise<void> {
    if (
      !/^[0-9a-f]+$/.test(uploadId) ||
      !(await listUploadDirs(target.directory, bucket)).includes(uploadId)
    ) {
      sendError(res, 404, 'NoSuchUpload', 'The specified upload does not exist.');
      return;
    }
    await rm(join(uploadsDir(target.directory, bucket), uploadId), { recursive: true, force: true });
    res.writeHead(204).end();
  }

  async function listUploads(res: ServerResponse, bucket: string, prefix: string): Promise<void> {
    const entries: string[] = [];
    for (const uploadId of await listUploadDirs(target.directory, bucket)) {
      const dir = join(uploadsDir(target.directory, bucket), uploadId);
      const key = await readFile(join(dir, 'key'), 'utf8');
      if (!key.startsWith(prefix)) continue;
      const initiated = (await stat(join(dir, 'key'))).mtime.toISOString();
      entries.push(
        `<Upload><Key>${escapeXml(key)}</Key><UploadId>${uploadId}</UploadId>` +
          `<Initiated>${initiated}</Initiated></Upload>`,
      );
    }
    sendXml(
      res,
      200,
      `<ListMultipartUploadsResult><Bucket>${escapeXml(bucket)}</Bucket>` +
        `<Prefix>${escapeXml(prefix)}</Prefix><IsTruncated>false</IsTruncated>${entries.join('')}` +
        `</ListMultipartUploadsResult>`,
    );
  }

  async function uploadPartCopy(
    res: ServerResponse,
    recorded: ProxiedRequest,
    bucket: string,
    key: string,
  ): Promise<void> {
    const source = decodeURIComponent(String(recorded.headers['x-amz-copy-source'])).replace(/^\//, '');
    const [sourceBucket = '', ...sourceKeyParts] = source.split('/');
    const range = recorded.headers['x-amz-copy-source-range'];
    const object = await target.client.send(
      new GetObjectCommand({
        Bucket: sourceBucket,
        Key: sourceKeyParts.join('/'),
        Range: typeof range === 'string' ? range : undefined,
      }),
    );
    if (!(object.Body instanceof Readable)) throw new Error('s3rver returned no body stream');
    const chunks: Buffer[] = [];
    for await (const chunk of object.Body as AsyncIterable<Buffer>) chunks.push(chunk);
    const part = await target.client.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId: recorded.query.get('uploadId') ?? '',
        PartNumber: Number(recorded.query.get('partNumber')),
        Body: Buffer.concat(chunks),
      }),
    );
    sendXml(
      res,
      200,
      `<CopyPartResult><ETag>${escapeXml(part.ETag ?? '')}</ETag>` +
        `<LastModified>${new Date().toISOString()}</LastModified></CopyPartResult>`,
    );
  }

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    get failWhen() {
      return proxy.failWhen;
    },
    set failWhen(predicate) {
      proxy.failWhen = predicate;
    },
    async close() {
      const closed = once(server, 'close');
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}

function sendXml(res: ServerResponse, status: number, xml: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n${xml}`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  sendXml(res, status, `<Error><Code>${code}</Code><Message>${escapeXml(message)}</Message></Error>`);
}

function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (char) => `&#${char.charCodeAt(0)};`);
}
