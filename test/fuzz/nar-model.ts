// A second, deliberately simple model of the NAR format for the fuzz test: file trees as plain values,
// their NAR encoding (through niche's token primitives), and a whole-buffer recursive-descent validator
// written from PROTOCOL.md §1 independently of the streaming parser (src/nix/nar-parser.ts). The server
// must accept exactly the NARs this validator accepts.
import { narTokens, NAR_MAX_NAME_LENGTH, NAR_MAX_TARGET_LENGTH } from '../../src/nix/nar-format.js';
import { NAR_MAX_DEPTH } from '../../src/nix/nar-parser.js';

export type NarNode =
  | { readonly type: 'regular'; readonly executable: boolean; readonly contents: Uint8Array }
  | { readonly type: 'symlink'; readonly target: string }
  | { readonly type: 'directory'; readonly entries: readonly (readonly [string, NarNode])[] };

function encodeNode(node: NarNode, out: Buffer[]): void {
  switch (node.type) {
    case 'regular':
      out.push(
        narTokens('(', 'type', 'regular', ...(node.executable ? ['executable', ''] : []), 'contents'),
        narTokens(node.contents, ')'),
      );
      return;
    case 'symlink':
      out.push(narTokens('(', 'type', 'symlink', 'target', node.target, ')'));
      return;
    case 'directory':
      out.push(narTokens('(', 'type', 'directory'));
      for (const [name, child] of node.entries) {
        out.push(narTokens('entry', '(', 'name', name, 'node'));
        encodeNode(child, out);
        out.push(narTokens(')'));
      }
      out.push(narTokens(')'));
  }
}

/** The NAR of `node` (entries must already be valid and sorted: see `sortedEntries`). */
export function encodeNar(node: NarNode): Buffer {
  const out = [narTokens('nix-archive-1')];
  encodeNode(node, out);
  return Buffer.concat(out);
}

/** Entries with valid, distinct names, in NAR order (by their UTF-8 bytes). */
export function sortedEntries(entries: readonly (readonly [string, NarNode])[]): [string, NarNode][] {
  const byName = new Map<string, NarNode>();
  for (const [name, node] of entries) {
    if (isValidName(Buffer.from(name))) byName.set(name, node);
  }
  return [...byName].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

function isValidName(name: Buffer): boolean {
  return (
    name.length > 0 &&
    name.length <= NAR_MAX_NAME_LENGTH &&
    !name.includes(0x2f) &&
    !name.includes(0) &&
    name.toString('latin1') !== '.' &&
    name.toString('latin1') !== '..'
  );
}

class Invalid extends Error {}

/** Why `nar` is not a valid NAR, or undefined if it is one. */
export function narProblem(nar: Buffer): string | undefined {
  let at = 0;
  const string = (): Buffer => {
    if (at + 8 > nar.length) throw new Invalid(`truncated length at ${at}`);
    const low = nar.readUInt32LE(at);
    const high = nar.readUInt32LE(at + 4);
    if (high !== 0) throw new Invalid(`string of 2^32 bytes or more at ${at}`);
    const padded = low + ((8 - (low % 8)) % 8);
    if (at + 8 + padded > nar.length) throw new Invalid(`truncated string at ${at}`);
    const value = nar.subarray(at + 8, at + 8 + low);
    if (nar.subarray(at + 8 + low, at + 8 + padded).some((byte) => byte !== 0)) {
      throw new Invalid(`non-zero padding after the string at ${at}`);
    }
    at += 8 + padded;
    return value;
  };
  const expect = (...keywords: string[]): void => {
    for (const keyword of keywords) {
      const start = at;
      if (string().toString('latin1') !== keyword) throw new Invalid(`expected "${keyword}" at ${start}`);
    }
  };
  const node = (depth: number): void => {
    expect('(', 'type');
    const type = string().toString('latin1');
    if (type === 'regular') {
      let field = string().toString('latin1');
      if (field === 'executable') {
        if (string().length !== 0) throw new Invalid('executable marker is not empty');
        field = string().toString('latin1');
      }
      if (field !== 'contents') throw new Invalid('expected "contents"');
      string();
      expect(')');
    } else if (type === 'symlink') {
      expect('target');
      const target = string();
      if (target.length === 0 || target.length > NAR_MAX_TARGET_LENGTH || target.includes(0)) {
        throw new Invalid('bad symlink target');
      }
      expect(')');
    } else if (type === 'directory') {
      if (depth >= NAR_MAX_DEPTH) throw new Invalid('too deep');
      let previous: Buffer | undefined;
      for (;;) {
        const item = string().toString('latin1');
        if (item === ')') return;
        if (item !== 'entry') throw new Invalid('expected "entry" or ")"');
        expect('(', 'name');
        const name = string();
        if (!isValidName(name)) throw new Invalid('bad entry name');
        if (previous !== undefined && Buffer.compare(previous, name) >= 0) {
          throw new Invalid('entries not sorted or not unique');
        }
        previous = name;
        expect('node');
        node(depth + 1);
        expect(')');
      }
    } else {
      throw new Invalid(`unknown node type`);
    }
  };
  try {
    expect('nix-archive-1');
    node(0);
    if (at !== nar.length) throw new Invalid(`data after the end of the NAR at ${at}`);
    return undefined;
  } catch (error) {
    if (error instanceof Invalid) return error.message;
    throw error;
  }
}
