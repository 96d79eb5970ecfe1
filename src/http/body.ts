// Reads a small request body (narinfo, JSON) with a hard limit enforced as bytes arrive, never after.
import { Readable } from 'node:stream';
import { InvalidInputError, TooLargeError } from '../errors.js';

export async function readSmallBody(
  stream: Readable,
  limit: number,
  contentLength: number | undefined,
): Promise<Buffer> {
  if (contentLength !== undefined && contentLength > limit) {
    throw new TooLargeError(`request body of ${contentLength} bytes exceeds the limit of ${limit} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new TooLargeError(`request body exceeds the limit of ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

export function contentLengthOf(header: string | undefined): number | undefined {
  if (header === undefined || !/^\d{1,16}$/.test(header)) return undefined;
  return Number(header);
}

/**
 * Splits a body of the form `<one line>\n<stream…>`: reads (at most `limit` bytes) up to the first newline
 * and returns the line and a stream of everything after it, without buffering the rest.
 */
export async function readHeaderLine(
  stream: Readable,
  limit: number,
): Promise<{ line: string; rest: Readable }> {
  const iterable = stream.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Buffer>;
  const iterator: AsyncIterator<Buffer> = iterable[Symbol.asyncIterator]();
  const parts: Buffer[] = [];
  let size = 0;
  for (;;) {
    const next = await iterator.next();
    if (next.done === true) {
      throw new InvalidInputError('BAD_REQUEST', 'the body ended before the end of its metadata line');
    }
    const chunk = next.value;
    const newline = chunk.indexOf(0x0a);
    if (newline === -1 || size + newline > limit) {
      size += chunk.length;
      if (size > limit) throw new TooLargeError(`the metadata line exceeds ${limit} bytes`);
      parts.push(chunk);
      continue;
    }
    parts.push(chunk.subarray(0, newline));
    const remainder = chunk.subarray(newline + 1);
    async function* rest(): AsyncGenerator<Buffer> {
      if (remainder.length > 0) yield remainder;
      for (;;) {
        const more = await iterator.next();
        if (more.done === true) return;
        yield more.value;
      }
    }
    return {
      line: Buffer.concat(parts).toString('utf8'),
      rest: Readable.from(rest(), { objectMode: false }),
    };
  }
}
