// Replacing small configuration files (the client config, nix.conf, netrc) so that a crash or a full disk
// never leaves a half-written file: temp file in the same directory, written with its final mode (0600
// for files holding tokens), fsynced, renamed over the old file, directory fsynced. A symlinked target
// (home-manager, NixOS) is followed so the link stays; one into the Nix store is read-only by design and
// refused with a clear error instead of being silently replaced by a file.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open, readFile, readlink, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { NicheError } from '../errors.js';

export class FileNotWritableError extends NicheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('config', 'FILE_NOT_WRITABLE', message, options);
  }
}

/** The file's text, or undefined if it does not exist. */
export async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Follows symlinks to the file that would really be written (which may not exist yet). */
async function resolveTarget(path: string): Promise<string> {
  try {
    const info = await lstat(path);
    if (!info.isSymbolicLink()) return path;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return path;
    throw error;
  }
  try {
    return await realpath(path);
  } catch {
    // A dangling link: writing creates its target, as `echo >> link` would.
    return resolve(dirname(path), await readlink(path));
  }
}

export interface WriteOptions {
  /** The file's mode. Without it, an existing file keeps its mode and a new one gets 0644. */
  readonly mode?: number;
  /** The mode of directories created on the way. */
  readonly dirMode?: number;
  /** The Nix store directory (files in it are read-only). */
  readonly storeDir?: string;
}

/** Writes `text` to `path` atomically. Creates missing parent directories. */
export async function writeFileAtomic(path: string, text: string, options: WriteOptions = {}): Promise<void> {
  const target = await resolveTarget(path);
  const storeDir = options.storeDir ?? '/nix/store';
  if (target.startsWith(`${storeDir}/`)) {
    throw new FileNotWritableError(
      `${path} is a link into the Nix store (${target}), managed by your Nix configuration (NixOS or ` +
        'home-manager); make the change there instead',
    );
  }
  const dir = dirname(target);
  await mkdir(dir, { recursive: true, mode: options.dirMode ?? 0o755 });
  let mode = options.mode;
  if (mode === undefined) {
    mode = await stat(target).then(
      (info) => info.mode & 0o7777,
      () => 0o644,
    );
  }
  const temp = join(dir, `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    try {
      await handle.writeFile(text, 'utf8');
      // The umask may have cleared bits of the requested mode; set it exactly.
      await handle.chmod(mode);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    if (
      (error as NodeJS.ErrnoException).code === 'EACCES' ||
      (error as NodeJS.ErrnoException).code === 'EROFS'
    ) {
      throw new FileNotWritableError(`cannot write ${target}: ${(error as Error).message}`, { cause: error });
    }
    throw error;
  }
  const dirHandle = await open(dir, constants.O_RDONLY).catch(() => undefined);
  if (dirHandle !== undefined) {
    await dirHandle.sync().catch(() => undefined);
    await dirHandle.close();
  }
}

/** Makes sure an existing file has exactly `mode` (e.g. a netrc someone created world-readable). */
export async function ensureMode(path: string, mode: number): Promise<void> {
  const info = await stat(path);
  if ((info.mode & 0o7777) !== mode) await chmod(path, mode);
}
