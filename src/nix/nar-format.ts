// The NAR wire primitives shared by the writer, the parser and tests: every NAR token is a `str()`, an
// 8-byte little-endian length, the bytes, then zero padding to a multiple of 8 (PROTOCOL.md §1.1-§1.3).

/** Bytes of zero padding after a string of `length` bytes. */
export function narPadding(length: number): number {
  return (8 - (length & 7)) & 7;
}

/** The encoded size of a NAR string of `length` bytes: length word, bytes, padding. */
export function narStringSize(length: number): number {
  return 8 + length + narPadding(length);
}

/** Writes an unsigned integer (below 2^53) as a u64 little-endian at `offset`; returns the next offset. */
export function writeNarInt(target: Buffer, value: number, offset: number): number {
  target.writeUInt32LE(value % 0x1_0000_0000, offset);
  target.writeUInt32LE(Math.floor(value / 0x1_0000_0000), offset + 4);
  return offset + 8;
}

/** Writes `str(bytes)` at `offset` (padding zeroed); returns the next offset. */
export function writeNarString(target: Buffer, bytes: Uint8Array, offset: number): number {
  let at = writeNarInt(target, bytes.length, offset);
  target.set(bytes, at);
  at += bytes.length;
  const end = at + narPadding(bytes.length);
  target.fill(0, at, end);
  return end;
}

/** `str(s)` as a new buffer; strings are encoded as UTF-8. */
export function narString(value: Uint8Array | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const out = Buffer.allocUnsafe(narStringSize(bytes.length));
  writeNarString(out, bytes, 0);
  return out;
}

/** Several tokens in a row, as one buffer: `narTokens('(', 'type', 'regular')`. */
export function narTokens(...values: (Uint8Array | string)[]): Buffer {
  return Buffer.concat(values.map((value) => narString(value)));
}

export const NAR_MAGIC = 'nix-archive-1';

/**
 * Limits on token lengths. Names: Linux's NAME_MAX, also enforced by Nix since 2.35 (2.8 has no limit, but
 * no filesystem Nix runs on can hold a longer name). Symlink targets: PATH_MAX - 1, as Nix since 2.35.
 */
export const NAR_MAX_NAME_LENGTH = 255;
export const NAR_MAX_TARGET_LENGTH = 4095;
/** The longest keyword (`nix-archive-1`, `executable`, `directory`...) is 13 bytes; Nix allows 32. */
export const NAR_MAX_KEYWORD_LENGTH = 32;
