// The error every BlobStore backend throws when a put fails one of the checks its caller asked for
// (expectedSize, expectedSha256, maxSize). Shared by all backends so the upload code above can tell "the
// client sent the wrong bytes" from "the disk failed" without knowing which backend it talks to.
import { NicheError } from '../errors.js';

export type BlobCheck = 'size' | 'sha256' | 'max-size';

export class BlobCheckError extends NicheError {
  readonly check: BlobCheck;
  /** The expected byte count (`size`, `max-size`) or hex SHA-256 (`sha256`). */
  readonly expected: number | string;
  /**
   * The byte count or hex SHA-256 that arrived. For `max-size` (and for `size` when too many bytes arrive)
   * it is the count at which the put gave up, not the full length of the source, which is never read.
   */
  readonly actual: number | string;

  constructor(check: BlobCheck, expected: number | string, actual: number | string) {
    const [kind, code, what] =
      check === 'max-size'
        ? (['too-large', 'BODY_TOO_LARGE', `more than ${expected} bytes arrived`] as const)
        : check === 'size'
          ? (['invalid', 'FILE_SIZE_MISMATCH', `expected ${expected} bytes, got ${actual}`] as const)
          : (['invalid', 'FILE_HASH_MISMATCH', `expected SHA-256 ${expected}, got ${actual}`] as const);
    super(kind, code, `blob check failed: ${what}`);
    this.check = check;
    this.expected = expected;
    this.actual = actual;
  }
}
