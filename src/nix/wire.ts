// The wire encoding Nix's two SSH protocols share (PROTOCOL.md §8.2, PROTOCOL-worker.md §10.2): integers
// are u64 little-endian, strings are a u64 length then the bytes padded with zeros to a multiple of 8,
// lists and sets are a u64 count then the items. The reader pulls from a Readable as the protocol needs
// bytes (never more than one chunk ahead of what it was asked for), refuses a string or a list longer than
// its limits before it reads it, and streams long payloads (NARs) through in chunks; the writer batches
// small fields and respects the destination's backpressure. Nothing here knows SSH or the opcodes.

import { Readable, Writable } from 'node:stream';
import { ProtocolError } from '../errors.js';
import { readChunk } from '../util/read-chunk.js';

/** Longest string the reader takes by default: store paths, hashes, signatures, option values. */
export const WIRE_MAX_STRING = 64 * 1024;
/** Longest list or set the reader takes by default (paths per query, references per path). */
export const WIRE_MAX_LIST = 100_000;

/** Zero bytes a string of `length` bytes is padded with. */
export function wirePadding(length: number): number {
  return (8 - (length % 8)) % 8;
}

export interface WireReaderOptions {
  /** Longest string accepted (bytes); longer ones are a PROTOCOL_INVALID error before any is read. */
  readonly maxString?: number;
  /** Most items in a list accepted. */
  readonly maxList?: number;
}

/** What a failed read was reading, for the error message. */
type What = string;

const ZERO8 = Buffer.alloc(8);

/** Reads the wire encoding from a Readable it borrows (it never destroys it). */
export class WireReader {
  readonly #source: Readable;
  readonly #maxString: number;
  readonly #maxList: number;
  /** Bytes taken from the source and not yet consumed, in order. */
  #chunks: Buffer[] = [];
  #buffered = 0;
  #ended = false;
  /** Bytes consumed so far (for messages and tests). */
  #offset = 0;

  constructor(source: Readable, options: WireReaderOptions = {}) {
    this.#source = source;
    this.#maxString = options.maxString ?? WIRE_MAX_STRING;
    this.#maxList = options.maxList ?? WIRE_MAX_LIST;
  }

  /** Bytes consumed so far. */
  get offset(): number {
    return this.#offset;
  }

  /** Whether the peer has closed its side with nothing left unread. Waits for data if none is buffered. */
  async atEnd(signal?: AbortSignal): Promise<boolean> {
    if (this.#buffered > 0) return false;
    await this.#fill(signal);
    return this.#buffered === 0;
  }

  /** Pulls one more chunk into the buffer; false at the end of the stream. */
  async #fill(signal?: AbortSignal): Promise<boolean> {
    if (this.#ended) return false;
    const chunk = await readChunk(this.#source, signal);
    if (chunk === null) {
      this.#ended = true;
      return false;
    }
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    return true;
  }

  async #need(n: number, what: What, signal?: AbortSignal): Promise<void> {
    while (this.#buffered < n) {
      if (!(await this.#fill(signal))) {
        throw new ProtocolError(`the connection ended in the middle of ${what} (at byte ${this.#offset})`);
      }
    }
  }

  /** Takes `n` buffered bytes (n ≤ buffered) as one Buffer (a view when they lie in one chunk). */
  #take(n: number): Buffer {
    this.#offset += n;
    this.#buffered -= n;
    const first = this.#chunks[0];
    if (first !== undefined && first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0];
      if (chunk === undefined) throw new Error('wire reader: took more than was buffered');
      const part = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, part);
      filled += part;
      if (part === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(part);
    }
    return out;
  }

