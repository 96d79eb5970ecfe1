// Serialises a filesystem path as a NAR, byte-identical to `nix-store --dump` (PROTOCOL.md §1), as a stream
// with back-pressure. Memory stays bounded by about two chunks whatever the size of the tree: file contents
// are read chunk by chunk straight into the output buffer, and headers are batched into the same buffers
// so that a tree of many small files still comes out as a few large chunks.
//
// Metadata calls and small files use synchronous fs calls, in time slices of a few milliseconds between
// which the event loop runs: a promise round trip through libuv's thread pool costs 100-200 µs per file
// against about 10 µs for the system calls themselves, which made trees of many small files 15x slower.
// Large files are read asynchronously, where that overhead is amortised over 1 MiB reads.

import { type Stats, closeSync, lstatSync, openSync, readSync, readdirSync, readlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { NixFormatError } from '../errors.js';
import type { BufferPool } from '../util/buffer-pool.js';
import { NAR_MAGIC, narPadding, narStringSize, writeNarInt, writeNarString } from './nar-format.js';

export interface NarFromPathOptions {
  /** The output stream's buffer limit in bytes (Node's default if absent). */
  readonly highWaterMark?: number;
  /** Target size of each emitted chunk; 1 MiB by default. */
  readonly chunkSize?: number;
}

export const DEFAULT_NAR_CHUNK_SIZE = 1 << 20;

const S_IXUSR = 0o100;
/** Files up to this size are read with one synchronous call. */
const SMALL_FILE_SIZE = 64 * 1024;
/** How long synchronous work may hold the event loop before the writer lets other work run. */
const TIME_SLICE_MS = 4;

const token = (text: string): Buffer => Buffer.from(text, 'latin1');
const T_MAGIC = token(NAR_MAGIC);
const T_OPEN = token('(');
const T_CLOSE = token(')');
const T_TYPE = token('type');
const T_REGULAR = token('regular');
const T_EXECUTABLE = token('executable');
const T_EMPTY = token('');
const T_CONTENTS = token('contents');
const T_SYMLINK = token('symlink');
const T_TARGET = token('target');
const T_DIRECTORY = token('directory');
const T_ENTRY = token('entry');
const T_NAME = token('name');
const T_NODE = token('node');

const sizeOf = (tokens: readonly Uint8Array[]): number =>
  tokens.reduce((total, t) => total + narStringSize(t.length), 0);

// Token runs that always appear together, with their encoded sizes computed once.
const ENTRY_HEAD = [T_ENTRY, T_OPEN, T_NAME] as const; // then the name, then T_NODE
const NODE_HEAD = [T_OPEN, T_TYPE] as const;
const REGULAR_HEAD = [T_REGULAR] as const;
const EXECUTABLE_MARK = [T_EXECUTABLE, T_EMPTY] as const;
const ENTRY_HEAD_SIZE = sizeOf(ENTRY_HEAD) + narStringSize(T_NODE.length);
const NODE_HEAD_SIZE = sizeOf(NODE_HEAD);
const CLOSE_SIZE = narStringSize(T_CLOSE.length);

/** One output buffer being filled; `take()` hands it out and starts the next. */
class ChunkBuilder {
  buffer: Buffer;
  position = 0;

  constructor(
    private readonly chunkSize: number,
    private readonly pool: BufferPool | undefined,
  ) {
    this.buffer = this.#allocate(chunkSize);
  }

  #allocate(size: number): Buffer {
    return this.pool !== undefined && size <= this.pool.size ? this.pool.take() : Buffer.allocUnsafe(size);
  }

  get room(): number {
    return this.buffer.length - this.position;
  }

  /** The filled part. The next buffer has room for at least `nextNeed` bytes. */
  take(nextNeed = 0): Buffer {
    const filled = this.position;
    const full = this.buffer;
    this.buffer = this.#allocate(Math.max(this.chunkSize, nextNeed));
    this.position = 0;
    if (filled * 4 >= full.length) return full.subarray(0, filled);
    // A mostly empty buffer is copied so the consumer does not pin a whole chunk for a few bytes.
    const copy = Buffer.from(full.subarray(0, filled));
    this.pool?.give(full);
    return copy;
  }

  string(bytes: Uint8Array): void {
    this.position = writeNarString(this.buffer, bytes, this.position);
  }

  strings(tokens: readonly Uint8Array[]): void {
    for (const t of tokens) this.string(t);
  }

  int(value: number): void {
    this.position = writeNarInt(this.buffer, value, this.position);
  }

  zeros(count: number): void {
    this.buffer.fill(0, this.position, this.position + count);
    this.position += count;
  }
}

