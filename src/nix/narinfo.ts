// The `.narinfo` file (PROTOCOL.md §3): the metadata of one store path in a binary cache. The parser is
// deliberately stricter than Nix's, because a narinfo that Nix would misread (CRLF, a blank line that
// silently hides a field, a second References line) must be refused at upload with a message naming the
// line, not discovered later by a failing client. The writer produces exactly what Nix writes.

import { NixFormatError } from '../errors.js';
import { parseContentAddress } from './content-address.js';
import { Hash } from './hash.js';
import { parseSignature } from './signature.js';
import { DEFAULT_STORE_DIR, StorePath } from './store-path.js';

export interface NarInfo {
  storePath: StorePath;
  url: string;
  compression: string;
  fileHash: Hash | undefined;
  fileSize: number | undefined;
  narHash: Hash;
  narSize: number;
  references: StorePath[];
  /** Base name of the deriver (`<hash>-<name>.drv`), if known. */
  deriver: string | undefined;
  system: string | undefined;
  /** `Sig` values (`<key name>:<base64>`), in file order. */
  signatures: string[];
  ca: string | undefined;
}

export interface ParseNarInfoOptions {
  readonly storeDir?: string;
}

/** Compression names Nix knows (§3.2); Nix 2.35 refuses any other. */
export const NARINFO_COMPRESSIONS: ReadonlySet<string> = new Set([
  'none',
  'xz',
  'bzip2',
  'zstd',
  'br',
  'gzip',
  'lz4',
  'lzip',
  'lzma',
  'lzop',
  'grzip',
  'lrzip',
  'compress',
]);

const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
// Anything a value may not contain: controls (including \r and \t), and leading or trailing spaces.
// eslint-disable-next-line no-control-regex
const BAD_VALUE_CHARS = /[\u0000-\u001f\u007f]/;

const SINGLE_VALUED = new Set([
  'StorePath',
  'URL',
  'Compression',
  'FileHash',
  'FileSize',
  'NarHash',
  'NarSize',
  'References',
  'Deriver',
  'System',
  'CA',
]);

class LineError extends Error {}

function parseDecimal(value: string): number {
  if (!DECIMAL.test(value)) throw new LineError('expected a plain decimal number');
  const number = Number(value);
  if (!Number.isSafeInteger(number)) throw new LineError('the number is too large');
  return number;
}

function parsePrefixedHash(value: string): Hash {
  try {
    return Hash.parsePrefixed(value);
  } catch (error) {
    throw new LineError(error instanceof Error ? error.message : String(error));
  }
}

function parseBaseName(value: string): StorePath {
  try {
    return StorePath.parseBaseName(value);
  } catch (error) {
    throw new LineError(error instanceof Error ? error.message : String(error));
  }
}

