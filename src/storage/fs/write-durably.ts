// The one-trip durable write of native/src/files.c: create a temp file, write, fdatasync, close, rename
// into place, fsync the directory, all on one thread-pool thread. Through node:fs the same eight calls are
// eight round trips between the event loop and the pool, which cost a small upload more than the calls.
import { loadAddon } from '../../util/native-addon.js';

interface NativeFiles {
  writeDurably(
    tempPath: string,
    data: Uint8Array,
    finalPath: string,
    dirPath: string,
    callback: (error: (Error & { code?: string; step?: number }) | null) => void,
  ): void;
}

const native = loadAddon('niche_files', 'native file writes') as NativeFiles;

/** The call that failed, in the words of the streaming put's errors. */
export const WRITE_STEPS = [
  'create a temp file',
  'write a temp file',
  'fdatasync a temp file',
  'close a temp file',
  'rename a temp file',
  'fsync a blob directory',
] as const;

export class DurableWriteError extends Error {
  readonly code: string | undefined;
  /** Which call failed: an index into WRITE_STEPS. At 5 (the directory's fsync) the file is in place. */
  readonly step: number;

  constructor(error: Error & { code?: string; step?: number }) {
    const step = error.step ?? 0;
    super(`cannot ${WRITE_STEPS[step] ?? 'write a file'}: ${error.message}`, { cause: error });
    this.name = 'DurableWriteError';
    this.code = error.code;
    this.step = step;
  }
}

/**
 * Writes `data` to `tempPath` (which must not exist), makes it durable and renames it to `finalPath` in
 * `dirPath`, whose entry is then fsynced. Rejects with a DurableWriteError; before the rename nothing is
 * left behind.
 */
export function writeDurably(
  tempPath: string,
  data: Uint8Array,
  finalPath: string,
  dirPath: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    native.writeDurably(tempPath, data, finalPath, dirPath, (error) => {
      if (error === null) resolve();
      else reject(new DurableWriteError(error));
    });
  });
}