interface DirectoryFrame {
  readonly path: Buffer;
  readonly names: Buffer[];
  index: number;
  /** Whether this directory is itself a directory entry (everything but the root). */
  readonly isEntry: boolean;
}

const SLASH = Buffer.from('/');

function displayPath(path: Buffer): string {
  return path.toString('utf8');
}

export interface NarChunksOptions {
  /** Target size of each chunk; 1 MiB by default, or the pool's buffer size. */
  readonly chunkSize?: number;
  /**
   * Take the chunk buffers from this pool. Each chunk then belongs to the consumer, who may give it back
   * to the pool once done with it (the writer never touches a chunk again after yielding it).
   */
  readonly pool?: BufferPool;
}

/**
 * The NAR of `path` as a sequence of chunks (each about `chunkSize` bytes). Pulling the next chunk does
 * the I/O for it, so a consumer that stops pulling stops the reading. Paths are handled as raw bytes,
 * so names that are not valid UTF-8 round-trip exactly.
 */
export async function* narChunks(
  path: string | Buffer,
  options: NarChunksOptions = {},
): AsyncGenerator<Buffer, void, undefined> {
  const chunkSize = options.chunkSize ?? options.pool?.size ?? DEFAULT_NAR_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 64) {
    throw new RangeError(`chunkSize must be an integer of at least 64, got ${chunkSize}`);
  }
  if (options.pool !== undefined && chunkSize > options.pool.size) {
    throw new RangeError(`chunkSize ${chunkSize} exceeds the pool's buffers of ${options.pool.size} bytes`);
  }
  const out = new ChunkBuilder(chunkSize, options.pool);
  const stack: DirectoryFrame[] = [];
  let nodePath = typeof path === 'string' ? Buffer.from(path) : path;
  let nodeName: Buffer | undefined;

  out.string(T_MAGIC);
  let sliceStart = performance.now();
  for (;;) {
    if (performance.now() - sliceStart > TIME_SLICE_MS) {
      await nextMacrotask();
      sliceStart = performance.now();
    }
    const stats = lstatSync(nodePath);

    // Everything up to the node's variable part goes into the buffer in one go.
    const entryHeadSize = nodeName === undefined ? 0 : ENTRY_HEAD_SIZE + narStringSize(nodeName.length);
    const headSize = entryHeadSize + NODE_HEAD_SIZE + narStringSize(T_DIRECTORY.length);
    if (out.room < headSize) yield out.take(headSize);
    if (nodeName !== undefined) {
      out.strings(ENTRY_HEAD);
      out.string(nodeName);
      out.string(T_NODE);
    }
    out.strings(NODE_HEAD);

    if (stats.isDirectory()) {
      out.string(T_DIRECTORY);
      const names = readdirSync(nodePath, { encoding: 'buffer' });
      names.sort((a, b) => Buffer.compare(a, b));
      stack.push({ path: nodePath, names, index: 0, isEntry: nodeName !== undefined });
    } else {
      if (stats.isFile()) {
        yield* regularFile(out, nodePath, stats);
      } else if (stats.isSymbolicLink()) {
        const target = readlinkSync(nodePath, { encoding: 'buffer' });
        const need = sizeOf([T_SYMLINK, T_TARGET, target]);
        if (out.room < need) yield out.take(need);
        out.strings([T_SYMLINK, T_TARGET, target]);
      } else {
        throw new NixFormatError(
          'NAR_INVALID',
          `cannot put ${JSON.stringify(displayPath(nodePath))} in a NAR: it is not a regular file, symlink or directory`,
        );
      }
      // Close the node, and the entry around it.
      const closeSize = CLOSE_SIZE * (nodeName === undefined ? 1 : 2);
      if (out.room < closeSize) yield out.take(closeSize);
      out.string(T_CLOSE);
      if (nodeName !== undefined) out.string(T_CLOSE);
    }

    // Find the next node: the next entry of the innermost directory with entries left.
    let next: { path: Buffer; name: Buffer } | undefined;
    while (next === undefined) {
      const frame = stack.at(-1);
      if (frame === undefined) break;
      const name = frame.names[frame.index];
      if (name !== undefined) {
        frame.index++;
        next = { path: Buffer.concat([frame.path, SLASH, name]), name };
      } else {
        stack.pop();
        const closeSize = CLOSE_SIZE * (frame.isEntry ? 2 : 1);
        if (out.room < closeSize) yield out.take(closeSize);
        out.string(T_CLOSE);
        if (frame.isEntry) out.string(T_CLOSE);
      }
    }
    if (next === undefined) break;
    nodePath = next.path;
    nodeName = next.name;
  }
  if (out.position > 0) yield out.take();
}

