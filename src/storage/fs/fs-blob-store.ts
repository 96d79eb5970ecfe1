// The BlobStore for a local directory: one file per blob at `<root>/<key>`. Writes go to a temp file on the
// same filesystem, are hashed and counted as they stream, checked, fsynced and renamed into place, so a
// reader (or a crash) sees either the whole blob or nothing. Temp files live in `<root>/.tmp/<pid>-<id>/`
// (no valid key can start with `.`): one directory per open store, so several processes may share a root
// (`niche serve` and `niche import`, say). At open, directories of processes that are gone (and stray
// files) are removed, since only a crash leaves them.
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  fstat as fsFstat,
  fstatSync,
  open as fsOpen,
  openSync,
  read,
  readSync,
} from 'node:fs';
import { promisify } from 'node:util';
import { mkdir, open, opendir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';

import { ConfigError, isNicheError, RangeNotSatisfiableError, StorageError } from '../../errors.js';
import {
  assertValidBlobKey,
  BufferedBlob,
  type BlobRange,
  type BlobReadResult,
  type BlobStat,
  type BlobStore,
  type GetOptions,
  type PutOptions,
  type PutResult,
} from '../blob-store.js';
import type { BufferPool } from '../../util/buffer-pool.js';
import { checkBuffer, failSourceOnAbort, PutChecks } from '../put-checks.js';
import { InFlight } from '../in-flight.js';
import { writeDurably } from './write-durably.js';

/** Where puts stage their temp files, under the root. Exported so tests can check nothing is left there. */
export const FS_BLOB_TMP_DIR = '.tmp';
/** Bytes gathered before one writev; one batch may be on its way to disk while the next one fills. */
const WRITE_BATCH_BYTES = 1 << 20;
const READ_CHUNK_BYTES = 1 << 20;
/** Blobs (or ranges) up to this size are read in one call instead of streamed. */
const SMALL_READ_BYTES = 256 << 10;

export class FsBlobStore implements BlobStore {
  readonly root: string;
  readonly #tmpDir: string;
  /** Directories whose own entry (and every ancestor's, up to root) is known to be durable. */
  readonly #durableDirs = new Set<string>();
  readonly #puts = new InFlight();
  #closed = false;

  private constructor(root: string, tmpDir: string) {
    this.root = root;
    this.#tmpDir = tmpDir;
    this.#durableDirs.add(root);
  }

  /**
   * Creates the directory if needed, wipes temp files left by a crash and proves the directory is writable
   * (write, fsync, remove a probe file; fsync a directory). Throws ConfigError('DATA_DIR_UNUSABLE') if not.
   */
  static async open(root: string): Promise<FsBlobStore> {
    const absolute = resolve(root);
    const tmpRoot = join(absolute, FS_BLOB_TMP_DIR);
    const tmpDir = join(tmpRoot, `${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      await mkdir(tmpRoot, { recursive: true });
      await removeStaleTemp(tmpRoot);
      await mkdir(tmpDir);
      ownTempDirs.add(tmpDir);
      const probe = join(tmpDir, `probe-${randomBytes(8).toString('hex')}`);
      const handle = await open(probe, 'wx');
      try {
        await handle.writeFile('niche write probe\n');
        await handle.sync();
      } finally {
        await handle.close();
      }
      await unlink(probe);
      await fsyncDir(tmpDir);
    } catch (error) {
      throw new ConfigError(
        'DATA_DIR_UNUSABLE',
        `blob store directory ${absolute} is not usable (it must be a writable directory): ${describe(error)}`,
        { cause: error },
      );
    }
    return new FsBlobStore(absolute, tmpDir);
  }

  async put(key: string, source: Readable, options: PutOptions = {}): Promise<PutResult> {
    return this.#puts.track(this.#put(key, source, options));
  }

  async #put(key: string, source: Readable, options: PutOptions): Promise<PutResult> {
    const { signal } = options;
    const onAbort = failSourceOnAbort(source, signal);
    const tmpPath = join(this.#tmpDir, randomBytes(16).toString('hex'));
    let handle: FileHandle | undefined;
    let writer: BatchWriter | undefined;
    let renamed = false;
    try {
      this.#assertOpen();
      assertValidBlobKey(key);
      signal?.throwIfAborted();
      signal?.addEventListener('abort', onAbort, { once: true });
      const target = this.#path(key);

      handle = await fsStep('create a temp file', open(tmpPath, 'wx'));
      writer = new BatchWriter(handle);
      const checks = new PutChecks(options);
      for await (const chunk of source as AsyncIterable<unknown>) {
        await writer.push(checks.add(chunk));
      }
      signal?.throwIfAborted();
      const sha256 = checks.finish();
      const size = checks.size;

      await writer.flush();
      await fsStep('fdatasync a temp file', handle.datasync());
      const closing = handle;
      handle = undefined;
      await fsStep('close a temp file', closing.close());
      await this.#ensureDir(dirname(target));
      signal?.throwIfAborted();
      await fsStep(`rename a temp file to ${target}`, rename(tmpPath, target));
      renamed = true;
      await fsStep(`fsync ${dirname(target)}`, fsyncDir(dirname(target)));
      return { size, sha256 };
    } catch (error) {
      await writer?.settle();
      await handle?.close().catch(ignore);
      // After the rename the blob may replace an earlier, identical one: removing it would lose that one.
      if (!renamed) await unlink(tmpPath).catch(ignore);
      if (!source.destroyed) source.destroy();
      if (signal?.aborted === true && !renamed) signal.throwIfAborted();
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * The bytes are checked before anything is written, and written, synced and renamed into place in one
   * trip to the thread pool (src/storage/fs/write-durably.ts) instead of the stream's eight.
   */
  async putBuffer(key: string, data: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    return this.#puts.track(this.#putBuffer(key, data, options));
  }

  async #putBuffer(key: string, data: Uint8Array, options: PutOptions): Promise<PutResult> {
    this.#assertOpen();
    const result = checkBuffer(key, data, options);
    const target = this.#path(key);
    await this.#ensureDir(dirname(target));
    options.signal?.throwIfAborted();
    try {
      await writeDurably(join(this.#tmpDir, randomBytes(16).toString('hex')), data, target, dirname(target));
    } catch (error) {
      // As a streaming put's: "cannot fdatasync a temp file: EIO: …"; nothing is left behind before the
      // rename, and after it (a failed directory fsync) the blob stays, as it does there.
      throw new StorageError(describe(error), { cause: error });
    }
    return result;
  }

  /** Creates `dir` if needed and makes its entry durable in every new ancestor, once per process. */
  async #ensureDir(dir: string): Promise<void> {
    if (this.#durableDirs.has(dir)) return;
    await fsStep(`create ${dir}`, mkdir(dir, { recursive: true }));
    for (let parent = dirname(dir); ; parent = dirname(parent)) {
      await fsStep(`fsync ${parent}`, fsyncDir(parent));
      if (parent === this.root || parent === dirname(parent)) break;
    }
    this.#durableDirs.add(dir);
  }

  async get(key: string, options: GetOptions = {}): Promise<BlobReadResult | undefined> {
    this.#assertOpen();
    assertValidBlobKey(key);
    const small = readSmall(this.#path(key), key, options.range, options.pool);
    if (small !== 'large') return small;
    // A numeric descriptor, not a FileHandle: ReadStream reads a FileHandle through promises, which
    // costs a good share of throughput on large NARs.
    let fd: number;
    try {
      fd = await openFd(this.#path(key));
    } catch (error) {
      if (isAbsent(error)) return undefined;
      throw new StorageError(`cannot open blob ${key}: ${describe(error)}`, { cause: error });
    }
    try {
      const info = await fstatFd(fd);
      if (!info.isFile()) {
        closeSync(fd);
        return undefined;
      }
      const { range } = options;
      checkRange(key, range, info.size);
      // The stream owns the descriptor from here: it closes it at the end, on error, and when destroyed.
      const start = range?.start ?? 0;
      const end = range?.end ?? info.size - 1;
      const stream = createReadStream(this.#path(key), {
        fd,
        start,
        end,
        highWaterMark: READ_CHUNK_BYTES,
        autoClose: true,
      });
      // Reads the same descriptor without the stream, then destroys the stream, which closes it.
      const chunks = (pool: BufferPool): AsyncIterable<Buffer> =>
        fileChunks(fd, start, end + 1, pool, key, () => stream.destroy());
      return range === undefined
        ? { stream, size: info.size, chunks }
        : { stream, size: info.size, range, chunks };
    } catch (error) {
      closeSync(fd);
      if (isNicheError(error)) throw error;
      throw new StorageError(`cannot read blob ${key}: ${describe(error)}`, { cause: error });
    }
  }

  async head(key: string): Promise<BlobStat | undefined> {
    this.#assertOpen();
    assertValidBlobKey(key);
    try {
      const info = await stat(this.#path(key));
      return info.isFile() ? { size: info.size, modifiedAt: info.mtime } : undefined;
    } catch (error) {
      if (isAbsent(error)) return undefined;
      throw new StorageError(`cannot stat blob ${key}: ${describe(error)}`, { cause: error });
    }
  }

  async delete(key: string): Promise<void> {
    this.#assertOpen();
    assertValidBlobKey(key);
    try {
      // No directory fsync: a delete undone by a crash leaves an orphan blob, which GC removes again.
      await unlink(this.#path(key));
    } catch (error) {
      // EISDIR: the key names a directory of other keys, so no blob by that name exists.
      if (isAbsent(error) || errorCode(error) === 'EISDIR') return;
      throw new StorageError(`cannot delete blob ${key}: ${describe(error)}`, { cause: error });
    }
  }

  async *list(prefix: string): AsyncGenerator<string> {
    this.#assertOpen();
    // Start at the deepest directory the prefix names; no valid key lies under an invalid directory part.
    const slash = prefix.lastIndexOf('/');
    const dirKey = slash < 0 ? '' : prefix.slice(0, slash);
    if (dirKey !== '' && !isValidKey(dirKey)) return;
    yield* this.#walk(dirKey, prefix);
  }

  async *#walk(dirKey: string, prefix: string): AsyncGenerator<string> {
    const path = dirKey === '' ? this.root : this.#path(dirKey);
    try {
      const dir = await opendir(path, { bufferSize: 256 });
      for await (const entry of dir) {
        // Skips `.tmp` and anything else that cannot be a key.
        if (entry.name.startsWith('.')) continue;
        const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
        if (entry.isDirectory()) {
          const under = `${key}/`;
          if (under.startsWith(prefix) || prefix.startsWith(under)) yield* this.#walk(key, prefix);
        } else if (entry.isFile() && key.startsWith(prefix)) {
          yield key;
        }
      }
    } catch (error) {
      if (isAbsent(error)) return;
      if (isNicheError(error)) throw error;
      throw new StorageError(`cannot list ${path}: ${describe(error)}`, { cause: error });
    }
  }

  /** Refuses new work and waits for puts in progress; read streams already handed out stay usable. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#puts.settled();
    await rm(this.#tmpDir, { recursive: true, force: true });
    ownTempDirs.delete(this.#tmpDir);
  }

  #assertOpen(): void {
    if (this.#closed) throw new StorageError(`blob store ${this.root} is closed`);
  }

  #path(key: string): string {
    return join(this.root, key);
  }
}

/**
 * Writes batches of chunks with one writev each, keeping at most one batch in flight so the next one can
 * fill from the network meanwhile. Memory stays within about two batches; chunks are never copied.
 */
class BatchWriter {
  readonly #handle: FileHandle;
  #batch: Buffer[] = [];
  #batchBytes = 0;
  #inFlight: Promise<void> = Promise.resolve();
  #failure: StorageError | undefined;

  constructor(handle: FileHandle) {
    this.#handle = handle;
  }

  async push(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    this.#batch.push(chunk);
    this.#batchBytes += chunk.length;
    if (this.#batchBytes >= WRITE_BATCH_BYTES) await this.#send();
  }

  /** Resolves once every pushed byte is written (not yet fsynced). */
  async flush(): Promise<void> {
    await this.#send();
    await this.#wait();
  }

  /** Waits for the write in flight, ignoring its outcome (for cleanup after a failure). */
  async settle(): Promise<void> {
    await this.#inFlight;
  }

  async #send(): Promise<void> {
    await this.#wait();
    if (this.#batch.length === 0) return;
    const batch = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    // Never rejects, so it needs no handler while the loop reads on; the failure surfaces at the next wait.
    this.#inFlight = writeFully(this.#handle, batch).catch((error: unknown) => {
      this.#failure = new StorageError(`cannot write a temp file: ${describe(error)}`, { cause: error });
    });
  }

  async #wait(): Promise<void> {
    await this.#inFlight;
    if (this.#failure !== undefined) throw this.#failure;
  }
}

async function writeFully(handle: FileHandle, buffers: Buffer[]): Promise<void> {
  let rest = buffers;
  while (rest.length > 0) {
    const { bytesWritten } = await handle.writev(rest);
    if (bytesWritten === 0) throw new Error('writev wrote nothing');
    rest = dropBytes(rest, bytesWritten);
  }
}

/** The buffers minus their first `count` bytes, sharing memory with the originals. */
function dropBytes(buffers: Buffer[], count: number): Buffer[] {
  let index = 0;
  let left = count;
  while (index < buffers.length) {
    const first = buffers[index];
    if (first === undefined || first.length > left) break;
    left -= first.length;
    index += 1;
  }
  const rest = buffers.slice(index);
  const first = rest[0];
  if (first !== undefined && left > 0) rest[0] = first.subarray(left);
  return rest;
}

function openFd(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    fsOpen(path, 'r', (error, fd) => {
      if (error === null) resolve(fd);
      else reject(error);
    });
  });
}

const fstatFd = promisify(fsFstat);

function checkRange(key: string, range: BlobRange | undefined, size: number): void {
  if (range !== undefined && !(range.start >= 0 && range.start <= range.end && range.end < size)) {
    throw new RangeNotSatisfiableError(
      size,
      `range ${range.start}-${range.end} is outside blob ${key} of ${size} bytes`,
    );
  }
}

/** `fs.read` of a numeric descriptor as a promise (FileHandle.read costs more per call). */
function readAt(fd: number, buffer: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buffer, 0, length, position, (error, bytesRead) => {
      if (error === null) resolve(bytesRead);
      else reject(error);
    });
  });
}

/** Bytes [start, end) of the open file `fd`, in buffers from `pool`; calls `release` when done. */
async function* fileChunks(
  fd: number,
  start: number,
  end: number,
  pool: BufferPool,
  key: string,
  release: () => void,
): AsyncGenerator<Buffer, void, undefined> {
  try {
    let position = start;
    while (position < end) {
      const buffer = pool.take();
      let bytesRead: number;
      try {
        bytesRead = await readAt(fd, buffer, Math.min(buffer.length, end - position), position);
      } catch (error) {
        pool.give(buffer);
        throw new StorageError(`cannot read blob ${key}: ${describe(error)}`, { cause: error });
      }
      if (bytesRead === 0) {
        pool.give(buffer);
        throw new StorageError(`blob ${key} shrank while being read`);
      }
      position += bytesRead;
      yield bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead);
    }
  } finally {
    release();
  }
}

/**
 * Small blobs (most NARs) are read whole, synchronously: four thread-pool round trips (open, fstat, read,
 * close) cost far more than the read of a file that is almost always in the page cache. Like nginx's
 * blocking reads, a cold small file briefly holds the event loop. Returns 'large' for blobs to stream.
 * With a pool whose buffers hold the blob, it is read into one of them.
 */
function readSmall(
  path: string,
  key: string,
  range: BlobRange | undefined,
  pool: BufferPool | undefined,
): BlobReadResult | undefined | 'large' {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    if (isAbsent(error)) return undefined;
    throw new StorageError(`cannot open blob ${key}: ${describe(error)}`, { cause: error });
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) return undefined;
    const start = range?.start ?? 0;
    const length = (range?.end ?? info.size - 1) - start + 1;
    if (length > SMALL_READ_BYTES) return 'large';
    checkRange(key, range, info.size);
    const size = Math.max(length, 0);
    const buffer = pool !== undefined && pool.size >= size ? pool.take() : undefined;
    const data = buffer?.subarray(0, size) ?? Buffer.allocUnsafe(size);
    try {
      let done = 0;
      while (done < length) {
        const read = readSync(fd, data, done, length - done, start + done);
        if (read === 0) throw new StorageError(`blob ${key} shrank while being read`);
        done += read;
      }
    } catch (error) {
      if (buffer !== undefined) pool?.give(buffer);
      throw error;
    }
    return new BufferedBlob(data, info.size, range);
  } catch (error) {
    if (isNicheError(error)) throw error;
    throw new StorageError(`cannot read blob ${key}: ${describe(error)}`, { cause: error });
  } finally {
    closeSync(fd);
  }
}

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Staging directories of the stores this process opened (never stale while the process lives). */
const ownTempDirs = new Set<string>();

/**
 * Removes what crashed processes left in the temp root: stray files, and `<pid>-<id>` directories whose
 * process is gone, or that carry our pid without being ours (an earlier incarnation, as after a container
 * restart).
 */
async function removeStaleTemp(tmpRoot: string): Promise<void> {
  const dir = await opendir(tmpRoot);
  for await (const entry of dir) {
    const path = join(tmpRoot, entry.name);
    const pid = Number(/^(\d+)-[0-9a-f]+$/.exec(entry.name)?.[1] ?? Number.NaN);
    const stale =
      !entry.isDirectory() ||
      Number.isNaN(pid) ||
      (pid === process.pid ? !ownTempDirs.has(path) : !processAlive(pid));
    if (stale) await rm(path, { recursive: true, force: true });
  }
}

async function fsyncDir(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Runs one filesystem step of a put, turning its failure into a StorageError that says which step. */
async function fsStep<T>(what: string, step: Promise<T>): Promise<T> {
  try {
    return await step;
  } catch (error) {
    throw new StorageError(`cannot ${what}: ${describe(error)}`, { cause: error });
  }
}

function isValidKey(key: string): boolean {
  try {
    assertValidBlobKey(key);
    return true;
  } catch {
    return false;
  }
}

function errorCode(error: unknown): unknown {
  return typeof error === 'object' && error !== null && 'code' in error ? error.code : undefined;
}

/** ENOTDIR: a parent of the path is a file (say `nar` is a blob and `nar/x` is asked for). */
function isAbsent(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function ignore(): void {
  // Cleanup after a failure is best effort; the failure itself is what the caller hears about.
}
