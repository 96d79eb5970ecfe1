// Receives one NAR file upload and proves it before anything becomes visible. The body is streamed once:
// every chunk goes to the blob store (which hashes it and checks the FileHash named by the URL) and to a
// decompressor feeding the NarHash/NarSize hasher and the NAR validator. The blob store only sees the end
// of its input after the NAR has been fully validated, so an invalid NAR is never committed.
// Memory is bounded by the stream high-water marks, whatever the NAR size. A small upload whose length is
// known (SMALL_UPLOAD_BYTES) is read into memory instead and proved there before it is written
// (receiveSmallNar), with the same checks.
import { createHash } from 'node:crypto';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InvalidInputError, NicheError, TooLargeError } from '../errors.js';
import type { Compression } from '../nix/compression.js';
import { Hash } from '../nix/hash.js';
import { NarParser } from '../nix/nar-parser.js';
import { encodeNix32 } from '../nix/nix32.js';
import type { BlobStore } from '../storage/blob-store.js';
import { BlobCheckError } from '../storage/blob-check-error.js';
import { createDecompressor, decompressBuffer } from '../util/compression.js';
import { readChunk } from '../util/read-chunk.js';
import { sinkWritable } from '../util/sink-writable.js';

const CHUNK = 1 << 20;
/**
 * Uploads up to this size whose length is known in advance are read into memory and verified there
 * (receiveSmallNar): at most the upload slots (limits.maxUploads) times this much, less than the
 * streaming path's buffers for one upload.
 */
export const SMALL_UPLOAD_BYTES = 256 * 1024;

export interface ReceiveNarOptions {
  readonly body: Readable;
  readonly compression: Compression;
  readonly blobs: BlobStore;
  readonly blobKey: string;
  /** The FileHash the URL names (`nar/<nix32>.nar…`), if known in advance; the body must hash to it. */
  readonly expectedFileHash: Hash | undefined;
  /** The NarHash/NarSize the client declared, if known in advance; checked before the blob commits. */
  readonly expectedNar?: { readonly hash: Hash; readonly size: number };
  /** The Content-Length, if the client sent one. */
  readonly contentLength: number | undefined;
  readonly maxFileSize: number;
  readonly maxNarSize: number;
  readonly signal?: AbortSignal;
}

export interface ReceivedNar {
  readonly fileHash: Hash;
  readonly fileSize: number;
  readonly narHash: Hash;
  readonly narSize: number;
}

/**
 * Hashes, counts and validates the decompressed NAR bytes, as they come. It refuses the NAR as soon as it
 * passes the size limit or the size the client declared, so a compression bomb is decoded no further than
 * that. Fed from a stream (sinkWritable) or from a whole file decoded in memory.
 */
class NarVerifier {
  readonly #hash = createHash('sha256');
  readonly #parser = new NarParser();
  readonly #maxSize: number;
  readonly #declaredSize: number | undefined;
  size = 0;
  digest: Buffer | undefined;

  constructor(maxSize: number, declaredSize: number | undefined) {
    this.#maxSize = maxSize;
    this.#declaredSize = declaredSize;
  }

  /** Hashes and parses `chunk` before it returns (its memory may then be reused). */
  add(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.size > this.#maxSize)
      throw new TooLargeError(`NAR is larger than the limit of ${this.#maxSize} bytes`);
    if (this.#declaredSize !== undefined && this.size > this.#declaredSize) {
      throw new InvalidInputError(
        'NAR_SIZE_MISMATCH',
        `the uploaded NAR is larger than the ${this.#declaredSize} bytes narSize says`,
      );
    }
    this.#hash.update(chunk);
    this.#parser.update(chunk);
  }

  /** At the end of the NAR. */
  finish(): void {
    this.#parser.end();
    this.digest = this.#hash.digest();
  }
}

/**
 * Writes with back-pressure. Stream errors are deliberately not listened for here: they surface, already
 * translated, through `failure`, which rejects whenever either consumer fails.
 */
async function write(stream: Writable, chunk: Buffer, failure: Promise<never>): Promise<void> {
  if (stream.write(chunk)) return;
  let onDrain = (): void => undefined;
  const drained = new Promise<void>((resolve) => {
    onDrain = resolve;
    stream.once('drain', onDrain);
  });
  try {
    await Promise.race([drained, failure]);
  } finally {
    stream.off('drain', onDrain);
  }
}