/** The `regular` body of a file: marker, contents length, contents read in place, padding. */
async function* regularFile(out: ChunkBuilder, path: Buffer, stats: Stats): AsyncGenerator<Buffer, void> {
  const executable = (stats.mode & S_IXUSR) !== 0;
  const size = stats.size;
  const headSize =
    sizeOf(REGULAR_HEAD) + (executable ? sizeOf(EXECUTABLE_MARK) : 0) + narStringSize(T_CONTENTS.length) + 8;
  if (out.room < headSize) yield out.take(headSize);
  out.strings(REGULAR_HEAD);
  if (executable) out.strings(EXECUTABLE_MARK);
  out.string(T_CONTENTS);
  out.int(size);

  if (size > 0 && size <= SMALL_FILE_SIZE) {
    if (out.room < size) yield out.take(size);
    const fd = openSync(path, 'r');
    try {
      let position = 0;
      while (position < size) {
        const bytesRead = readSync(fd, out.buffer, out.position, size - position, position);
        if (bytesRead === 0) throw shrank(path);
        out.position += bytesRead;
        position += bytesRead;
      }
    } finally {
      closeSync(fd);
    }
  } else if (size > 0) {
    const handle = await open(path, 'r');
    try {
      let position = 0;
      while (position < size) {
        if (out.room === 0) yield out.take();
        const { bytesRead } = await handle.read(
          out.buffer,
          out.position,
          Math.min(out.room, size - position),
          position,
        );
        if (bytesRead === 0) throw shrank(path);
        out.position += bytesRead;
        position += bytesRead;
      }
    } finally {
      await handle.close();
    }
  }
  const padding = narPadding(size);
  if (out.room < padding) yield out.take(padding);
  out.zeros(padding);
}

function shrank(path: Buffer): NixFormatError {
  return new NixFormatError(
    'NAR_INVALID',
    `file ${JSON.stringify(displayPath(path))} shrank while it was being archived`,
  );
}

/** A readable stream of the NAR of `path` (see narChunks). */
export function narFromPath(path: string, options: NarFromPathOptions = {}): Readable {
  const chunks = narChunks(path, options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize });
  return Readable.from(
    chunks,
    options.highWaterMark === undefined
      ? { objectMode: false }
      : { objectMode: false, highWaterMark: options.highWaterMark },
  );
}
