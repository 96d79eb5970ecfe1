// The codecs behind PullDecoder (src/util/pull-decoder.ts): niche's own Node-API addon
// (native/src/decoders.c) over the system's liblzma, libzstd and libbz2, each decoding one bounded step
// at a time on libuv's thread pool into a buffer of the caller's size, and freeing its memory the moment
// the stream closes. Why not a package from npm: lzma-native and zstd-napi's streams return all output of
// an input chunk at once (zstd-napi's low-level binding can fill a fixed buffer, but it decodes on the
// event loop and frees a context only when it is garbage-collected); unbzip2-stream decodes on the event
// loop without back-pressure; xz-decompress (WASM) lets one stream in the process decode at a time (a
// global lock), on the event loop, at half of liblzma's speed.
import { createRequire } from 'node:module';
import { DecodeError, type DecoderCodec, type StepResult } from './pull-decoder.js';

export type DecoderKind = 'xz' | 'zstd' | 'bzip2';

/**
 * liblzma's memory limit for one xz stream. `xz -9` (the largest preset, 64 MiB dictionary) needs 65 MiB
 * to decode; Nix writes nothing larger. Memory is touched only as output is produced.
 */
export const XZ_MEMORY_LIMIT = 80 * 1024 * 1024;
/**
 * The largest zstd window: 128 MiB, zstd's own default limit, what `zstd -d` and Nix accept (level 22
 * uses it). Larger windows (`--long=31`) are refused.
 */
export const ZSTD_WINDOW_LIMIT = 128 * 1024 * 1024;
/** libbz2 needs about 3.7 MB for the largest blocks (900 kB); this only caps the addon's allocations. */
const BZIP2_MEMORY_LIMIT = 8 * 1024 * 1024;

const MEMORY_LIMITS: Readonly<Record<DecoderKind, number>> = {
  xz: XZ_MEMORY_LIMIT,
  zstd: ZSTD_WINDOW_LIMIT,
  bzip2: BZIP2_MEMORY_LIMIT,
};

type NativeError = Error & { readonly code?: string };

interface NativeDecoder {
  step(
    input: Uint8Array,
    output: Uint8Array,
    finish: boolean,
    callback: (error: NativeError | null, consumed: number, produced: number, ended: boolean) => void,
  ): void;
  close(): void;
  memoryUsage(): number;
}

interface NativeModule {
  readonly Decoder: new (kind: DecoderKind, memoryLimit: number) => NativeDecoder;
}

const native = loadNative();

function loadNative(): NativeModule {
  // The same relative path from src/util/ (tsx) and dist/util/ (compiled).
  const path = '../../native/build/Release/niche_decoders.node';
  try {
    return createRequire(import.meta.url)(path) as NativeModule;
  } catch (error) {
    throw new Error(
      `niche's native decoders (${path}) are not built: run \`npm ci\` (it needs a C compiler and ` +
        `Debian's liblzma-dev, libzstd-dev and libbz2-dev): ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
}

const DECODE_ERROR_CODES = new Set<string>(['TRUNCATED', 'CORRUPT', 'FORMAT', 'OPTIONS', 'MEMLIMIT']);

function decodeError(error: NativeError): Error {
  const code = error.code;
  if (code !== undefined && DECODE_ERROR_CODES.has(code)) {
    return new DecodeError(code as DecodeError['code'], error.message);
  }
  return error;
}

/** One decoder of the addon; one step at a time on the thread pool. */
class NativeCodec implements DecoderCodec {
  readonly #decoder: NativeDecoder;

  constructor(kind: DecoderKind) {
    this.#decoder = new native.Decoder(kind, MEMORY_LIMITS[kind]);
  }

  step(input: Buffer, output: Buffer, finish: boolean): Promise<StepResult> {
    return new Promise((resolve, reject) => {
      this.#decoder.step(input, output, finish, (error, consumed, produced, ended) => {
        if (error === null) resolve({ consumed, produced, ended });
        else reject(decodeError(error));
      });
    });
  }

  close(): void {
    this.#decoder.close();
  }

  /** Bytes the decoder's state holds (its dictionary or block buffers); for tests. */
  memoryUsage(): number {
    return this.#decoder.memoryUsage();
  }
}

export function createDecoderCodec(kind: DecoderKind): DecoderCodec & { memoryUsage(): number } {
  return new NativeCodec(kind);
}
