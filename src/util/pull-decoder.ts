// A decompressing stream that decodes only when its consumer asks for data, one bounded step at a time.
// Uploads are hostile input: a few hundred bytes of a compression bomb expand to gigabytes, and a decoder
// that turns each input chunk into all of its output (lzma-native, zstd-napi's DecompressStream) or that
// ignores back-pressure (unbzip2-stream) holds all of it in memory before any size limit sees a byte.
// Here a codec step decodes into an output buffer of at most STEP_OUTPUT bytes from at most STEP_INPUT
// bytes of input, and the next step runs only when the readable side wants more. So, whatever the input:
//   - buffered output is bounded by the readable high-water mark plus one step;
//   - an input chunk is held (and its write left unacknowledged) until decoded, so upstream waits too;
//   - destroying the stream (a size limit was passed) frees the codec at once, between two steps;
//   - steps run off the event loop (src/util/decoder-codecs.ts), one at a time.
import { Duplex } from 'node:stream';

/** Output bytes one step may produce: each step's work is proportional to it. */
export const STEP_OUTPUT = 256 * 1024;
/** Input bytes handed to one step. */
const STEP_INPUT = 256 * 1024;
/** A fresh output buffer is taken when less than this is left in the current one. */
const MIN_OUTPUT_SPACE = 32 * 1024;
/** Steps in a row without progress before the codec is declared stuck (a bug, not bad input). */
const MAX_IDLE_STEPS = 4;
const EMPTY = Buffer.alloc(0);

export interface StepResult {
  /** Input bytes used. */
  readonly consumed: number;
  /** Output bytes written at the start of `output`. */
  readonly produced: number;
  /** The data ended cleanly (only reported when finishing). */
  readonly ended: boolean;
}

/** Malformed compressed data; `code` says how (the message is short: callers name the file and format). */
export class DecodeError extends Error {
  readonly code: 'TRUNCATED' | 'CORRUPT' | 'FORMAT' | 'OPTIONS' | 'MEMLIMIT';

  constructor(code: DecodeError['code'], message: string) {
    super(message);
    this.name = 'DecodeError';
    this.code = code;
  }
}

/** One decoder state machine. A codec runs one step at a time; a step rejects with a DecodeError. */
export interface DecoderCodec {
  /**
   * Decodes from `input` into `output` until `output` is full, `input` is used up, or the data ends.
   * `finish` says no input follows this step's (the stream finishes with an empty `input`, decodeBuffer
   * with the last of it). Neither buffer may be touched until the step is over.
   */
  step(input: Buffer, output: Buffer, finish: boolean): Promise<StepResult>;
  /** Frees the codec's memory; called once, never during a step. */
  close(): void;
}

export class PullDecoder extends Duplex {
  readonly #codec: DecoderCodec;
  #closed = false;
  /** The chunk being decoded, and the write callback that asks for the next one once it is used up. */
  #input: Buffer | undefined;
  #inputOffset = 0;
  #inputDone: ((error?: Error | null) => void) | undefined;
  /** The writable side has ended: the remaining steps finish the data. */
  #ending = false;
  /** The last step filled its output: the codec may hold more output without further input. */
  #moreOutput = false;
  /** The consumer asked for data (`_read`) and has not refused any since (`push` returned false). */
  #wanted = false;
  #stepping = false;
  #pumping = false;
  #idleSteps = 0;
  #output: Buffer | undefined;
  #outputOffset = 0;

