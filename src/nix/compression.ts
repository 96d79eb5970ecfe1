// The NAR compressions niche accepts for uploads, and the mapping between them and NAR file names
// (`nar/<FileHash nix32>.nar<ext>`, PROTOCOL.md §3.2). Pure names only: the codecs live elsewhere.

import { NixFormatError } from '../errors.js';
import { isNix32 } from './nix32.js';

export type Compression = 'xz' | 'zstd' | 'bzip2' | 'br' | 'none';

export const COMPRESSIONS: readonly Compression[] = ['xz', 'zstd', 'bzip2', 'br', 'none'];

const EXTENSIONS: Readonly<Record<Compression, string>> = {
  xz: '.xz',
  zstd: '.zst',
  bzip2: '.bz2',
  br: '.br',
  none: '',
};

export function isCompression(name: string): name is Compression {
  return Object.hasOwn(EXTENSIONS, name);
}

/** A narinfo `Compression` value niche accepts. Throws COMPRESSION_INVALID for anything else. */
export function parseCompression(name: string): Compression {
  if (!isCompression(name)) {
    throw new NixFormatError(
      'COMPRESSION_INVALID',
      `unsupported compression ${JSON.stringify(name)}; expected one of ${COMPRESSIONS.join(', ')}`,
    );
  }
  return name;
}

/** The suffix after `.nar`: `.xz`, `.zst`, `.bz2`, `.br`, or '' for none. */
export function narFileExtension(compression: Compression): string {
  return EXTENSIONS[compression];
}

/** `<nix32 file hash>.nar<ext>`, the canonical NAR file name. */
export function narFileName(fileHashNix32: string, compression: Compression): string {
  return `${fileHashNix32}.nar${EXTENSIONS[compression]}`;
}

const NAR_FILE_NAME = /^([0-9a-z]{52})\.nar(|\.xz|\.zst|\.bz2|\.br)$/;
const BY_EXTENSION = new Map<string, Compression>(COMPRESSIONS.map((c) => [EXTENSIONS[c], c]));

/** A NAR file's name, `<52 nix32>.nar[.xz|.zst|.bz2|.br]`, split. */
export interface NarFileName {
  readonly fileHash: string;
  readonly compression: Compression;
}

/** Splits `<52 nix32>.nar[.xz|.zst|.bz2|.br]`; undefined for any other name. */
export function parseNarFileName(fileName: string): NarFileName | undefined {
  const match = NAR_FILE_NAME.exec(fileName);
  const fileHash = match?.[1];
  const compression = BY_EXTENSION.get(match?.[2] ?? '-');
  if (fileHash === undefined || compression === undefined || !isNix32(fileHash, 52)) return undefined;
  return { fileHash, compression };
}
