// What every backend's put does to the bytes on their way in: count and hash them, refuse a body as soon
// as it passes maxSize or expectedSize, and at the end check the size and SHA-256 the caller expected.
// One implementation, so the backends cannot disagree on what a check means.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BlobCheckError } from './blob-check-error.js';
import { assertValidBlobKey, type PutOptions, type PutResult } from './blob-store.js';

export class PutChecks {
  readonly #hash = createHash('sha256');
  readonly #options: PutOptions;
  size = 0;

  constructor(options: PutOptions) {
    this.#options = options;
  }

  /** Counts and hashes a chunk of the source; returns it as a Buffer. */
  add(chunk: unknown): Buffer {
    const bytes = asBuffer(chunk);
    this.size += bytes.length;
    const { maxSize, expectedSize } = this.#options;
    // Checked as bytes arrive, so an oversized body is refused without reading (or storing) the rest.
    if (maxSize !== undefined && this.size > maxSize)
      throw new BlobCheckError('max-size', maxSize, this.size);
    if (expectedSize !== undefined && this.size > expectedSize) {
      throw new BlobCheckError('size', expectedSize, this.size);
    }
    this.#hash.update(bytes);
    return bytes;
  }

  /** At the end of the source: the SHA-256 of everything added, once the expected size and hash hold. */
  finish(): Buffer {
    const digest = this.#hash.digest();
    const { expectedSize, expectedSha256 } = this.#options;
    if (expectedSize !== undefined && this.size !== expectedSize) {
      throw new BlobCheckError('size', expectedSize, this.size);
    }
    if (expectedSha256 !== undefined && !digest.equals(expectedSha256)) {
      throw new BlobCheckError('sha256', expectedSha256.toString('hex'), digest.toString('hex'));
    }
    return digest;
  }
}

/**
 * What every backend's `putBuffer` checks before it writes anything: a valid key, a signal not yet
 * aborted, and the bytes against the options. Returns what the put reports.
 */
export function checkBuffer(key: string, data: Uint8Array, options: PutOptions): PutResult {
  assertValidBlobKey(key);
  options.signal?.throwIfAborted();
  const checks = new PutChecks(options);
  checks.add(data);
  const sha256 = checks.finish();
  return { size: checks.size, sha256 };
}

function asBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError('a blob source must yield bytes (Buffer or Uint8Array), not strings or objects');
}

/**
 * What a put does when its signal aborts: fail the source with the abort's reason, which ends the put's
 * reading of it. The abort may come before anything reads the source (while a temp file is opened, say):
 * its error is then the put's to report, not an unhandled 'error' event that would end the process.
 */
export function failSourceOnAbort(source: Readable, signal: AbortSignal | undefined): () => void {
  return () => {
    if (source.listenerCount('error') === 0) source.once('error', ignoreError);
    source.destroy(signal?.reason instanceof Error ? signal.reason : new Error('put aborted'));
  };
}

function ignoreError(): void {
  // reported by the put that owns the source
}