  constructor(codec: DecoderCodec) {
    super({ readableHighWaterMark: STEP_OUTPUT, allowHalfOpen: true });
    this.#codec = codec;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (chunk.length === 0) {
      callback();
      return;
    }
    this.#input = chunk;
    this.#inputOffset = 0;
    this.#inputDone = callback;
    this.#pump();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#ending = true;
    callback();
    this.#pump();
  }

  override _read(): void {
    this.#wanted = true;
    this.#pump();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // A step in flight keeps its buffers; the codec is freed when it returns.
    if (!this.#stepping) this.#close();
    this.#input = undefined;
    this.#inputDone = undefined;
    this.#output = undefined;
    callback(error);
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#codec.close();
  }

  /** Runs steps while the consumer wants data and there is something to decode. */
  #pump(): void {
    if (this.#pumping) return; // re-entered from a write callback below: the loop sees the new input
    this.#pumping = true;
    try {
      while (this.#wanted && !this.#stepping && !this.#closed && !this.destroyed) {
        const input = this.#input;
        if (input !== undefined && this.#inputOffset === input.length) {
          // Used up: let the writable side hand over the next chunk (possibly synchronously).
          const done = this.#inputDone;
          this.#input = undefined;
          this.#inputDone = undefined;
          done?.();
          continue;
        }
        if (input === undefined && !this.#ending && !this.#moreOutput) return; // waits for input
        const slice =
          input === undefined ? EMPTY : input.subarray(this.#inputOffset, this.#inputOffset + STEP_INPUT);
        const finish = input === undefined && this.#ending;
        const output = this.#outputSpace();
        this.#stepping = true;
        this.#codec.step(slice, output, finish).then(
          (result) => {
            this.#stepping = false;
            if (this.destroyed) {
              this.#close();
              return;
            }
            this.#afterStep(result, output);
            this.#pump();
          },
          (error: unknown) => {
            this.#stepping = false;
            this.#fail(error);
          },
        );
        return;
      }
    } finally {
      this.#pumping = false;
    }
  }

  #afterStep(result: StepResult, output: Buffer): void {
    const { consumed, produced, ended } = result;
    this.#inputOffset += consumed;
    this.#moreOutput = produced === output.length;
    this.#idleSteps = consumed === 0 && produced === 0 && !ended ? this.#idleSteps + 1 : 0;
    if (this.#idleSteps >= MAX_IDLE_STEPS) {
      this.#fail(new Error('the decoder made no progress'));
      return;
    }
    if (produced > 0) {
      this.#outputOffset += produced;
      if (!this.push(output.subarray(0, produced))) this.#wanted = false;
    }
    if (ended) {
      this.#close();
      this.push(null);
    }
  }

  /**
   * Where the next step writes: the unused end of the current buffer (the bytes before it were pushed and
   * are never written again), or a fresh buffer. Small outputs thus share buffers instead of each pinning
   * a whole one, so retained memory stays proportional to the buffered bytes.
   */
  #outputSpace(): Buffer {
    if (this.#output === undefined || this.#output.length - this.#outputOffset < MIN_OUTPUT_SPACE) {
      this.#output = Buffer.allocUnsafeSlow(STEP_OUTPUT);
      this.#outputOffset = 0;
    }
    return this.#output.subarray(this.#outputOffset);
  }

  #fail(error: unknown): void {
    this.#close();
    this.destroy(error instanceof Error ? error : new Error(String(error)));
  }
}

/**
 * Decodes the whole of `input`, already in memory, handing each step's output to `sink` (which must be
 * done with it when it returns: the same buffer receives the next step's output). The steps are bounded
 * as the stream's (at most STEP_INPUT in, at most `output.length` out, on the thread pool), without its
 * buffering: for a small upload the stream's hand-overs cost more than the decoding, and a file of at
 * most STEP_INPUT whose output fits `output` takes one step. `sink` bounds the work by throwing (a size
 * limit); so do `signal` and a codec that makes no progress. Frees the codec.
 */
export async function decodeBuffer(
  codec: DecoderCodec,
  input: Buffer,
  output: Buffer,
  sink: (chunk: Buffer) => void,
  signal?: AbortSignal,
): Promise<void> {
  try {
    let offset = 0;
    let idleSteps = 0;
    for (;;) {
      signal?.throwIfAborted();
      // The step that hands over the last input also finishes: a small file is decoded in one step where
      // the stream takes two (its input and its end arrive separately). Each trip to the thread pool
      // wakes a pool thread and then the event loop again.
      const slice = input.subarray(offset, offset + STEP_INPUT);
      const finish = offset + slice.length === input.length;
      const { consumed, produced, ended } = await codec.step(slice, output, finish);
      offset += consumed;
      idleSteps = consumed === 0 && produced === 0 && !ended ? idleSteps + 1 : 0;
      if (idleSteps >= MAX_IDLE_STEPS) throw new Error('the decoder made no progress');
      if (produced > 0) sink(output.subarray(0, produced));
      if (ended) return;
    }
  } finally {
    codec.close();
  }
}