function decompressionError(compression: Compression, error: unknown): NicheError {
  if (error instanceof NicheError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new InvalidInputError(
    'COMPRESSION_INVALID',
    `the NAR file is not valid ${compression} data: ${reason}`,
    { cause: error },
  );
}

/** The NarHash of a NAR the verifier has read to its end, once it matches what the client declared. */
function verifiedNarHash(verifier: NarVerifier, expectedNar: ReceiveNarOptions['expectedNar']): Hash {
  const digest = verifier.digest;
  if (digest === undefined) throw new Error('NAR verifier finished without a digest');
  const narHash = new Hash('sha256', digest);
  if (expectedNar !== undefined && expectedNar.size !== verifier.size) {
    throw new InvalidInputError(
      'NAR_SIZE_MISMATCH',
      `the uploaded NAR has ${verifier.size} bytes, but narSize says ${expectedNar.size}`,
    );
  }
  if (expectedNar !== undefined && !expectedNar.hash.equals(narHash)) {
    throw new InvalidInputError(
      'NAR_HASH_MISMATCH',
      `the uploaded NAR hashes to ${narHash.toString()}, but narHash says ${expectedNar.hash.toString()}`,
    );
  }
  return narHash;
}

/**
 * A small upload whose length is known: read into one buffer (at most SMALL_UPLOAD_BYTES), its FileHash
 * checked before anything is decoded, the NAR decoded and verified from the buffer, then the blob written
 * in one `putBuffer`. The streaming path's two pass-through streams, its feeding loop and its blob
 * stream cost a small NAR more than the NAR itself (docs/bench-push.md); nothing here is held longer or
 * in more copies than there: the buffer is the one copy of the body.
 */
async function receiveSmallNar(options: ReceiveNarOptions, contentLength: number): Promise<ReceivedNar> {
  const { body, compression } = options;
  const file = Buffer.allocUnsafe(contentLength);
  let fileSize = 0;
  try {
    for (;;) {
      const chunk = await readChunk(body, options.signal);
      if (chunk === null) break;
      if (fileSize + chunk.length > contentLength) {
        throw new InvalidInputError(
          'UPLOAD_INCOMPLETE',
          `the upload is longer than the ${contentLength} bytes its length says`,
        );
      }
      chunk.copy(file, fileSize);
      fileSize += chunk.length;
    }
    if (fileSize !== contentLength) {
      throw new InvalidInputError(
        'UPLOAD_INCOMPLETE',
        `upload ended after ${fileSize} of ${contentLength} bytes`,
      );
    }
    // Checked before decoding: a body that is not the file its URL names costs no decoding (the put below
    // hashes it again, about 10 µs for a 25 KiB file, to keep one definition of its checks).
    const fileHash = createHash('sha256').update(file).digest();
    const expected = options.expectedFileHash;
    if (expected !== undefined && !fileHash.equals(expected.bytes)) {
      throw new BlobCheckError('sha256', expected.bytes.toString('hex'), fileHash.toString('hex'));
    }
    const verifier = new NarVerifier(options.maxNarSize, options.expectedNar?.size);
    try {
      await decompressBuffer(
        compression,
        file,
        (chunk) => {
          verifier.add(chunk);
        },
        options.signal,
      );
      verifier.finish();
    } catch (error) {
      options.signal?.throwIfAborted();
      throw decompressionError(compression, error);
    }
    const narHash = verifiedNarHash(verifier, options.expectedNar);
    await options.blobs.putBuffer(options.blobKey, file, {
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      expectedSha256: fileHash,
      expectedSize: contentLength,
    });
    return { fileHash: new Hash('sha256', fileHash), fileSize, narHash, narSize: verifier.size };
  } catch (error) {
    throw translate(error, options.expectedFileHash);
  }
}

export async function receiveNar(options: ReceiveNarOptions): Promise<ReceivedNar> {
  const { body, compression, contentLength, maxFileSize } = options;
  if (contentLength !== undefined && contentLength > maxFileSize) {
    throw new TooLargeError(`NAR file of ${contentLength} bytes exceeds the limit of ${maxFileSize} bytes`);
  }
  if (contentLength !== undefined && contentLength <= SMALL_UPLOAD_BYTES) {
    return receiveSmallNar(options, contentLength);
  }
  const abort = new AbortController();
  const onOuterAbort = (): void => {
    abort.abort(options.signal?.reason);
  };
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });

  const blobInput = new PassThrough({ highWaterMark: CHUNK });
  const narInput = new PassThrough({ highWaterMark: CHUNK });
  const verifier = new NarVerifier(options.maxNarSize, options.expectedNar?.size);
  // These are internal streams whose failures surface through narDone/blobDone; a consumer that destroys
  // one with an error after its promise settled must not turn into an unhandled 'error' event.
  for (const stream of [blobInput, narInput]) stream.on('error', () => undefined);

  const narDone = pipeline(
    narInput,
    createDecompressor(compression),
    sinkWritable(
      (chunk) => {
        verifier.add(chunk);
      },
      {
        final: () => {
          verifier.finish();
        },
        highWaterMark: CHUNK,
      },
    ),
    { signal: abort.signal },
  );
  const blobDone = options.blobs.put(options.blobKey, blobInput, {
    signal: abort.signal,
    ...(options.expectedFileHash === undefined ? {} : { expectedSha256: options.expectedFileHash.bytes }),
    maxSize: maxFileSize,
    ...(contentLength === undefined ? {} : { expectedSize: contentLength }),
  });
  // Whichever side fails first stops the feeding loop, even while it waits for the client to send more
  // (a client may send part of a body and wait for the answer); both promises are always awaited below.
  const failed = new AbortController();
  const failure = new Promise<never>((_resolve, reject) => {
    narDone.catch((error: unknown) => {
      const translated = decompressionError(compression, error);
      failed.abort(translated);
      reject(translated);
    });
    blobDone.catch((error: unknown) => {
      failed.abort(error);
    });
    blobDone.catch(reject);
  });
  failure.catch(() => undefined);

  let fileSize = 0;
  try {
    // The body is read, never destroyed: the HTTP layer still has to answer on this connection.
    for (;;) {
      const chunk = await readChunk(body, failed.signal);
      if (chunk === null) break;
      fileSize += chunk.length;
      if (fileSize > maxFileSize) {
        throw new TooLargeError(`NAR file exceeds the limit of ${maxFileSize} bytes`);
      }
      await write(narInput, chunk, failure);
      await write(blobInput, chunk, failure);
    }
    if (contentLength !== undefined && fileSize !== contentLength) {
      throw new InvalidInputError(
        'UPLOAD_INCOMPLETE',
        `upload ended after ${fileSize} of ${contentLength} bytes`,
      );
    }
    narInput.end();
    await narDone.catch((error: unknown) => {
      throw decompressionError(compression, error);
    });
    const narHash = verifiedNarHash(verifier, options.expectedNar);
    blobInput.end();
    const stored = await Promise.race([blobDone, failure]);
    return {
      fileHash: new Hash('sha256', stored.sha256),
      fileSize: stored.size,
      narHash,
      narSize: verifier.size,
    };
  } catch (error) {
    abort.abort(error);
    blobInput.destroy();
    narInput.destroy();
    await Promise.allSettled([narDone, blobDone]);
    throw translate(error, options.expectedFileHash);
  } finally {
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
}

function translate(error: unknown, expected: Hash | undefined): unknown {
  if (error instanceof BlobCheckError) {
    if (error.check === 'sha256') {
      return new InvalidInputError(
        'FILE_HASH_MISMATCH',
        `the uploaded file hashes to sha256:${typeof error.actual === 'string' ? encodeNix32(Buffer.from(error.actual, 'hex')) : '?'}, ` +
          `but its URL names sha256:${expected?.toNix32() ?? '?'}`,
      );
    }
    if (error.check === 'max-size') return new TooLargeError(error.message);
    return new InvalidInputError('UPLOAD_INCOMPLETE', error.message);
  }
  if (error instanceof Error && 'code' in error && error.code === 'ECONNRESET') {
    return new InvalidInputError('UPLOAD_INCOMPLETE', 'the client closed the connection during the upload');
  }
  return error;
}
