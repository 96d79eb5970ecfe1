// Uploads one store path in one request (`PUT /api/v1/caches/<cache>/paths/<hash>`, src/api/v1.ts): a JSON
// header line, then the NAR, serialised from the local store by niche itself (byte-identical to
// `nix-store --dump`) and compressed on the fly. Nothing is buffered beyond stream high-water marks, so
// memory per upload stays around a few MiB whatever the path's size; a small path (BUFFERED_NAR_BYTES) is
// compressed into memory whole, to be sent with its length.
import { Readable, Transform, type TransformCallback, pipeline } from 'node:stream';
import {
  type PathUpload,
  type PathUploadResult,
  UPLOAD_CONTENT_TYPE,
  pathUploadResultSchema,
} from '../api/v1.js';
import { NicheError } from '../errors.js';
import { narFromPath } from '../nix/nar-writer.js';
import { DEFAULT_STORE_DIR } from '../nix/store-path.js';
import { createCompressor } from '../util/compression.js';
import type { ApiClient } from './http.js';
import type { LocalPathInfo } from './path-info.js';

export type UploadCompression = 'xz' | 'zstd' | 'none';

export interface UploadOptions {
  readonly compression: UploadCompression;
  readonly storeDir?: string;
  readonly idleTimeoutMs?: number;
  readonly signal?: AbortSignal | undefined;
  /** Called as NAR bytes are read from the store (for progress). */
  readonly onNarBytes?: (bytes: number) => void;
  /** References not pushed because an upstream key signed them; sent so the server can verify that. */
  readonly upstreamReferences?: readonly LocalPathInfo[];
}

export interface UploadResult {
  readonly result: PathUploadResult;
  readonly narBytes: number;
  readonly compressedBytes: number;
}

/** The local store path does not match what the Nix database says about it. */
export class LocalPathError extends NicheError {
  constructor(message: string) {
    super('invalid', 'NAR_SIZE_MISMATCH', message);
  }
}

/** The header line of the upload body. */
export function uploadHeader(
  info: LocalPathInfo,
  compression: UploadCompression,
  upstreamReferences: readonly LocalPathInfo[] = [],
): PathUpload {
  return {
    storePath: info.path,
    narHash: info.narHash.toString(),
    narSize: info.narSize,
    references: info.references.map((reference) => reference.baseName),
    ...(info.deriver === undefined ? {} : { deriver: info.deriver }),
    signatures: [...info.signatures],
    ...(info.ca === undefined ? {} : { ca: info.ca }),
    compression,
    ...(upstreamReferences.length === 0
      ? {}
      : {
          upstreamReferences: upstreamReferences.map((reference) => ({
            storePath: reference.path,
            narHash: reference.narHash.toString(),
            narSize: reference.narSize,
            references: reference.references.map((inner) => inner.baseName),
            signatures: [...reference.signatures],
          })),
        }),
  };
}

/** Counts NAR bytes and refuses a NAR whose size differs from the registered one. */
class NarCounter extends Transform {
  bytes = 0;
  constructor(
    private readonly info: LocalPathInfo,
    private readonly onBytes: ((bytes: number) => void) | undefined,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    if (this.bytes > this.info.narSize) {
      callback(this.mismatch());
      return;
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    callback(this.bytes === this.info.narSize ? null : this.mismatch());
  }

  private mismatch(): LocalPathError {
    return new LocalPathError(
      `${this.info.path} does not match the Nix database (NAR size ${this.info.narSize}, read ${this.bytes}` +
        `${this.bytes > this.info.narSize ? '+' : ''}); check it with nix-store --verify --check-contents`,
    );
  }
}

/**
 * Paths whose NAR is at most this large are compressed in memory before they are sent (at most `jobs`
 * of them at once). Compressed, a NAR this size stays under the server's SMALL_UPLOAD_BYTES (256 KiB)
 * even if it does not compress at all.
 */
export const BUFFERED_NAR_BYTES = 192 * 1024;

export async function uploadPath(
  client: ApiClient,
  cache: string,
  info: LocalPathInfo,
  options: UploadOptions,
): Promise<UploadResult> {
  const header = Buffer.from(
    `${JSON.stringify(uploadHeader(info, options.compression, options.upstreamReferences))}\n`,
    'utf8',
  );
  let narBytes = 0;
  let compressedBytes = 0;
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  async function* compressedNar(): AsyncGenerator<Buffer> {
    const counter = new NarCounter(info, options.onNarBytes);
    const compressed = pipeline(
      narFromPath(info.storePath.toString(storeDir)),
      counter,
      createCompressor(options.compression),
      () => undefined, // errors surface through the iteration below
    );
    for await (const chunk of compressed) {
      const bytes = chunk as Buffer;
      compressedBytes += bytes.length;
      yield bytes;
    }
    narBytes = counter.bytes;
  }
  // A small path is compressed in memory first and sent with its length, which lets the server read it
  // whole and check it there (src/cache/nar-upload.ts): fewer trips between its threads. A larger one
  // streams, chunked, as it is compressed.
  let body: AsyncIterable<Uint8Array>;
  let contentLength: number | undefined;
  if (info.narSize <= BUFFERED_NAR_BYTES) {
    const parts: Buffer[] = [header];
    for await (const chunk of compressedNar()) parts.push(chunk);
    const whole = Buffer.concat(parts);
    body = Readable.from([whole], { objectMode: false });
    contentLength = whole.length;
  } else {
    body = (async function* () {
      yield header;
      yield* compressedNar();
    })();
  }
  const result = await client.putStream(
    `/caches/${encodeURIComponent(cache)}/paths/${info.storePath.hash}`,
    body,
    UPLOAD_CONTENT_TYPE,
    pathUploadResultSchema,
    {
      ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
      ...(contentLength === undefined ? {} : { contentLength }),
      signal: options.signal,
    },
  );
  return { result, narBytes, compressedBytes };
}