  /** A u64, which must fit in a JavaScript number (2^53 - 1). */
  async readU64(what: What = 'an integer', signal?: AbortSignal): Promise<number> {
    await this.#need(8, what, signal);
    const bytes = this.#take(8);
    const value = bytes.readBigUInt64LE(0);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new ProtocolError(`${what} is out of range (${value})`);
    }
    return Number(value);
  }

  /** A u64 that must be 0 or 1. */
  async readBool(what: What = 'a boolean', signal?: AbortSignal): Promise<boolean> {
    const value = await this.readU64(what, signal);
    if (value > 1) throw new ProtocolError(`${what} must be 0 or 1, not ${value}`);
    return value === 1;
  }

  /** A string's raw bytes (a copy the caller owns); refused before reading when longer than `max`. */
  async readBytes(what: What = 'a string', signal?: AbortSignal, max = this.#maxString): Promise<Buffer> {
    const length = await this.readU64(`the length of ${what}`, signal);
    if (length > max) {
      throw new ProtocolError(`${what} is ${length} bytes long, more than the limit of ${max}`);
    }
    const padded = length + wirePadding(length);
    await this.#need(padded, what, signal);
    const bytes = Buffer.from(this.#take(length));
    const padding = this.#take(padded - length);
    if (!padding.equals(ZERO8.subarray(0, padding.length))) {
      throw new ProtocolError(`the padding of ${what} is not zero`);
    }
    return bytes;
  }

  /** A string, decoded as UTF-8. */
  async readString(what: What = 'a string', signal?: AbortSignal): Promise<string> {
    return (await this.readBytes(what, signal)).toString('utf8');
  }

  /** A list's item count, refused when more than the limit. */
  async readCount(what: What = 'a list', signal?: AbortSignal, max = this.#maxList): Promise<number> {
    const count = await this.readU64(`the size of ${what}`, signal);
    if (count > max) throw new ProtocolError(`${what} has ${count} items, more than the limit of ${max}`);
    return count;
  }

  /** A list (or set) of strings. */
  async readStrings(what: What = 'a list of strings', signal?: AbortSignal, max?: number): Promise<string[]> {
    const count = await this.readCount(what, signal, max);
    const items: string[] = [];
    for (let i = 0; i < count; i++) items.push(await this.readString(`an item of ${what}`, signal));
    return items;
  }

  /**
   * Passes the next `length` bytes to `sink` in chunks (views the sink must not keep), waiting for each
   * call; nothing beyond one chunk of the source is held. The payload has no padding (the caller reads
   * padding itself if the format has it).
   */
  async readBytesInto(
    length: number,
    sink: (chunk: Buffer) => void | Promise<void>,
    what: What = 'a payload',
    signal?: AbortSignal,
  ): Promise<void> {
    let left = length;
    while (left > 0) {
      if (this.#buffered === 0 && !(await this.#fill(signal))) {
        throw new ProtocolError(
          `the connection ended in the middle of ${what} (${length - left} of ${length} bytes)`,
        );
      }
      const first = this.#chunks[0];
      if (first === undefined) continue;
      const part = this.#take(Math.min(first.length, left));
      left -= part.length;
      await sink(part);
    }
  }

  /**
   * Up to `max` bytes that are already buffered or arrive next, for payloads whose length the caller
   * learns as it goes (a NAR read until its end); null at the end of the stream. Bytes not used can be
   * given back with `unread`.
   */
  async readSome(max: number, signal?: AbortSignal): Promise<Buffer | null> {
    if (this.#buffered === 0 && !(await this.#fill(signal))) return null;
    const first = this.#chunks[0];
    if (first === undefined) return null;
    return this.#take(Math.min(first.length, max));
  }

  /** Puts bytes taken by `readSome` back in front of the buffer. */
  unread(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.#chunks.unshift(bytes);
    this.#buffered += bytes.length;
    this.#offset -= bytes.length;
  }
}

/** The wire encoding of a u64. */
export function encodeU64(value: number | bigint): Buffer {
  const out = Buffer.allocUnsafe(8);
  out.writeBigUInt64LE(BigInt(value));
  return out;
}

/** The wire encoding of a string (length, bytes, padding). */
export function encodeString(value: string | Buffer): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const out = Buffer.alloc(8 + bytes.length + wirePadding(bytes.length));
  out.writeBigUInt64LE(BigInt(bytes.length));
  bytes.copy(out, 8);
  return out;
}

/** The wire encoding of a list of strings. */
export function encodeStrings(values: Iterable<string>): Buffer {
  const parts: Buffer[] = [];
  let count = 0;
  for (const value of values) {
    parts.push(encodeString(value));
    count++;
  }
  return Buffer.concat([encodeU64(count), ...parts]);
}

/** Batches the wire encoding of small fields and writes them, and payloads, to a Writable with backpressure. */
export class WireWriter {
  readonly #dest: Writable;
  #parts: Buffer[] = [];
  #pending = 0;
  /** Pending bytes above which `flush` is worth calling even mid-reply. */
  static readonly BATCH = 64 * 1024;

  constructor(dest: Writable) {
    this.#dest = dest;
  }

  /** Bytes queued and not yet written. */
  get pending(): number {
    return this.#pending;
  }

  u64(value: number | bigint): this {
    return this.#queue(encodeU64(value));
  }

  bool(value: boolean): this {
    return this.u64(value ? 1 : 0);
  }

  string(value: string | Buffer): this {
    return this.#queue(encodeString(value));
  }

  strings(values: Iterable<string>): this {
    return this.#queue(encodeStrings(values));
  }

  /** Raw bytes with no length or padding (a NAR, a frame's payload). Copied if `copy`. */
  raw(bytes: Buffer, copy = false): this {
    return this.#queue(copy ? Buffer.from(bytes) : bytes);
  }

  #queue(bytes: Buffer): this {
    this.#parts.push(bytes);
    this.#pending += bytes.length;
    return this;
  }

  /** Writes what is queued and waits until the destination wants more (or fails, or closes). */
  async flush(): Promise<void> {
    if (this.#parts.length > 0) {
      const data = Buffer.concat(this.#parts);
      this.#parts = [];
      this.#pending = 0;
      await writeWithBackpressure(this.#dest, data);
    }
  }

  /** Flushes if enough is queued; for long replies built from many small fields. */
  async flushIfFull(): Promise<void> {
    if (this.#pending >= WireWriter.BATCH) await this.flush();
  }
}

/** Writes `data` and resolves when the destination can take more; rejects if it fails or closes first. */
export function writeWithBackpressure(dest: Writable, data: Buffer): Promise<void> {
  if (dest.destroyed || dest.writableEnded) {
    return Promise.reject(
      dest.errored ?? Object.assign(new Error('the peer closed the connection'), { code: 'EPIPE' }),
    );
  }
  if (dest.write(data)) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      dest.off('drain', onDrain);
      dest.off('error', onError);
      dest.off('close', onClose);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onError = (error: Error): void => {
      cleanup();
      reject(error);
    };
    const onClose = (): void => {
      cleanup();
      reject(dest.errored ?? Object.assign(new Error('the peer closed the connection'), { code: 'EPIPE' }));
    };
    dest.on('drain', onDrain);
    dest.on('error', onError);
    dest.on('close', onClose);
  });
}
