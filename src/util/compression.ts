// Streaming (de)compressors for the NAR compressions niche accepts. Each call returns a fresh Transform;
// they are the only place that knows which library implements which algorithm.
//   decoding: xz, bzip2, zstd  PullDecoder (src/util/pull-decoder.ts): bounded steps driven by demand
//             br               node:zlib (bounded the same way: fixed-size output chunks, back-pressure)
//   encoding: xz  lzma-native   zstd  zstd-napi   br  node:zlib   (niche never writes bzip2)
// Decoders see hostile input (uploads, imports): whatever it is, their memory stays bounded, they decode
// only as fast as their consumer reads, and no step blocks the event loop for long.
import { PassThrough, Readable, type Duplex, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import lzma from 'lzma-native';
import { CompressStream } from 'zstd-napi';
import type { Compression } from '../nix/compression.js';
import { createDecoderCodec } from './decoder-codecs.js';
import { smallReadPool } from './buffer-pool.js';
import { decodeBuffer, PullDecoder, STEP_OUTPUT } from './pull-decoder.js';
import { sinkWritable } from './sink-writable.js';

/** Large enough to be efficient, small enough that a stream's buffered output stays bounded. */
const CHUNK = 1 << 20;

/**
 * Decodes a whole compressed file already in memory (a small upload), handing each piece of output to
 * `sink`, which must be done with it when it returns. xz, zstd and bzip2 run their codec's steps directly
 * (decodeBuffer) into one 64 KiB buffer of smallReadPool; `none` hands over the input itself; br goes
 * through its stream. Bounded as the streams are: `sink` throwing (a size limit) stops the decoding.
 */
export async function decompressBuffer(
  compression: Compression,
  input: Buffer,
  sink: (chunk: Buffer) => void,
  signal?: AbortSignal,
): Promise<void> {
  switch (compression) {
    case 'none':
      if (input.length > 0) sink(input);
      return;
    case 'xz':
    case 'zstd':
    case 'bzip2': {
      const output = smallReadPool.take();
      try {
        await decodeBuffer(createDecoderCodec(compression), input, output, sink, signal);
      } finally {
        smallReadPool.give(output);
      }
      return;
    }
    case 'br':
      await pipeline(
        Readable.from([input], { objectMode: false }),
        createDecompressor(compression),
        sinkWritable(sink),
        ...(signal === undefined ? [] : [{ signal }]),
      );
  }
}

export function createDecompressor(compression: Compression): Duplex {
  switch (compression) {
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
    case 'xz':
    case 'zstd':
    case 'bzip2':
      return new PullDecoder(createDecoderCodec(compression));
    case 'br':
      // Each step runs on the thread pool and writes at most one chunk; the next waits for demand.
      return zlib.createBrotliDecompress({ chunkSize: STEP_OUTPUT });
  }
}

export interface CompressOptions {
  /** Algorithm-specific level; undefined = the library default Nix also uses. */
  readonly level?: number;
}

export function createCompressor(
  compression: Exclude<Compression, 'bzip2'>,
  options: CompressOptions = {},
): Transform {
  switch (compression) {
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
    case 'xz':
      return lzma.createCompressor({ preset: options.level ?? 6, threads: 1 });
    case 'zstd': {
      const stream = new CompressStream(
        options.level === undefined ? {} : { compressionLevel: options.level },
      );
      return stream;
    }
    case 'br':
      return zlib.createBrotliCompress({
        chunkSize: CHUNK,
        params: options.level === undefined ? {} : { [zlib.constants.BROTLI_PARAM_QUALITY]: options.level },
      });
  }
}

/**
 * The `Content-Encoding`s niche decodes on uploads: what Nix 2.32+ sends with `narinfo-compression`,
 * `ls-compression` and `log-compression` (any of its compressions that HTTP or niche knows).
 */
export type ContentCoding = 'gzip' | 'deflate' | 'br' | 'zstd' | 'xz' | 'bzip2';

const CONTENT_CODINGS: Readonly<Record<string, ContentCoding>> = {
  gzip: 'gzip',
  'x-gzip': 'gzip',
  deflate: 'deflate',
  br: 'br',
  zstd: 'zstd',
  xz: 'xz',
  bzip2: 'bzip2',
};

/** The coding a `Content-Encoding` token names, 'identity', or undefined if niche cannot decode it. */
export function parseContentCoding(token: string): ContentCoding | 'identity' | undefined {
  const name = token.trim().toLowerCase();
  if (name === 'identity' || name === 'none') return 'identity';
  return Object.hasOwn(CONTENT_CODINGS, name) ? CONTENT_CODINGS[name] : undefined;
}

/** A decoder for an upload's `Content-Encoding`, as bounded as the NAR decompressors. */
export function createContentDecoder(coding: ContentCoding): Duplex {
  switch (coding) {
    case 'gzip':
      return zlib.createGunzip({ chunkSize: STEP_OUTPUT });
    case 'deflate':
      return zlib.createInflate({ chunkSize: STEP_OUTPUT });
    case 'br':
    case 'zstd':
    case 'xz':
    case 'bzip2':
      return createDecompressor(coding);
  }
}
