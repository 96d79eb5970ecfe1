// Where `niche import` reads an existing binary cache from: the layout `nix copy --to file://…` and
// `nix copy --to s3://…` write (`nix-cache-info`, `<hash>.narinfo`, `nar/…` at the cache root), behind one
// small interface so the importer does not care whether the files are local or in a bucket. Also the
// errors a source raises, which the importer tells apart from failures of niche's own stores.
import type { Readable } from 'node:stream';
import { InvalidInputError, NicheError, NotFoundError } from '../errors.js';

export interface ImportSource {
  /** The source for messages, without credentials. */
  readonly description: string;
  /** The `nix-cache-info` file, or undefined if the source has none. */
  readCacheInfo(): Promise<string | undefined>;
  /**
   * The names of the narinfo files at the cache root (`<hash>.narinfo`), produced as the listing is read
   * (a directory entry or an S3 page at a time), never collected first.
   */
  listNarInfos(): AsyncIterable<string>;
  /** A narinfo's text. Throws SourceFileMissingError, SourceReadError, or NARINFO_INVALID if too large. */
  readNarInfo(name: string, maxBytes: number): Promise<string>;
  /**
   * Opens the file a narinfo's URL names, relative to the cache root, as a stream (never buffered).
   * Throws SourceFileMissingError, SourceReadError, or UnsupportedNarUrlError.
   */
  openFile(url: string): Promise<Readable>;
  /** Whether the file a narinfo's URL names exists (for dry runs). */
  hasFile(url: string): Promise<boolean>;
  close(): Promise<void>;
}

/** A file the source should have (a narinfo's NAR) is not there. */
export class SourceFileMissingError extends NotFoundError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/** Reading the source failed (I/O error, S3 refused or unreachable); nothing is wrong with the data. */
export class SourceReadError extends NicheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('unavailable', 'NETWORK_ERROR', message, options);
  }
}

/** A narinfo URL that does not name a file inside the source (absolute URL, `..`, query string). */
export class UnsupportedNarUrlError extends InvalidInputError {
  constructor(url: string) {
    super(
      'NARINFO_INVALID',
      `URL ${JSON.stringify(url.slice(0, 200))} does not name a file in the source ` +
        '(only relative paths such as nar/<hash>.nar.xz are imported)',
    );
  }
}

/** The path segments of a narinfo URL relative to the cache root; throws UnsupportedNarUrlError. */
export function relativeUrlSegments(url: string): string[] {
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || /[?#\\%]/.test(url)) throw new UnsupportedNarUrlError(url);
  const segments = url.split('/');
  if (segments.some((segment) => segment === '' || segment === '.' || segment === '..')) {
    throw new UnsupportedNarUrlError(url);
  }
  return segments;
}

/** `<32 nix32 chars>.narinfo`: the only narinfo file names Nix writes or reads. */
export const NARINFO_FILE_NAME = /^[0-9abcdfghijklmnpqrsvwxyz]{32}\.narinfo$/;

/** The message of any thrown value, for reports. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = 'code' in error && typeof error.code === 'string' ? ` (${error.code})` : '';
  const message = error.message === '' ? error.name : error.message;
  return `${message}${code}`;
}
