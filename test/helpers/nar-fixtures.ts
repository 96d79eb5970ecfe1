// Builds NAR uploads for tests: a NAR (via niche's own writer from a temp tree), compressed, with the
// hashes and narinfo text Nix would send for it.
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { narFileExtension, type Compression } from '../../src/nix/compression.js';
import { encodeNix32 } from '../../src/nix/nix32.js';
import { narFromPath } from '../../src/nix/nar-writer.js';
import { createCompressor } from '../../src/util/compression.js';

export interface NarFixture {
  readonly nar: Buffer;
  readonly file: Buffer;
  readonly compression: Compression;
  readonly narHash: string; // nix32
  readonly fileHash: string; // nix32
  readonly fileName: string; // <filehash>.nar<ext>
}

export function sha256Nix32(data: Buffer): string {
  return encodeNix32(createHash('sha256').update(data).digest());
}

export async function narOfContents(contents: string | Buffer): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'niche-fixture-'));
  try {
    const file = join(dir, 'file');
    await writeFile(file, contents);
    return await buffer(narFromPath(file));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function compress(data: Buffer, compression: Exclude<Compression, 'bzip2'>): Promise<Buffer> {
  return buffer(Readable.from([data]).pipe(createCompressor(compression)));
}

export async function fixture(
  contents: string | Buffer,
  compression: Exclude<Compression, 'bzip2'> = 'xz',
): Promise<NarFixture> {
  const nar = await narOfContents(contents);
  const file = await compress(nar, compression);
  const fileHash = sha256Nix32(file);
  return {
    nar,
    file,
    compression,
    narHash: sha256Nix32(nar),
    fileHash,
    fileName: `${fileHash}.nar${narFileExtension(compression)}`,
  };
}

/** A store path base name with a hash derived from a label (not a real Nix hash; fine for a cache). */
export function fakeBaseName(label: string): string {
  const hash = encodeNix32(createHash('sha256').update(label).digest().subarray(0, 20));
  return `${hash}-${label}`;
}

export function narInfoText(
  baseName: string,
  fx: NarFixture,
  overrides: { references?: readonly string[]; extra?: string; narHash?: string; narSize?: number } = {},
): string {
  return (
    `StorePath: /nix/store/${baseName}\n` +
    `URL: nar/${fx.fileName}\n` +
    `Compression: ${fx.compression}\n` +
    `FileHash: sha256:${fx.fileHash}\n` +
    `FileSize: ${fx.file.length}\n` +
    `NarHash: sha256:${overrides.narHash ?? fx.narHash}\n` +
    `NarSize: ${overrides.narSize ?? fx.nar.length}\n` +
    `References: ${(overrides.references ?? []).join(' ')}\n` +
    (overrides.extra ?? '')
  );
}
