// Builds the `<hash>.ls` NAR listing (PROTOCOL.md §7.1) from NarParser events, so a listing can be made
// while an upload streams through the validator, without unpacking anything. Memory grows with the number
// of entries, not with the NAR's size.

import { NixFormatError } from '../errors.js';
import type { NarVisitor } from './nar-parser.js';

export type NarListingNode =
  | { type: 'regular'; size: number; executable?: true; narOffset: number }
  | { type: 'directory'; entries: Record<string, NarListingNode> }
  | { type: 'symlink'; target: string };

export interface NarListing {
  version: 1;
  root: NarListingNode;
}

// Internal tree: entries in a Map, so insertion (= NAR = byte) order is kept even for names like "10".
type Node =
  | { type: 'regular'; size: number; executable: boolean; narOffset: number }
  | { type: 'directory'; entries: Map<string, Node> }
  | { type: 'symlink'; target: string };

type DirectoryNode = Extract<Node, { type: 'directory' }>;

export class NarListingBuilder implements NarVisitor {
  private root: Node | undefined;
  /** The directories on the way to the most recent node; index i holds the directory at depth i. */
  private readonly open: DirectoryNode[] = [];

  directory(path: readonly string[]): void {
    const node: DirectoryNode = { type: 'directory', entries: new Map() };
    this.add(path, node);
    this.open.push(node);
  }

  file(path: readonly string[], size: number, executable: boolean, narOffset: number): void {
    this.add(path, { type: 'regular', size, executable, narOffset });
  }

  symlink(path: readonly string[], target: string): void {
    this.add(path, { type: 'symlink', target });
  }

  private add(path: readonly string[], node: Node): void {
    const depth = path.length;
    if (depth === 0) {
      if (this.root !== undefined) throw this.misuse('a second root node');
      this.root = node;
      return;
    }
    // Events arrive depth first, so the parent is the open directory at depth - 1.
    this.open.length = Math.min(this.open.length, depth);
    const parent = this.open[depth - 1];
    const name = path[depth - 1];
    if (parent === undefined || name === undefined || this.open.length !== depth) {
      throw this.misuse(`an entry ${JSON.stringify(path.join('/'))} outside any directory`);
    }
    parent.entries.set(name, node);
  }

  private misuse(what: string): NixFormatError {
    return new NixFormatError('NAR_INVALID', `NAR listing: ${what}`);
  }

  private rootNode(): Node {
    if (this.root === undefined) throw this.misuse('no root node (was the NAR parsed?)');
    return this.root;
  }

  /**
   * The listing as a plain object. Note that JavaScript orders integer-like keys ("1", "42") first in
   * objects, so `JSON.stringify` of this may order entries differently from Nix; `toString()` does not.
   */
  toJSON(): NarListing {
    return { version: 1, root: toPlain(this.rootNode()) };
  }

  /** The listing exactly as Nix 2.8 writes it: one line, entries in NAR order, no trailing newline. */
  toString(): string {
    const parts: string[] = ['{"version":1,"root":'];
    writeNode(this.rootNode(), parts);
    parts.push('}');
    return parts.join('');
  }
}

function toPlain(node: Node): NarListingNode {
  switch (node.type) {
    case 'regular':
      return node.executable
        ? { type: 'regular', size: node.size, executable: true, narOffset: node.narOffset }
        : { type: 'regular', size: node.size, narOffset: node.narOffset };
    case 'symlink':
      return { type: 'symlink', target: node.target };
    case 'directory': {
      const entries: Record<string, NarListingNode> = {};
      for (const [name, child] of node.entries) {
        // defineProperty, so that an entry called "__proto__" is an ordinary key, not the prototype.
        Object.defineProperty(entries, name, {
          value: toPlain(child),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return { type: 'directory', entries };
    }
  }
}

function writeNode(node: Node, parts: string[]): void {
  switch (node.type) {
    case 'regular':
      parts.push(`{"type":"regular","size":${node.size}`);
      if (node.executable) parts.push(',"executable":true');
      parts.push(`,"narOffset":${node.narOffset}}`);
      return;
    case 'symlink':
      parts.push(`{"type":"symlink","target":${jsonString(node.target)}}`);
      return;
    case 'directory': {
      parts.push('{"type":"directory","entries":{');
      let first = true;
      for (const [name, child] of node.entries) {
        parts.push(first ? `${jsonString(name)}:` : `,${jsonString(name)}:`);
        first = false;
        writeNode(child, parts);
      }
      parts.push('}}');
      return;
    }
  }
}

// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f]/;

/** A JSON string literal escaped the way Nix's JSON writer does it (\n, \r, \t, other controls as \u00XX). */
export function jsonString(text: string): string {
  if (!NEEDS_ESCAPE.test(text)) return `"${text}"`;
  let out = '"';
  for (const char of text) {
    const code = char.charCodeAt(0);
    if (char === '"' || char === '\\') out += `\\${char}`;
    else if (char === '\n') out += '\\n';
    else if (char === '\r') out += '\\r';
    else if (char === '\t') out += '\\t';
    else if (code < 0x20) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += char;
  }
  return `${out}"`;
}
