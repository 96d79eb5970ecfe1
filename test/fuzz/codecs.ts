// Compression for the fuzz test: compressing with niche's own compressors (bzip2, which niche never
// writes, with the bzip2 program), and decompressing with other decoders than the server's (the xz, zstd
// and bzip2 programs; node:zlib for brotli), bounded in output, to say what a (mutated) file really holds.
import { spawn, spawnSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import zlib from 'node:zlib';
import type { Compression } from '../../src/nix/compression.js';
import { createCompressor } from '../../src/util/compression.js';

const PROGRAMS = ['xz', 'zstd', 'bzip2'];

/** node:test options: skipped with a reason when a program is missing, except in CI, where it fails. */
export function codecTestOptions(): { skip?: string } {
  const missing = PROGRAMS.filter(
    (program) => spawnSync(program, ['--version'], { stdio: 'ignore' }).status !== 0,
  );
  if (missing.length === 0 || process.env.CI === 'true') return {};
  return { skip: `${missing.join(', ')} not installed (required when CI=true; .ci/run installs them)` };
}

/** Runs `command` on `input`; its stdout, or undefined if it failed or wrote more than `maxOutput`. */
function filter(
  command: string,
  args: readonly string[],
  input: Buffer,
  maxOutput: number,
): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    child.stdout.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxOutput) {
        tooLarge = true;
        child.kill('SIGKILL');
        return;
      }
      chunks.push(chunk);
    });
    child.stdin.on('error', () => undefined); // the program may stop reading early
    child.on('error', reject);
    child.on('close', (code) => {
      resolve(code === 0 && !tooLarge ? Buffer.concat(chunks) : undefined);
    });
    child.stdin.end(input);
  });
}

export async function compress(data: Buffer, compression: Compression, level?: number): Promise<Buffer> {
  if (compression === 'bzip2') {
    const out = await filter('bzip2', ['-c', `-${level ?? 9}`], data, Number.MAX_SAFE_INTEGER);
    if (out === undefined) throw new Error('bzip2 failed');
    return out;
  }
  return buffer(
    Readable.from([data]).pipe(createCompressor(compression, level === undefined ? {} : { level })),
  );
}

/** What `file` decompresses to, or undefined if it is not valid `compression` data (or is over `maxOutput`). */
export async function decompressIndependently(
  file: Buffer,
  compression: Compression,
  maxOutput: number,
): Promise<Buffer | undefined> {
  switch (compression) {
    case 'none':
      return file;
    case 'xz':
      // --single-stream: as liblzma's stream decoder, one .xz stream and nothing after it.
      return filter('xz', ['-dc', '--single-stream'], file, maxOutput);
    case 'zstd':
      return filter('zstd', ['-dc', '--no-progress'], file, maxOutput);
    case 'bzip2':
      return filter('bzip2', ['-dc'], file, maxOutput);
    case 'br':
      try {
        return zlib.brotliDecompressSync(file, { maxOutputLength: maxOutput });
      } catch {
        return undefined;
      }
  }
}
