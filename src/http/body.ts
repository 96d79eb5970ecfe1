// Reads a small request body (narinfo, JSON) with a hard limit enforced as bytes arrive, never after, and
// undoes the `Content-Encoding` current Nix may put on uploads (`narinfo-compression`, `ls-compression`,
// `log-compression`; PROTOCOL.md §6.5), with the same limit on the decoded bytes.
import type { IncomingMessage } from 'node:http';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InvalidInputError, NicheError, TooLargeError, UnsupportedMediaTypeError } from '../errors.js';
import { createContentDecoder, parseContentCoding, type ContentCoding } from '../util/compression.js';
import { BorrowedReadable, readChunk } from '../util/read-chunk.js';

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

/**
 * The coding of a request's `Content-Encoding`, or undefined for none (or identity). A coding niche cannot
 * decode, or more than one, is refused (415) rather than stored as if it were plain.
 */
export function requestCoding(header: string | undefined): ContentCoding | undefined {
  if (header === undefined || header.trim() === '') return undefined;
  const codings = header.split(',').map(parseContentCoding);
  const real = codings.filter((coding) => coding !== 'identity');
  if (codings.includes(undefined) || real.length > 1) {
    throw new UnsupportedMediaTypeError(
      `Content-Encoding ${JSON.stringify(header.slice(0, 100))} is not one niche decodes ` +
        '(one of gzip, deflate, br, zstd, xz, bzip2)',
    );
  }
  return real[0];
}

/** An error of a decoder fed an upload, as the client's fault unless it is already ours. */
export function decodingError(coding: ContentCoding, error: unknown): NicheError {
  if (error instanceof NicheError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new InvalidInputError(
    'COMPRESSION_INVALID',
    `the body is not valid ${coding} data (Content-Encoding): ${reason}`,
    { cause: error },
  );
}

/** `body` decoded as `coding`, refused as soon as the decoded bytes pass `limit`. */
export async function decodeSmallBody(body: Buffer, coding: ContentCoding, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  const collect = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      size += chunk.length;
      if (size > limit) {
        callback(new TooLargeError(`the decoded request body exceeds the limit of ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
      callback();
    },
  });
  try {
    await pipeline(Readable.from([body]), createContentDecoder(coding), collect);
  } catch (error) {
    throw decodingError(coding, error);
  }
  return Buffer.concat(chunks, size);
}

/** A small upload (narinfo, listing, realisation): read with `limit`, then decoded per Content-Encoding. */
export async function readSmallUpload(request: IncomingMessage, limit: number): Promise<Buffer> {
  const coding = requestCoding(request.headers['content-encoding']);
  const body = await readSmallBody(request, limit, contentLengthOf(request.headers['content-length']));
  return coding === undefined ? body : decodeSmallBody(body, coding, limit);
}

export function contentLengthOf(header: string | undefined): number | undefined {
  if (header === undefined || !/^\d{1,16}$/.test(header)) return undefined;
  return Number(header);
}

/**
 * Splits a body of the form `<one line>\n<stream…>`: reads (at most `limit` bytes) up to the first newline
 * and returns the line, how many bytes of the body it took (newline included), and a view of everything
 * after it (nothing else buffered), which the caller destroys when done (that never destroys `stream`).
 */
export async function readHeaderLine(
  stream: Readable,
  limit: number,
): Promise<{ line: string; consumed: number; rest: Readable }> {
  const parts: Buffer[] = [];
  let size = 0;
  for (;;) {
    const chunk = await readChunk(stream);
    if (chunk === null) {
      throw new InvalidInputError('BAD_REQUEST', 'the body ended before the end of its metadata line');
    }
    const newline = chunk.indexOf(0x0a);
    if (newline === -1 || size + newline > limit) {
      size += chunk.length;
      if (size > limit) throw new TooLargeError(`the metadata line exceeds ${limit} bytes`);
      parts.push(chunk);
      continue;
    }
    parts.push(chunk.subarray(0, newline));
    const rest = new BorrowedReadable(stream, chunk.subarray(newline + 1));
    return { line: Buffer.concat(parts).toString('utf8'), consumed: size + newline + 1, rest };
  }
}
