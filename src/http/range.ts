// HTTP byte ranges for NAR downloads (Nix resumes interrupted downloads with `Range`). Only single ranges
// are honoured; a multi-range request gets the whole file, which RFC 9110 allows.
import { RangeNotSatisfiableError } from '../errors.js';
import type { BlobRange } from '../storage/blob-store.js';

/** undefined = serve the whole file. Throws RangeNotSatisfiableError for ranges outside the file. */
export function parseRange(header: string | undefined, size: number): BlobRange | undefined {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (match === null) return undefined; // multi-range or another unit: ignore, serve everything
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return undefined;
  let start: number;
  let end: number;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0) throw new RangeNotSatisfiableError(size, 'empty suffix range');
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(first);
    end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
    if (last !== '' && Number(last) < start) return undefined; // syntactically invalid: ignore
  }
  if (!Number.isSafeInteger(start) || start >= size || end < start) {
    throw new RangeNotSatisfiableError(size, `range ${header} is outside the file of ${size} bytes`);
  }
  return { start, end };
}
