// An incremental NAR parser and validator. Uploads are checked with it before they are accepted, and
// listings are built from its events, so it must take a NAR of any size in arbitrary chunks, hold only a
// bounded amount of it (one token, at most 4 KiB, plus one path), fail at the first invalid byte with a
// reason, and pass file contents through by length without looking at them byte by byte.

import { Writable } from 'node:stream';
import { NixFormatError } from '../errors.js';
import {
  NAR_MAGIC,
  NAR_MAX_KEYWORD_LENGTH,
  NAR_MAX_NAME_LENGTH,
  NAR_MAX_TARGET_LENGTH,
  narPadding,
} from './nar-format.js';

/**
 * Receives the structure of a NAR as it is parsed, in NAR order (depth first, entries sorted). `path` is
 * the list of entry names from the root (empty for the root node), decoded as UTF-8; callers own it.
 */
export interface NarVisitor {
  directory(path: readonly string[]): void;
  /** A regular file; `narOffset` is the NAR offset of its first content byte. Its data follows. */
  file(path: readonly string[], size: number, executable: boolean, narOffset: number): void;
  /** Contents of the current file, in order. The chunk is a view of the input: copy it to keep it. */
  fileData?(chunk: Buffer): void;
  /** The current file's contents are complete (its padding was valid). */
  fileEnd?(): void;
  symlink(path: readonly string[], target: string): void;
}

/** Directory nesting limit. Nix 2.8 has none and Nix 2.35 allows 64; this only bounds memory. */
export const NAR_MAX_DEPTH = 256;

// What the parser expects next.
const enum State {
  Magic,
  NodeOpen,
  TypeKeyword,
  Type,
  RegularField, // "executable" or "contents"
  ExecutableValue, // ""
  ContentsKeyword,
  Contents, // the file contents string
  NodeClose,
  TargetKeyword,
  Target,
  DirectoryItem, // "entry" or ")"
  EntryOpen,
  NameKeyword,
  Name,
  NodeKeyword,
  EntryClose,
  Done,
  Failed,
}

const EXPECTED: Readonly<Record<State, string>> = {
  [State.Magic]: `the magic "${NAR_MAGIC}"`,
  [State.NodeOpen]: '"("',
  [State.TypeKeyword]: '"type"',
  [State.Type]: '"regular", "symlink" or "directory"',
  [State.RegularField]: '"executable" or "contents"',
  [State.ExecutableValue]: 'the empty executable marker ""',
  [State.ContentsKeyword]: '"contents"',
  [State.Contents]: 'the file contents',
  [State.NodeClose]: '")"',
  [State.TargetKeyword]: '"target"',
  [State.Target]: 'a symlink target',
  [State.DirectoryItem]: '"entry" or ")"',
  [State.EntryOpen]: '"("',
  [State.NameKeyword]: '"name"',
  [State.Name]: 'an entry name',
  [State.NodeKeyword]: '"node"',
  [State.EntryClose]: '")"',
  [State.Done]: 'the end of the NAR',
  [State.Failed]: 'nothing (the parser already failed)',
};

// What is being gathered from the input.
const enum Piece {
  Length, // the 8-byte length word of a string
  Body, // the bytes and padding of a token
  Data, // file contents, passed through
  DataPadding, // padding after file contents
}

const keyword = (text: string): Buffer => Buffer.from(text, 'latin1');
const K_MAGIC = keyword(NAR_MAGIC);
const K_OPEN = keyword('(');
const K_CLOSE = keyword(')');
const K_TYPE = keyword('type');
const K_REGULAR = keyword('regular');
const K_SYMLINK = keyword('symlink');
const K_DIRECTORY = keyword('directory');
const K_EXECUTABLE = keyword('executable');
const K_CONTENTS = keyword('contents');
const K_TARGET = keyword('target');
const K_ENTRY = keyword('entry');
const K_NAME = keyword('name');
const K_NODE = keyword('node');

