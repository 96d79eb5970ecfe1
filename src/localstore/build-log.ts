// Build logs of the host's Nix, for `nix log` against the local store (PROTOCOL.md §7.4). Nix keeps them in
// `<logDir>/drvs/<first two characters of the .drv base name>/<the rest>`, plain or bzip2-compressed
// (`.bz2`, the default). They are always served as plain text: a transport `Content-Encoding: bzip2` is
// something libcurl-based clients (Nix 2.34+, browsers) cannot decode (PROTOCOL.md §6.5).
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, pipeline } from 'node:stream';
import { createDecompressor } from '../util/compression.js';

export interface OpenedLog {
  readonly stream: Readable;
  /** Bytes of the plain log, when known without decompressing it. */
  readonly size: number | undefined;
}

/** The log file for `drvBaseName` (`<hash>-<name>.drv`, already validated), or undefined if there is none. */
export async function openBuildLog(logDir: string, drvBaseName: string): Promise<OpenedLog | undefined> {
  const file = join(logDir, 'drvs', drvBaseName.slice(0, 2), drvBaseName.slice(2));
  const plain = await openIfExists(file);
  if (plain !== undefined) {
    const { size } = await plain.stat();
    if (size === 0) {
      await plain.close();
      return { stream: Readable.from([]), size };
    }
    // Bounded by the size announced in Content-Length, even if the log is still growing.
    return { stream: plain.createReadStream({ start: 0, end: size - 1 }), size };
  }
  const compressed = await openIfExists(`${file}.bz2`);
  if (compressed === undefined) return undefined;
  const decompressor = createDecompressor('bzip2');
  // Errors of either side end up on the decompressor, which is what the caller sends; destroying it (the
  // client went away) closes the file.
  pipeline(compressed.createReadStream(), decompressor, () => undefined);
  return { stream: decompressor, size: undefined };
}

async function openIfExists(file: string): Promise<FileHandle | undefined> {
  try {
    return await open(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
}
