// An import source in a local directory, as `nix copy --to file:///dir` writes it. The listing streams
// directory entries (opendir), narinfos are read whole (they are small, and size-checked first), NAR files
// are opened before their stream is handed out, so a missing file is reported as missing rather than as a
// stream error half-way through an import.
import type { Stats } from 'node:fs';
import { open, opendir, stat, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { InvalidInputError, NotFoundError } from '../errors.js';
import {
  describeError,
  NARINFO_FILE_NAME,
  relativeUrlSegments,
  SourceFileMissingError,
  SourceReadError,
  type ImportSource,
} from './source.js';

const LISTING_BUFFER = 256;

function isMissing(error: unknown): boolean {
  return (
    error instanceof Error &&
    'code' in error &&
    (error.code === 'ENOENT' || error.code === 'ENOTDIR' || error.code === 'EISDIR')
  );
}

export class DirSource implements ImportSource {
  readonly description: string;
  readonly #root: string;

  private constructor(root: string) {
    this.#root = root;
    this.description = root;
  }

  /** Checks that `dir` is a directory. Throws NotFoundError if it is not. */
  static async open(dir: string): Promise<DirSource> {
    const root = resolve(dir);
    let stats: Stats;
    try {
      stats = await stat(root);
    } catch (error) {
      throw new NotFoundError('NOT_FOUND', `cannot read the source ${root}: ${describeError(error)}`);
    }
    if (!stats.isDirectory()) throw new NotFoundError('NOT_FOUND', `the source ${root} is not a directory`);
    return new DirSource(root);
  }

  async readCacheInfo(): Promise<string | undefined> {
    try {
      return await this.#readSmall(join(this.#root, 'nix-cache-info'), 1 << 16);
    } catch (error) {
      if (error instanceof SourceFileMissingError) return undefined;
      throw error;
    }
  }

  async *listNarInfos(): AsyncIterable<string> {
    let dir;
    try {
      dir = await opendir(this.#root, { bufferSize: LISTING_BUFFER });
    } catch (error) {
      throw new SourceReadError(`cannot list ${this.#root}: ${describeError(error)}`, { cause: error });
    }
    // The iterator closes the directory when the loop ends, early or not.
    try {
      for await (const entry of dir) {
        if ((entry.isFile() || entry.isSymbolicLink()) && NARINFO_FILE_NAME.test(entry.name))
          yield entry.name;
      }
    } catch (error) {
      throw new SourceReadError(`cannot list ${this.#root}: ${describeError(error)}`, { cause: error });
    }
  }

  readNarInfo(name: string, maxBytes: number): Promise<string> {
    return this.#readSmall(join(this.#root, ...relativeUrlSegments(name)), maxBytes);
  }

  async openFile(url: string): Promise<Readable> {
    const path = join(this.#root, ...relativeUrlSegments(url));
    const handle = await this.#openRegular(path);
    // The stream owns the handle from here and closes it when it ends or is destroyed.
    return handle.createReadStream({ highWaterMark: 1 << 20 });
  }

  async hasFile(url: string): Promise<boolean> {
    try {
      return (await stat(join(this.#root, ...relativeUrlSegments(url)))).isFile();
    } catch (error) {
      if (isMissing(error)) return false;
      throw new SourceReadError(`cannot read ${url} in ${this.#root}: ${describeError(error)}`, {
        cause: error,
      });
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  async #openRegular(path: string): Promise<FileHandle> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (error) {
      if (isMissing(error)) throw new SourceFileMissingError(`${path} does not exist`);
      throw new SourceReadError(`cannot open ${path}: ${describeError(error)}`, { cause: error });
    }
    try {
      if (!(await handle.stat()).isFile()) throw new SourceFileMissingError(`${path} is not a file`);
      return handle;
    } catch (error) {
      await handle.close();
      if (error instanceof SourceFileMissingError) throw error;
      throw new SourceReadError(`cannot read ${path}: ${describeError(error)}`, { cause: error });
    }
  }

  async #readSmall(path: string, maxBytes: number): Promise<string> {
    const handle = await this.#openRegular(path);
    try {
      const { size } = await handle.stat();
      if (size > maxBytes) {
        throw new InvalidInputError(
          'NARINFO_INVALID',
          `${path} is ${size} bytes, over the limit of ${maxBytes}`,
        );
      }
      return await handle.readFile('utf8');
    } catch (error) {
      if (error instanceof InvalidInputError) throw error;
      throw new SourceReadError(`cannot read ${path}: ${describeError(error)}`, { cause: error });
    } finally {
      await handle.close();
    }
  }
}
