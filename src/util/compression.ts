// Streaming (de)compressors for the NAR compressions niche accepts. Each call returns a fresh Transform;
// they are the only place that knows which library implements which algorithm.
//   xz    lzma-native (liblzma; Node has no xz)        zstd  zstd-napi (Node 20's zlib has no zstd)
//   bzip2 unbzip2-stream (decompression only; niche never writes bzip2)   br  node:zlib
import { PassThrough, type Transform } from 'node:stream';
import zlib from 'node:zlib';
import lzma from 'lzma-native';
import unbzip2 from 'unbzip2-stream';
import { CompressStream, DecompressStream } from 'zstd-napi';
import type { Compression } from '../nix/compression.js';

/** Large enough to be efficient, small enough that a stream's buffered output stays bounded. */
const CHUNK = 1 << 20;

export interface DecompressOptions {
  /**
   * The input is known to be small (a few KiB): decode on the calling thread. liblzma's asynchronous mode
   * hands every chunk to a thread, which costs more than decoding a small NAR (about 1 ms per upload).
   */
  readonly small?: boolean;
}

/** Compressed inputs up to this size may be decoded with `small`: well under a millisecond of work. */
export const SMALL_COMPRESSED_INPUT = 64 * 1024;

export function createDecompressor(compression: Compression, options: DecompressOptions = {}): Transform {
  switch (compression) {
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
    case 'xz':
      // liblzma's default memory limit is unlimited; xz presets up to -9e need 64 MiB dictionaries.
      return lzma.createDecompressor({ memlimit: 512 * 1024 * 1024, synchronous: options.small === true });
    case 'zstd':
      // Default window limit (2^27 = 128 MiB) bounds memory; Nix's zstd output stays within it.
      return new DecompressStream();
    case 'bzip2':
      return unbzip2();
    case 'br':
      return zlib.createBrotliDecompress({ chunkSize: CHUNK });
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
