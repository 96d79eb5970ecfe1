// Compression bombs, for the decoder tests and the bomb benchmark: a NAR that declares one huge regular
// file of zeros, run through the real compressors (the xz, zstd and bzip2 CLIs; brotli from node:zlib).
// A few KiB that decode to hundreds of MiB, made in a second or two instead of being committed.
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import type { Compression } from '../../src/nix/compression.js';

function narString(text: string): Buffer {
  const bytes = Buffer.from(text);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(bytes.length));
  return Buffer.concat([length, bytes, Buffer.alloc((8 - (bytes.length % 8)) % 8)]);
}

/** The first bytes of a NAR holding one regular file of `size` bytes (its contents follow). */
export function narFileHeader(size: number): Buffer {
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(size));
  return Buffer.concat(['nix-archive-1', '(', 'type', 'regular', 'contents'].map(narString).concat(length));
}

const ZEROS = Buffer.alloc(1 << 20);

/** `narBytes` bytes of a valid NAR prefix: a file of 1 TiB whose contents are zeros. */
export function bombNar(narBytes: number): Readable {
  function* chunks(): Generator<Buffer> {
    const header = narFileHeader(2 ** 40);
    yield header;
    for (let left = narBytes - header.length; left > 0; left -= ZEROS.length) {
      yield left >= ZEROS.length ? ZEROS : ZEROS.subarray(0, left);
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** Runs `command` with `input` on stdin and returns its stdout. */
export async function filter(
  command: string,
  args: readonly string[],
  input: Readable | Buffer,
): Promise<Buffer> {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(' ')} failed (${code ?? signal})`));
    });
  });
  const source = Buffer.isBuffer(input) ? Readable.from([input]) : input;
  const [output] = await Promise.all([buffer(child.stdout), pipeline(source, child.stdin), exited]);
  return output;
}

/** The command line of the system compressor for each compression (brotli: none, see `compressWith`). */
export const COMPRESSOR_CLI: Readonly<Record<'xz' | 'zstd' | 'bzip2', readonly [string, ...string[]]>> = {
  xz: ['xz', '-T1', '-c'],
  zstd: ['zstd', '-q', '-c'],
  bzip2: ['bzip2', '-c'],
};

/** `input` compressed by the system's own compressor (node:zlib for brotli), with extra CLI flags. */
export async function compressWith(
  compression: Exclude<Compression, 'none'>,
  input: Readable | Buffer,
  flags: readonly string[] = [],
): Promise<Buffer> {
  if (compression === 'br') {
    const source = Buffer.isBuffer(input) ? Readable.from([input]) : input;
    const quality = Number(flags[0] ?? zlib.constants.BROTLI_DEFAULT_QUALITY);
    return buffer(
      source.pipe(zlib.createBrotliCompress({ params: { [zlib.constants.BROTLI_PARAM_QUALITY]: quality } })),
    );
  }
  const [command, ...args] = COMPRESSOR_CLI[compression];
  return filter(command, [...args, ...flags], input);
}

/**
 * A bomb: `narBytes` of NAR (mostly zeros) compressed. The default levels are the fast ones; the bench
 * passes the strongest (largest dictionary or window) to make the decoders' memory as large as it gets.
 */
export function compressionBomb(
  compression: Exclude<Compression, 'none'>,
  narBytes: number,
  flags: readonly string[] = compression === 'xz' ? ['-0'] : compression === 'br' ? ['5'] : [],
): Promise<Buffer> {
  return compressWith(compression, bombNar(narBytes), flags);
}
