// Reads a small request body (narinfo, JSON) with a hard limit enforced as bytes arrive, never after.
import type { Readable } from 'node:stream';
import { TooLargeError } from '../errors.js';

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