const SLASH = 0x2f;
const DOT = Buffer.from('.');
const DOT_DOT = Buffer.from('..');
const MAX_BODY = NAR_MAX_TARGET_LENGTH + 8;

/** Shows a token in an error message: printable ASCII as is, the rest escaped, long ones cut. */
function describeToken(token: Buffer): string {
  const shown = token.subarray(0, 64).toString('latin1');
  const escaped = JSON.stringify(shown).replace(
    /[\u007f-\u00ff]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16)}`,
  );
  return token.length > 64 ? `${escaped}... (${token.length} bytes)` : escaped;
}

interface DirectoryFrame {
  previousName: Buffer | undefined;
}

export class NarParser {
  private state: State = State.Magic;
  private piece: Piece = Piece.Length;
  /** Bytes wanted for the current Length/Body/DataPadding piece, or left of the current Data piece. */
  private want = 8;
  /** Length of the token whose body is being read. */
  private tokenLength = 0;
  private readonly gathered = Buffer.alloc(MAX_BODY);
  private gatheredLength = 0;
  private consumed = 0;
  /** Where the token being read started, for error messages. */
  private tokenStart = 0;
  private executable = false;
  private readonly path: string[] = [];
  private readonly directories: DirectoryFrame[] = [];

  constructor(private readonly visitor?: NarVisitor) {}

  /** Bytes consumed so far; once `done`, the NAR's size. */
  get bytesConsumed(): number {
    return this.consumed;
  }

  /** Whether the root node is complete. */
  get done(): boolean {
    return this.state === State.Done;
  }

  /** Parses a chunk. Throws NAR_INVALID at the first invalid byte, including any byte after the NAR. */
  update(chunk: Buffer): void {
    const used = this.feed(chunk);
    if (used < chunk.length) {
      this.fail(`unexpected data after the end of the NAR at byte ${this.consumed}`);
    }
  }

  /**
   * Parses as much of `chunk` as belongs to the NAR and returns how many bytes that was; less than
   * `chunk.length` only once the NAR is complete (NARs are self-delimiting, as in the serve protocol).
   */
  feed(chunk: Buffer): number {
    if (this.state === State.Failed) this.fail('the parser already failed');
    try {
      return this.consume(chunk);
    } catch (error) {
      // Whatever threw (the input or a visitor), the parser's state is no longer trustworthy.
      this.state = State.Failed;
      throw error;
    }
  }

  private consume(chunk: Buffer): number {
    const end = chunk.length;
    let offset = 0;
    while (offset < end) {
      if (this.state === State.Done) return offset;

      if (this.piece === Piece.Data) {
        const count = Math.min(this.want, end - offset);
        if (this.visitor?.fileData !== undefined)
          this.visitor.fileData(chunk.subarray(offset, offset + count));
        offset += count;
        this.consumed += count;
        this.want -= count;
        if (this.want === 0) this.endOfData();
        continue;
      }

      // Gather `want` bytes: read in place if the chunk holds them all, else copied into `gathered`.
      let source: Buffer;
      let start: number;
      const want = this.want;
      if (this.gatheredLength === 0 && end - offset >= want) {
        source = chunk;
        start = offset;
        offset += want;
        this.consumed += want;
      } else {
        const count = Math.min(want - this.gatheredLength, end - offset);
        chunk.copy(this.gathered, this.gatheredLength, offset, offset + count);
        this.gatheredLength += count;
        offset += count;
        this.consumed += count;
        if (this.gatheredLength < want) return offset;
        this.gatheredLength = 0;
        source = this.gathered;
        start = 0;
      }

      switch (this.piece) {
        case Piece.Length:
          this.onLength(source.readUInt32LE(start), source.readUInt32LE(start + 4));
          break;
        case Piece.Body:
          this.checkPadding(source, start + this.tokenLength, start + want);
          this.nextToken(this.onToken(source.subarray(start, start + this.tokenLength)));
          break;
        case Piece.DataPadding:
          this.checkPadding(source, start, start + want);
          this.afterFile();
          break;
      }
    }
    return offset;
  }

  /** Declares the input complete. Throws NAR_INVALID if the NAR is truncated. */
  end(): void {
    if (this.state === State.Done) return;
    if (this.state === State.Failed) this.fail('the parser already failed');
    const where = this.piece === Piece.Data ? ` (${this.want} bytes of file contents missing)` : '';
    this.fail(`the NAR is truncated at byte ${this.consumed}: expected ${EXPECTED[this.state]}${where}`);
  }

  private fail(message: string): never {
    this.state = State.Failed;
    throw new NixFormatError('NAR_INVALID', message);
  }

  private onLength(low: number, high: number): void {
    const start = this.consumed - 8;
    this.tokenStart = start;
    if (this.state === State.Contents) {
      // 2^53 and up cannot be a real file size, and would lose precision.
      if (high >= 0x20_0000) this.fail(`file size at byte ${start} is too large`);
      this.startFile(high * 0x1_0000_0000 + low);
      return;
    }
    const limit =
      this.state === State.Name
        ? NAR_MAX_NAME_LENGTH
        : this.state === State.Target
          ? NAR_MAX_TARGET_LENGTH
          : NAR_MAX_KEYWORD_LENGTH;
    if (high !== 0 || low > limit) {
      const length = high * 0x1_0000_0000 + low;
      this.fail(
        `string of ${length} bytes at byte ${start} where ${EXPECTED[this.state]} was expected (limit ${limit} bytes)`,
      );
    }
    this.tokenLength = low;
    const bodySize = low + narPadding(low);
    if (bodySize === 0) {
      this.nextToken(this.onToken(this.gathered.subarray(0, 0)));
    } else {
      this.piece = Piece.Body;
      this.want = bodySize;
    }
  }

  /** Checks that source[from, to) is zero; `to` is the end of what was just consumed. */
  private checkPadding(source: Buffer, from: number, to: number): void {
    for (let i = from; i < to; i++) {
      if (source[i] !== 0) this.fail(`non-zero padding at byte ${this.consumed - to + i}`);
    }
  }

  private nextToken(state: State): void {
    this.state = state;
    this.piece = Piece.Length;
    this.want = 8;
  }

  private unexpected(token: Buffer): never {
    this.fail(`expected ${EXPECTED[this.state]} at byte ${this.tokenStart}, got ${describeToken(token)}`);
  }

  private expect(token: Buffer, wanted: Buffer, next: State): State {
    if (!token.equals(wanted)) this.unexpected(token);
    return next;
  }

  /** Handles a complete token; returns the state for the next one. */
  private onToken(token: Buffer): State {
    switch (this.state) {
      case State.Magic:
        return this.expect(token, K_MAGIC, State.NodeOpen);
      case State.NodeOpen:
        return this.expect(token, K_OPEN, State.TypeKeyword);
      case State.TypeKeyword:
        return this.expect(token, K_TYPE, State.Type);
      case State.Type:
        if (token.equals(K_REGULAR)) {
          this.executable = false;
          return State.RegularField;
        }
        if (token.equals(K_SYMLINK)) return State.TargetKeyword;
        if (token.equals(K_DIRECTORY)) {
          if (this.directories.length >= NAR_MAX_DEPTH) {
            this.fail(`directories nested more than ${NAR_MAX_DEPTH} deep at byte ${this.tokenStart}`);
          }
          this.directories.push({ previousName: undefined });
          this.visitor?.directory(this.path.slice());
          return State.DirectoryItem;
        }
        return this.unexpected(token);
      case State.RegularField:
        if (token.equals(K_EXECUTABLE)) return State.ExecutableValue;
        return this.expect(token, K_CONTENTS, State.Contents);
      case State.ExecutableValue:
        if (token.length !== 0) this.unexpected(token);
        this.executable = true;
        return State.ContentsKeyword;
      case State.ContentsKeyword:
        return this.expect(token, K_CONTENTS, State.Contents);
      case State.NodeClose:
        this.expect(token, K_CLOSE, State.NodeClose);
        return this.afterNode();
      case State.TargetKeyword:
        return this.expect(token, K_TARGET, State.Target);
      case State.Target:
        if (token.length === 0) this.fail(`empty symlink target at byte ${this.tokenStart}`);
        if (token.includes(0)) this.fail(`symlink target contains a NUL byte at byte ${this.tokenStart}`);
        this.visitor?.symlink(this.path.slice(), token.toString('utf8'));
        return State.NodeClose;
      case State.DirectoryItem:
        if (token.equals(K_ENTRY)) return State.EntryOpen;
        this.expect(token, K_CLOSE, State.DirectoryItem);
        this.directories.pop();
        return this.afterNode();
      case State.EntryOpen:
        return this.expect(token, K_OPEN, State.NameKeyword);
      case State.NameKeyword:
        return this.expect(token, K_NAME, State.Name);
      case State.Name:
        this.onName(token);
        return State.NodeKeyword;
      case State.NodeKeyword:
        return this.expect(token, K_NODE, State.NodeOpen);
      case State.EntryClose:
        this.expect(token, K_CLOSE, State.EntryClose);
        this.path.pop();
        return State.DirectoryItem;
      case State.Contents:
      case State.Done:
      case State.Failed:
        // Contents are handled by onLength; nothing is read in Done or Failed.
        return this.unexpected(token);
    }
  }

  private onName(name: Buffer): void {
    const at = this.tokenStart;
    if (name.length === 0) this.fail(`empty entry name at byte ${at}`);
    if (name.includes(SLASH)) this.fail(`entry name ${describeToken(name)} at byte ${at} contains "/"`);
    if (name.includes(0)) this.fail(`entry name ${describeToken(name)} at byte ${at} contains a NUL byte`);
    if ((name.length === 1 || name.length === 2) && (name.equals(DOT) || name.equals(DOT_DOT))) {
      this.fail(`invalid entry name ${describeToken(name)} at byte ${at}`);
    }
    const frame = this.directories.at(-1);
    if (frame === undefined) this.unexpected(name);
    if (frame.previousName !== undefined) {
      const order = Buffer.compare(frame.previousName, name);
      if (order === 0) this.fail(`duplicate entry name ${describeToken(name)} at byte ${at}`);
      if (order > 0) {
        this.fail(
          `NAR directory entries are not sorted: ${describeToken(name)} after ${describeToken(frame.previousName)} at byte ${at}`,
        );
      }
    }
    frame.previousName = Buffer.from(name);
    this.path.push(name.toString('utf8'));
  }

  private startFile(size: number): void {
    this.visitor?.file(this.path.slice(), size, this.executable, this.consumed);
    if (size === 0) {
      this.afterFile();
    } else {
      this.piece = Piece.Data;
      this.want = size;
      this.tokenLength = size;
    }
  }

  private endOfData(): void {
    const padding = narPadding(this.tokenLength);
    if (padding === 0) {
      this.afterFile();
    } else {
      this.piece = Piece.DataPadding;
      this.want = padding;
    }
  }

  private afterFile(): void {
    this.visitor?.fileEnd?.();
    this.nextToken(State.NodeClose);
  }

  /** A node's ")" was read: the NAR ends, or the enclosing entry must close. */
  private afterNode(): State {
    return this.path.length === 0 ? State.Done : State.EntryClose;
  }
}

/** A Writable that validates the NAR written to it; it errors at the first invalid byte or at a short end. */
export class NarValidator extends Writable {
  readonly parser: NarParser;

  constructor(visitor?: NarVisitor) {
    super();
    this.parser = new NarParser(visitor);
  }

  /** Bytes of NAR seen so far (the NarSize once finished). */
  get narSize(): number {
    return this.parser.bytesConsumed;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      this.parser.update(chunk);
    } catch (error) {
      callback(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    try {
      this.parser.end();
    } catch (error) {
      callback(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    callback();
  }
}

export function createNarValidator(visitor?: NarVisitor): NarValidator {
  return new NarValidator(visitor);
}
