// Strict standard base64 (RFC 4648 with `=` padding), used for hashes, keys and signatures. Node's own
// decoder silently skips invalid characters and ignores missing padding, which would let malformed keys and
// `Sig` lines through; every Nix format we read wants exactly one canonical spelling.

const BASE64_SHAPE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Decodes canonical base64, or returns undefined (bad characters, bad padding, non-zero trailing bits). */
export function decodeBase64Strict(text: string): Buffer | undefined {
  if (!BASE64_SHAPE.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64');
  // Rejects non-zero bits in the last character, which the shape check cannot see.
  if (bytes.toString('base64') !== text) return undefined;
  return bytes;
}

/** The length of the base64 text for `byteLength` bytes, with padding. */
export function base64Length(byteLength: number): number {
  return Math.ceil(byteLength / 3) * 4;
}
