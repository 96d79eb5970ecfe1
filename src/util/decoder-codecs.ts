// The codecs behind PullDecoder (src/util/pull-decoder.ts): niche's own Node-API addon
// (native/src/decoders.c) over the system's liblzma, libzstd and libbz2, each decoding one bounded step
// at a time on libuv's thread pool into a buffer of the caller's size, and freeing its memory the moment
// the stream closes. Why not a package from npm: lzma-native and zstd-napi's streams return all output of
// an input chunk at once (zstd-napi's low-level binding can fill a fixed buffer, but it decodes on the
// event loop and frees a context only when it is garbage-collected); unbzip2-stream decodes on the event
// loop without back-pressure; xz-decompress (WASM) lets one stream in the process decode at a time (a
// global lock), on the event loop, at half of liblzma's speed.
import { availableParallelism } from 'node:os';
import { loadAddon } from './native-addon.js';
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

const native = loadAddon('niche_decoders', 'native decoders') as NativeModule;

const DECODE_ERROR_CODES = new Set<string>(['TRUNCATED', 'CORRUPT', 'FORMAT', 'OPTIONS', 'MEMLIMIT']);

function decodeError(error: NativeError): Error {
  const code = error.code;
  if (code !== undefined && DECODE_ERROR_CODES.has(code)) {
    return new DecodeError(code as DecodeError['code'], error.message);
  }
  return error;
}

/**
 * Decoding steps running at once in the process. Each decoder runs one step at a time, but many uploads
 * (or many attackers) could otherwise fill libuv's thread pool (4 threads) with decoding: file reads and
 * writes (NAR downloads, blob writes) would queue behind it, and on a small machine the event loop would
 * get a smaller share of the CPU. So decoding gets at most the cores but one, and never the whole pool;
 * waiting steps run in arrival order, which interleaves the uploads fairly.
 */
const MAX_RUNNING_STEPS = Math.max(1, Math.min(availableParallelism() - 1, 3));
let runningSteps = 0;
const waitingSteps: (() => void)[] = [];

/** Steps running and waiting for a slot now (for tests and metrics). */
export function decodingSteps(): {
  readonly running: number;
  readonly waiting: number;
  readonly max: number;
} {
  return { running: runningSteps, waiting: waitingSteps.length, max: MAX_RUNNING_STEPS };
}

function whenSlotFree(start: () => void): void {
  if (runningSteps < MAX_RUNNING_STEPS) {
    runningSteps++;
    start();
  } else {
    waitingSteps.push(start);
  }
}

function releaseSlot(): void {
  const next = waitingSteps.shift();
  if (next === undefined) runningSteps--;
  else next();
}

/** One decoder of the addon; one step at a time on the thread pool. */
class NativeCodec implements DecoderCodec {
  readonly #decoder: NativeDecoder;

  constructor(kind: DecoderKind) {
    this.#decoder = new native.Decoder(kind, MEMORY_LIMITS[kind]);
  }

  step(input: Buffer, output: Buffer, finish: boolean): Promise<StepResult> {
    return new Promise((resolve, reject) => {
      whenSlotFree(() => {
        try {
          this.#decoder.step(input, output, finish, (error, consumed, produced, ended) => {
            releaseSlot();
            if (error === null) resolve({ consumed, produced, ended });
            else reject(decodeError(error));
          });
        } catch (error) {
          releaseSlot();
          reject(error instanceof Error ? error : new Error(String(error)));
        }
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
