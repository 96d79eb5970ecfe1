// Browsing inside one store path (`serve/<hash>/<path>`): directory listings and single files, for humans
// and scripts that want one file without the whole NAR. Every request is confined to its store path:
// the requested path is resolved with realpath (all symlinks followed) and must still lie inside the store
// path, so neither `..` nor a symlink (relative or into another store path or /etc) leads anywhere else.
import { lstat, open, readdir, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ForbiddenError, NotFoundError } from '../errors.js';

export interface BrowseEntry {
  readonly name: string;
  readonly type: 'directory' | 'regular' | 'symlink' | 'other';
  readonly size: number | undefined;
  readonly executable: boolean;
  /** For symlinks: the target, verbatim. */
  readonly target: string | undefined;
}

export type BrowseResult =
  | { readonly kind: 'directory'; readonly entries: readonly BrowseEntry[] }
  | { readonly kind: 'file'; readonly handle: FileHandle; readonly size: number; readonly name: string };

function outside(): ForbiddenError {
  return new ForbiddenError('the requested file is outside the store path');
}

/**
 * Resolves `segments` (already URL-decoded) inside the store path `baseName` of `storeDir`. A file comes
 * back open (the caller closes it); anything leaving the store path is a ForbiddenError, anything missing
 * a NotFoundError.
 */
export async function browseStorePath(
  storeDir: string,
  baseName: string,
  segments: readonly string[],
): Promise<BrowseResult> {
  for (const segment of segments) {
    if (segment === '..' || segment.includes('/') || segment.includes('\0')) throw outside();
  }
  const relative = segments.filter((segment) => segment !== '' && segment !== '.');
  let realRoot: string;
  let real: string;
  try {
    // The store path itself is not followed: one that is a symlink confines requests to nothing.
    realRoot = join(await realpath(storeDir), baseName);
    real = await realpath(join(storeDir, baseName, ...relative));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') {
      throw new NotFoundError('NOT_FOUND', 'no such file in the store path');
    }
    throw error;
  }
  if (real !== realRoot && !real.startsWith(`${realRoot}/`)) throw outside();

  const stats = await lstat(real);
  if (stats.isDirectory()) {
    const names = (await readdir(real)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const entries: BrowseEntry[] = [];
    for (const name of names) entries.push(await describe(join(real, name), name));
    return { kind: 'directory', entries };
  }
  if (!stats.isFile()) throw new NotFoundError('NOT_FOUND', 'not a regular file or directory');
  const handle = await open(real, 'r');
  return { kind: 'file', handle, size: stats.size, name: relative.at(-1) ?? baseName };
}

async function describe(path: string, name: string): Promise<BrowseEntry> {
  const stats = await lstat(path);
  if (stats.isSymbolicLink()) {
    return { name, type: 'symlink', size: undefined, executable: false, target: await readlink(path) };
  }
  const type = stats.isDirectory() ? 'directory' : stats.isFile() ? 'regular' : 'other';
  return {
    name,
    type,
    size: type === 'regular' ? stats.size : undefined,
    executable: type === 'regular' && (stats.mode & 0o100) !== 0,
    target: undefined,
  };
}