/** Parses a narinfo strictly. Throws NARINFO_INVALID naming the line and field. */
export function parseNarInfo(text: string, options: ParseNarInfoOptions = {}): NarInfo {
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  const fail = (line: number, message: string): never => {
    throw new NixFormatError('NARINFO_INVALID', `narinfo line ${line}: ${message}`);
  };

  if (text.length === 0) throw new NixFormatError('NARINFO_INVALID', 'narinfo is empty');
  const lines = text.split('\n');
  // A final "\n" leaves one empty string at the end; its absence leaves the last line there.
  if (lines.pop() !== '') fail(lines.length + 1, 'the last line does not end with a newline');

  let storePath: StorePath | undefined;
  let url: string | undefined;
  let compression: string | undefined;
  let fileHash: Hash | undefined;
  let fileSize: number | undefined;
  let narHash: Hash | undefined;
  let narSize: number | undefined;
  let references: StorePath[] = [];
  let deriver: string | undefined;
  let system: string | undefined;
  const signatures: string[] = [];
  let ca: string | undefined;
  const seen = new Set<string>();

  for (const [index, line] of lines.entries()) {
    const number = index + 1;
    if (line === '') fail(number, 'blank line (a narinfo has no blank lines)');
    if (line.includes('\r')) fail(number, 'carriage return (narinfo lines end in LF only, not CRLF)');
    const colon = line.indexOf(':');
    if (colon <= 0) fail(number, `expected "Key: value", got ${JSON.stringify(line)}`);
    const key = line.slice(0, colon);
    if (line[colon + 1] !== ' ') fail(number, `expected exactly one space after "${key}:"`);
    const value = line.slice(colon + 2);
    if (!SINGLE_VALUED.has(key) && key !== 'Sig') continue; // unknown keys are ignored, as Nix does
    if (seen.has(key) && key !== 'Sig') fail(number, `duplicate ${key} line`);
    seen.add(key);
    if (BAD_VALUE_CHARS.test(value)) fail(number, `${key} contains a control character`);
    if (value !== value.trim() && !(key === 'References' && value === '')) {
      fail(number, `${key} has extra spaces around its value`);
    }
    if (value === '' && key !== 'References') fail(number, `${key} is empty`);

    try {
      switch (key) {
        case 'StorePath':
          try {
            storePath = StorePath.parse(value, storeDir);
          } catch (error) {
            throw new LineError(error instanceof Error ? error.message : String(error));
          }
          break;
        case 'URL':
          if (/\s/.test(value)) throw new LineError('the URL contains whitespace');
          url = value;
          break;
        case 'Compression':
          if (!NARINFO_COMPRESSIONS.has(value)) {
            throw new LineError(`unknown compression ${JSON.stringify(value)}`);
          }
          compression = value;
          break;
        case 'FileHash':
          fileHash = parsePrefixedHash(value);
          break;
        case 'FileSize':
          fileSize = parseDecimal(value);
          break;
        case 'NarHash':
          narHash = parsePrefixedHash(value);
          if (narHash.algorithm !== 'sha256') throw new LineError('the NAR hash must be sha256');
          break;
        case 'NarSize':
          narSize = parseDecimal(value);
          if (narSize === 0) throw new LineError('NarSize must be greater than 0');
          break;
        case 'References': {
          references = value === '' ? [] : value.split(' ').map(parseBaseName);
          const unique = new Set(references.map((reference) => reference.baseName));
          if (unique.size !== references.length) throw new LineError('a reference is listed twice');
          break;
        }
        case 'Deriver':
          if (value !== 'unknown-deriver') deriver = parseBaseName(value).baseName;
          break;
        case 'System':
          system = value;
          break;
        case 'Sig':
          try {
            parseSignature(value);
          } catch (error) {
            throw new LineError(error instanceof Error ? error.message : String(error));
          }
          if (signatures.includes(value)) throw new LineError('the same signature is listed twice');
          signatures.push(value);
          break;
        case 'CA':
          try {
            parseContentAddress(value);
          } catch (error) {
            throw new LineError(error instanceof Error ? error.message : String(error));
          }
          ca = value;
          break;
      }
    } catch (error) {
      if (error instanceof LineError) fail(number, `invalid ${key}: ${error.message}`);
      throw error;
    }
  }

  const missing = (field: string): never => {
    throw new NixFormatError('NARINFO_INVALID', `narinfo has no ${field} line (it is required)`);
  };
  return {
    storePath: storePath ?? missing('StorePath'),
    url: url ?? missing('URL'),
    compression: compression ?? 'bzip2',
    fileHash,
    fileSize,
    narHash: narHash ?? missing('NarHash'),
    narSize: narSize ?? missing('NarSize'),
    references,
    deriver,
    system,
    signatures,
    ca,
  };
}

/** Base names sorted bytewise (they are ASCII, so code-unit order is byte order). */
function sortedBaseNames(references: readonly StorePath[]): string[] {
  return [...new Set(references.map((reference) => reference.baseName))].sort();
}

/** The narinfo as Nix writes it: canonical field order, `sha256:<nix32>` hashes, sorted references. */
export function formatNarInfo(info: NarInfo, storeDir: string = DEFAULT_STORE_DIR): string {
  const lines = [`StorePath: ${info.storePath.toString(storeDir)}`, `URL: ${info.url}`];
  lines.push(`Compression: ${info.compression}`);
  if (info.fileHash !== undefined) lines.push(`FileHash: ${info.fileHash.toString()}`);
  if (info.fileSize !== undefined) lines.push(`FileSize: ${info.fileSize}`);
  lines.push(`NarHash: ${info.narHash.toString()}`, `NarSize: ${info.narSize}`);
  lines.push(`References: ${sortedBaseNames(info.references).join(' ')}`);
  if (info.deriver !== undefined) lines.push(`Deriver: ${info.deriver}`);
  if (info.system !== undefined) lines.push(`System: ${info.system}`);
  for (const signature of info.signatures) lines.push(`Sig: ${signature}`);
  if (info.ca !== undefined) lines.push(`CA: ${info.ca}`);
  return `${lines.join('\n')}\n`;
}

/**
 * The message a narinfo signature signs (§4.2):
 * `1;<storePath>;sha256:<nix32 narHash>;<narSize>;<sorted, de-duplicated full reference paths>`.
 */
export function narInfoFingerprint(
  info: Pick<NarInfo, 'storePath' | 'narHash' | 'narSize' | 'references'>,
  storeDir: string = DEFAULT_STORE_DIR,
): string {
  if (info.narHash.algorithm !== 'sha256') {
    throw new NixFormatError('NARINFO_INVALID', 'cannot fingerprint a path whose NAR hash is not sha256');
  }
  if (!Number.isSafeInteger(info.narSize) || info.narSize <= 0) {
    throw new NixFormatError('NARINFO_INVALID', `cannot fingerprint a path with NarSize ${info.narSize}`);
  }
  const references = sortedBaseNames(info.references).map((baseName) => `${storeDir}/${baseName}`);
  return `1;${info.storePath.toString(storeDir)};${info.narHash.toString()};${info.narSize};${references.join(',')}`;
}
