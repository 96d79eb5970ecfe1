// Reads a `<hash>.ls` listing a client uploaded (`write-nar-listing=true`, PROTOCOL.md §7.1) and compares
// it with the listing of a NAR. Clients differ in the details: Nix 2.8 omits `"executable":false` and
// writes entries in NAR order; current Nix writes every key, sorted; Nix before 2.4 wrote no `narOffset`.
// All of those describe the same tree and are accepted; anything that is not a listing, or that describes
// another tree, is refused with a reason.

import { NixFormatError } from '../errors.js';
import { NAR_MAX_NAME_LENGTH } from './nar-format.js';
import type { NarListing, NarListingNode } from './nar-listing.js';
import { NAR_MAX_DEPTH } from './nar-parser.js';

/** An uploaded node, checked for shape: what it says, with optional fields left out when absent. */
export type UploadedListingNode =
  | { type: 'regular'; size: number; executable: boolean; narOffset: number | undefined }
  | { type: 'directory'; entries: Map<string, UploadedListingNode> }
  | { type: 'symlink'; target: string };

function invalid(where: string, what: string): NixFormatError {
  return new NixFormatError('LISTING_INVALID', `NAR listing${where === '' ? '' : ` at ${where}`}: ${what}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function validName(name: string): boolean {
  return (
    name !== '' &&
    name !== '.' &&
    name !== '..' &&
    !name.includes('/') &&
    !name.includes('\0') &&
    Buffer.byteLength(name) <= NAR_MAX_NAME_LENGTH
  );
}

function readNode(value: unknown, where: string, depth: number): UploadedListingNode {
  if (!isRecord(value)) throw invalid(where, 'a node must be an object');
  switch (value.type) {
    case 'regular': {
      if (!isSize(value.size)) throw invalid(where, 'a regular file needs a "size"');
      const executable = value.executable ?? false;
      if (typeof executable !== 'boolean') throw invalid(where, '"executable" must be a boolean');
      const narOffset = value.narOffset;
      if (narOffset !== undefined && !isSize(narOffset)) throw invalid(where, 'bad "narOffset"');
      return { type: 'regular', size: value.size, executable, narOffset };
    }
    case 'symlink':
      if (typeof value.target !== 'string' || value.target === '') {
        throw invalid(where, 'a symlink needs a "target"');
      }
      return { type: 'symlink', target: value.target };
    case 'directory': {
      if (depth >= NAR_MAX_DEPTH) throw invalid(where, `more than ${NAR_MAX_DEPTH} directory levels`);
      if (!isRecord(value.entries)) throw invalid(where, 'a directory needs "entries"');
      const entries = new Map<string, UploadedListingNode>();
      for (const [name, child] of Object.entries(value.entries)) {
        const at = `${where}/${name}`;
        if (!validName(name)) throw invalid(at.slice(0, 200), 'invalid entry name');
        entries.set(name, readNode(child, at, depth + 1));
      }
      return { type: 'directory', entries };
    }
    default:
      throw invalid(where, '"type" must be "regular", "directory" or "symlink"');
  }
}

/** Parses an uploaded listing; throws LISTING_INVALID if it is not one. */
export function parseUploadedListing(text: string): UploadedListingNode {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('', 'not JSON');
  }
  if (!isRecord(value) || value.version !== 1) throw invalid('', 'expected {"version":1,"root":…}');
  return readNode(value.root, '', 0);
}

/**
 * Where `uploaded` and `actual` (the listing of the NAR) first differ, as `path: what`; undefined if they
 * describe the same tree. A missing `narOffset` (old clients) is no difference.
 */
export function listingDifference(uploaded: UploadedListingNode, actual: NarListing): string | undefined {
  return difference(uploaded, actual.root, '');
}

function difference(
  uploaded: UploadedListingNode,
  actual: NarListingNode,
  where: string,
): string | undefined {
  const at = where === '' ? '/' : where;
  if (uploaded.type !== actual.type) return `${at}: a ${uploaded.type}, but the NAR has a ${actual.type}`;
  if (uploaded.type === 'regular' && actual.type === 'regular') {
    if (uploaded.size !== actual.size) return `${at}: size ${uploaded.size}, the NAR has ${actual.size}`;
    if (uploaded.executable !== (actual.executable === true)) return `${at}: executable bit differs`;
    if (uploaded.narOffset !== undefined && uploaded.narOffset !== actual.narOffset) {
      return `${at}: narOffset ${uploaded.narOffset}, the NAR has ${actual.narOffset}`;
    }
    return undefined;
  }
  if (uploaded.type === 'symlink' && actual.type === 'symlink') {
    return uploaded.target === actual.target ? undefined : `${at}: symlink target differs`;
  }
  if (uploaded.type === 'directory' && actual.type === 'directory') {
    const names = Object.keys(actual.entries);
    for (const name of names) {
      const child = uploaded.entries.get(name);
      if (child === undefined) return `${where}/${name}: missing from the listing`;
      const found = difference(child, actual.entries[name] as NarListingNode, `${where}/${name}`);
      if (found !== undefined) return found;
    }
    if (uploaded.entries.size !== names.length) {
      const extra = [...uploaded.entries.keys()].find((name) => !Object.hasOwn(actual.entries, name));
      return `${where}/${extra ?? '?'}: not in the NAR`;
    }
  }
  return undefined;
}
