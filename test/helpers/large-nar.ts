// Large NAR uploads for tests that must not hold them in memory: the NAR of a (sparse) temp file, streamed
// by niche's own writer, hashed in one pass and streamed again for the upload (compression none, so the
// file hash is the NAR hash). Also a PUT that can stall half-way, so a test can act while it is in flight.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { request, type Agent, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { narFromPath } from '../../src/nix/nar-writer.js';
import { encodeNix32 } from '../../src/nix/nix32.js';
import { fakeBaseName } from './nar-fixtures.js';

export interface LargeNar {
  /** `<nix32 sha256>.nar` */
  readonly fileName: string;
  readonly hash: string;
  readonly size: number;
  /** A store path base name for it. */
  readonly baseName: string;
  /** The NAR, streamed from disk again. */
  stream(): Readable;
  /** The narinfo Nix would PUT for it (no references, compression none). */
  narInfo(): string;
}

/**
 * Writes a `contentBytes` file (sparse, starting with `label` so different labels give different NARs)
 * into `dir` and measures its NAR.
 */
export async function largeNar(dir: string, label: string, contentBytes: number): Promise<LargeNar> {
  const path = join(dir, `${label}.bin`);
  const handle = await open(path, 'wx');
  try {
    await handle.write(`${label}\n`);
    await handle.truncate(contentBytes);
  } finally {
    await handle.close();
  }
  const hasher = createHash('sha256');
  let size = 0;
  for await (const chunk of narFromPath(path) as AsyncIterable<Buffer>) {
    hasher.update(chunk);
    size += chunk.length;
  }
  const hash = encodeNix32(hasher.digest());
  const baseName = fakeBaseName(`large-${label}`);
  const fileName = `${hash}.nar`;
  return {
    fileName,
    hash,
    size,
    baseName,
    stream: () => narFromPath(path),
    narInfo: () =>
      `StorePath: /nix/store/${baseName}\n` +
      `URL: nar/${fileName}\n` +
      'Compression: none\n' +
      `FileHash: sha256:${hash}\n` +
      `FileSize: ${size}\n` +
      `NarHash: sha256:${hash}\n` +
      `NarSize: ${size}\n` +
      'References: \n',
  };
}

export interface StreamingPut {
  /** Bytes written to the connection so far. */
  sent(): number;
  /** Lets a stalled upload send the rest. */
  resume(): void;
  /** The response status, headers and body; rejects if the connection fails first. */
  readonly response: Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>;
}

/**
 * PUTs `body` (exactly `contentLength` bytes) with node:http, honouring back-pressure. With `stallAfter`,
 * sending stops once that many bytes went out, until `resume()`: the server then holds an upload in
 * flight for as long as the test needs.
 */
export function streamingPut(
  url: string,
  options: {
    body: AsyncIterable<Buffer>;
    contentLength: number;
    headers?: Record<string, string>;
    stallAfter?: number;
    /** The HTTP agent (Node's global keep-alive agent by default). */
    agent?: Agent;
  },
): StreamingPut {
  const req = request(url, {
    method: 'PUT',
    ...(options.agent === undefined ? {} : { agent: options.agent }),
    headers: {
      'content-type': 'application/x-nix-nar',
      'content-length': String(options.contentLength),
      ...options.headers,
    },
  });
  let sent = 0;
  let resume = (): void => undefined;
  const resumed = new Promise<void>((resolve) => {
    resume = resolve;
    req.once('close', resolve);
  });
  const response = new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>(
    (resolve, reject) => {
      req.once('error', reject);
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.once('error', reject);
        res.once('end', () => {
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          });
        });
      });
    },
  );
  // Waits until the socket takes more, or is gone ('close' follows any error; the loop then stops).
  const drained = (): Promise<void> =>
    new Promise((resolve) => {
      const done = (): void => {
        req.off('drain', done);
        req.off('close', done);
        resolve();
      };
      req.on('drain', done);
      req.on('close', done);
    });
  const gone = (): boolean => req.destroyed;
  // Failures show through `response`; the feeding loop just stops.
  void (async () => {
    let stalled = false;
    for await (const chunk of options.body) {
      if (gone()) return;
      if (!stalled && options.stallAfter !== undefined && sent + chunk.length > options.stallAfter) {
        stalled = true;
        const head = chunk.subarray(0, options.stallAfter - sent);
        sent += head.length;
        req.write(head);
        await resumed;
        if (gone()) return;
        sent += chunk.length - head.length;
        if (!req.write(chunk.subarray(head.length))) await drained();
        continue;
      }
      sent += chunk.length;
      if (!req.write(chunk)) await drained();
    }
    req.end();
  })().catch(() => {
    req.destroy();
  });
  return { sent: () => sent, resume, response };
}
