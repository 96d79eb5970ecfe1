// Renders a stored path as a .narinfo in the canonical form Nix itself writes (PROTOCOL.md §3.1, §3.5).
// It works directly from the stored strings because it runs on every narinfo GET; the round trip through
// the strict parser in src/nix is covered by tests.
import type { PathWithNar } from '../db/metadata-store.js';
import { narFileName, parseCompression } from '../nix/compression.js';

export function renderNarInfo({ path, nar }: Pick<PathWithNar, 'path' | 'nar'>): string {
  let text =
    `StorePath: ${path.storePath}\n` +
    `URL: nar/${narFileName(nar.fileHash, parseCompression(nar.compression))}\n` +
    `Compression: ${nar.compression}\n` +
    `FileHash: sha256:${nar.fileHash}\n` +
    `FileSize: ${nar.fileSize}\n` +
    `NarHash: sha256:${path.narHash}\n` +
    `NarSize: ${path.narSize}\n` +
    `References: ${path.references.join(' ')}\n`;
  if (path.deriver !== undefined) text += `Deriver: ${path.deriver}\n`;
  for (const signature of path.signatures) text += `Sig: ${signature}\n`;
  if (path.ca !== undefined) text += `CA: ${path.ca}\n`;
  return text;
}
