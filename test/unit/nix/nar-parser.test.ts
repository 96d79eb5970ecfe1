import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { NixFormatError } from '../../../src/errors.js';
import { narString, narTokens } from '../../../src/nix/nar-format.js';
import {
  NarParser,
  type NarVisitor,
  createNarValidator,
  NAR_MAX_DEPTH,
} from '../../../src/nix/nar-parser.js';
import { narFromPath } from '../../../src/nix/nar-writer.js';
import { nixTestOptions, runNix } from '../../helpers/nix.js';
import { assertNixError } from './expect-error.js';
import { HELLO_NAR, makeRichTree, makeTempDir } from './fixtures.js';

type Event = ['directory', string] | ['file', string, number, boolean, number] | ['symlink', string, string];

/** Records events, and file contents by path. */
class Recorder implements NarVisitor {
  readonly events: Event[] = [];
  readonly contents = new Map<string, Buffer[]>();
  private current: Buffer[] = [];
  ended = 0;
  directory(path: readonly string[]): void {
    this.events.push(['directory', path.join('/')]);
  }
  file(path: readonly string[], size: number, executable: boolean, narOffset: number): void {
    this.events.push(['file', path.join('/'), size, executable, narOffset]);
    this.current = [];
    this.contents.set(path.join('/'), this.current);
  }
  fileData(chunk: Buffer): void {
    this.current.push(Buffer.from(chunk));
  }
  fileEnd(): void {
    this.ended++;
  }
  symlink(path: readonly string[], target: string): void {
    this.events.push(['symlink', path.join('/'), target]);
  }
  content(path: string): Buffer {
    return Buffer.concat(this.contents.get(path) ?? []);
  }
}

function parseWhole(nar: Buffer, visitor?: NarVisitor, step = nar.length || 1): NarParser {
  const parser = new NarParser(visitor);
  for (let offset = 0; offset < nar.length; offset += step)
    parser.update(nar.subarray(offset, offset + step));
  parser.end();
  return parser;
}

const dirNar = (...entries: (string | Uint8Array)[][]): Buffer =>
  narTokens(
    'nix-archive-1',
    '(',
    'type',
    'directory',
    ...entries.flatMap((entry) => ['entry', '(', 'name', ...entry, ')']),
    ')',
  );
const fileNode = (contents: string): string[] => ['node', '(', 'type', 'regular', 'contents', contents, ')'];

describe('NarParser', () => {
  it('parses the hello.txt NAR', () => {
    const recorder = new Recorder();
    const parser = parseWhole(HELLO_NAR, recorder);
    assert.deepEqual(recorder.events, [['file', '', 14, false, 96]]);
    assert.equal(recorder.content('').toString(), 'Hello, world!\n');
    assert.equal(recorder.ended, 1);
    assert.equal(parser.bytesConsumed, 128);
    assert.equal(parser.done, true);
  });

  it('gives the same events however the input is split', async (t) => {
    const root = makeRichTree(join(makeTempDir(t), 'tree'));
    const nar = await buffer(narFromPath(root));
    const reference = new Recorder();
    parseWhole(nar, reference);
    for (const step of [1, 3, 8, 13, 4096, 1 << 20]) {
      const recorder = new Recorder();
      parseWhole(nar, recorder, step);
      assert.deepEqual(recorder.events, reference.events, `step ${step}`);
    }
    assert.ok(reference.content('big.bin').equals(readFileSync(join(root, 'big.bin'))));
    assert.equal(reference.content('bin/hi').toString(), '#!/bin/sh\necho hi\n');
    const files = reference.events.filter((event) => event[0] === 'file');
    assert.equal(reference.ended, files.length);
    // Sorted bytewise: upper case first, "a b" < "a-b" < "a.b" < "ab", "10" < "9", UTF-8 last.
    const topLevel = reference.events
      .map((event) => event[1])
      .filter((path) => path !== '' && !path.includes('/'));
    assert.deepEqual(
      topLevel,
      [...topLevel].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))),
    );
    assert.deepEqual(topLevel.slice(0, 4), ['10', '9', 'README', 'Z']);
    assert.ok(reference.events.some((e) => e[0] === 'file' && e[1] === 'bin/hi' && e[3]));
    assert.ok(reference.events.some((e) => e[0] === 'file' && e[1] === 'bin/owner-exec-only' && e[3]));
    assert.ok(reference.events.some((e) => e[0] === 'file' && e[1] === 'bin/group-exec' && !e[3]));
    assert.deepEqual(
      reference.events.find((e) => e[1] === 'deep/er/up'),
      ['symlink', 'deep/er/up', '../..'],
    );
    // narOffset points at the first content byte.
    for (const event of files) {
      const [, path, size, , offset] = event;
      assert.ok(nar.subarray(offset, offset + size).equals(reference.content(path)), path);
      assert.equal(nar.readUInt32LE(offset - 8), size);
    }
  });

  it('parses what `nix-store --dump` writes', nixTestOptions(), async (t) => {
    const root = makeRichTree(join(makeTempDir(t), 'tree'));
    const { stdout: nar } = await runNix('nix-store', ['--dump', root]);
    const recorder = new Recorder();
    const parser = parseWhole(nar, recorder, 65_536);
    assert.equal(parser.bytesConsumed, nar.length);
    assert.ok(recorder.events.length > 25);
  });

  it('validates through a Writable and reports the NAR size', async (t) => {
    const root = makeRichTree(join(makeTempDir(t), 'tree'));
    const recorder = new Recorder();
    const validator = createNarValidator(recorder);
    await pipeline(narFromPath(root), validator);
    const nar = await buffer(narFromPath(root));
    assert.equal(validator.narSize, nar.length);
    assert.ok(recorder.events.length > 25);

    const truncated = createNarValidator();
    await assert.rejects(pipeline(Readable.from([nar.subarray(0, 1000)]), truncated), (error: unknown) => {
      assert.ok(error instanceof NixFormatError);
      assert.equal(error.code, 'NAR_INVALID');
      assert.match(error.message, /truncated at byte 1000/);
      return true;
    });
    const garbage = createNarValidator();
    await assert.rejects(
      pipeline(Readable.from([Buffer.from('not a nar at all')]), garbage),
      /NAR|nix-archive/,
    );
  });

  it('feed() stops at the end of the NAR, for self-delimited streams', () => {
    const parser = new NarParser();
    const input = Buffer.concat([HELLO_NAR, Buffer.from('next message')]);
    assert.equal(parser.feed(input.subarray(0, 100)), 100);
    assert.equal(parser.feed(input.subarray(100)), 28);
    assert.equal(parser.done, true);
    assert.equal(parser.feed(Buffer.from('more')), 0);
  });

  it('skips file contents by length instead of scanning them', () => {
    // A 4 GiB file in 1 MiB chunks (the same buffer over and over).
    const size = 4 * 1024 * 1024 * 1024;
    const chunk = Buffer.alloc(1 << 20);
    const parser = new NarParser({ directory() {}, file() {}, symlink() {} });
    parser.update(narTokens('nix-archive-1', '(', 'type', 'regular', 'contents'));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(size));
    parser.update(length);
    const started = performance.now();
    for (let sent = 0; sent < size; sent += chunk.length) parser.update(chunk);
    parser.update(narString(')'));
    parser.end();
    assert.ok(performance.now() - started < 2000, 'parsing 4 GiB of contents took too long');
    assert.equal(parser.bytesConsumed, 24 + 16 * 4 + 8 + size + 16);
  });
});

describe('NarParser rejects invalid NARs', () => {
  const rejects = (nar: Buffer, message: RegExp): void => {
    for (const step of [nar.length || 1, 1, 5]) {
      assertNixError(() => parseWhole(nar, undefined, step), 'NAR_INVALID', message);
    }
  };

  it('bad magic', () => {
    rejects(
      narTokens('nix-archive-2', '(', 'type', 'regular', 'contents', '', ')'),
      /expected the magic "nix-archive-1" at byte 0, got "nix-archive-2"/,
    );
    rejects(Buffer.from('\x1f\x8b\x08\x00 gzip data here!'), /magic/);
  });

  it('truncated input at every length', () => {
    for (let length = 0; length < HELLO_NAR.length; length++) {
      const parser = new NarParser();
      parser.update(HELLO_NAR.subarray(0, length));
      assertNixError(
        () => {
          parser.end();
        },
        'NAR_INVALID',
        new RegExp(`truncated at byte ${length}`),
      );
    }
  });

  it('data after the root node', () => {
    rejects(
      Buffer.concat([HELLO_NAR, Buffer.alloc(8)]),
      /unexpected data after the end of the NAR at byte 128/,
    );
    rejects(Buffer.concat([HELLO_NAR, HELLO_NAR]), /after the end/);
  });

  it('unexpected tokens', () => {
    rejects(
      narTokens('nix-archive-1', '[', 'type', 'regular', 'contents', '', ')'),
      /expected "\(" at byte 24, got "\["/,
    );
    rejects(narTokens('nix-archive-1', '(', 'kind', 'regular'), /expected "type"/);
    rejects(
      narTokens('nix-archive-1', '(', 'type', 'fifo', ')'),
      /expected "regular", "symlink" or "directory".*"fifo"/,
    );
    rejects(narTokens('nix-archive-1', '(', 'type', 'regular', ')'), /expected "executable" or "contents"/);
    rejects(
      narTokens('nix-archive-1', '(', 'type', 'regular', 'contents', 'x', 'executable', ''),
      /expected "\)"/,
    );
    rejects(narTokens('nix-archive-1', '(', 'type', 'symlink', 'contents', 'x', ')'), /expected "target"/);
    rejects(narTokens('nix-archive-1', '(', 'type', 'directory', 'entry', '(', 'node'), /expected "name"/);
    rejects(dirNar(['a', 'nod', '(']), /expected "node"/);
    rejects(narTokens('nix-archive-1', '(', 'type', 'directory', 'name', 'a'), /expected "entry" or "\)"/);
    rejects(
      narTokens(
        'nix-archive-1',
        '(',
        'type',
        'directory',
        'entry',
        '(',
        'name',
        'a',
        'node',
        '(',
        'type',
        'directory',
        ')',
        'x',
      ),
      /expected "\)"/,
    );
  });

  it('a bad executable marker', () => {
    rejects(
      narTokens('nix-archive-1', '(', 'type', 'regular', 'executable', '1', 'contents', '', ')'),
      /expected the empty executable marker ""/,
    );
    rejects(
      narTokens('nix-archive-1', '(', 'type', 'regular', 'executable', '', 'executable', ''),
      /expected "contents"/,
    );
  });

  it('non-zero padding in tokens and in contents', () => {
    const badTokenPadding = Buffer.from(HELLO_NAR);
    badTokenPadding[0x15] = 1; // after "nix-archive-1"
    rejects(badTokenPadding, /non-zero padding at byte 21/);
    const badDataPadding = Buffer.from(HELLO_NAR);
    badDataPadding[0x6f] = 0xff; // after "Hello, world!\n"
    rejects(badDataPadding, /non-zero padding at byte 111/);
  });

  it('unsorted and duplicate entries', () => {
    rejects(dirNar(['c', ...fileNode('')], ['b', ...fileNode('')]), /not sorted: "b" after "c"/);
    rejects(dirNar(['a', ...fileNode('')], ['a', ...fileNode('')]), /duplicate entry name "a"/);
    // JavaScript's default sort would put "é" (U+00E9) before "ü"; bytes agree here, but "Z" < "a" bytewise.
    rejects(dirNar(['a', ...fileNode('')], ['Z', ...fileNode('')]), /not sorted/);
    assert.doesNotThrow(() => parseWhole(dirNar(['Z', ...fileNode('')], ['a', ...fileNode('')])));
    // Sortedness is per directory.
    const nested = narTokens(
      'nix-archive-1',
      '(',
      'type',
      'directory',
      'entry',
      '(',
      'name',
      'b',
      'node',
      '(',
      'type',
      'directory',
      'entry',
      '(',
      'name',
      'z',
      'node',
      '(',
      'type',
      'symlink',
      'target',
      'x',
      ')',
      ')',
      ')',
      ')',
      'entry',
      '(',
      'name',
      'c',
      'node',
      '(',
      'type',
      'directory',
      'entry',
      '(',
      'name',
      'a',
      'node',
      '(',
      'type',
      'symlink',
      'target',
      'x',
      ')',
      ')',
      ')',
      ')',
      ')',
    );
    assert.doesNotThrow(() => parseWhole(nested));
  });

  it('bad entry names', () => {
    rejects(dirNar(['', ...fileNode('')]), /empty entry name/);
    rejects(dirNar(['.', ...fileNode('')]), /invalid entry name "\."/);
    rejects(dirNar(['..', ...fileNode('')]), /invalid entry name "\.\."/);
    rejects(dirNar(['a/b', ...fileNode('')]), /contains "\/"/);
    rejects(dirNar(['/', ...fileNode('')]), /contains "\/"/);
    rejects(dirNar(['a\0b', ...fileNode('')]), /NUL/);
    rejects(
      dirNar(['n'.repeat(256), ...fileNode('')]),
      /string of 256 bytes .* where an entry name was expected \(limit 255 bytes\)/,
    );
    assert.doesNotThrow(() => parseWhole(dirNar(['n'.repeat(255), ...fileNode('')])));
    assert.doesNotThrow(() => parseWhole(dirNar(['...', ...fileNode('')])));
  });

  it('bad symlink targets', () => {
    const link = (target: string): Buffer =>
      narTokens('nix-archive-1', '(', 'type', 'symlink', 'target', target, ')');
    rejects(link(''), /empty symlink target/);
    rejects(link('a\0b'), /NUL/);
    rejects(link('t'.repeat(4096)), /limit 4095 bytes/);
    assert.doesNotThrow(() => parseWhole(link('t'.repeat(4095))));
  });

  it('absurd lengths, as soon as the length word arrives', () => {
    const parser = new NarParser();
    parser.update(narString('nix-archive-1'));
    const huge = Buffer.alloc(8);
    huge.writeBigUInt64LE(1n << 40n);
    assertNixError(
      () => {
        parser.update(huge);
      },
      'NAR_INVALID',
      /string of 1099511627776 bytes at byte 24 where "\(" was expected/,
    );
    assertNixError(
      () => {
        parser.update(Buffer.alloc(8));
      },
      'NAR_INVALID',
      /already failed/,
    );

    const tooBig = Buffer.alloc(8);
    tooBig.writeBigUInt64LE(1n << 53n);
    rejects(
      Buffer.concat([narTokens('nix-archive-1', '(', 'type', 'regular', 'contents'), tooBig]),
      /file size at byte 88 is too large/,
    );
  });

  it('directories nested too deep', () => {
    const depth = NAR_MAX_DEPTH + 1;
    const tokens = ['nix-archive-1'];
    for (let level = 0; level < depth; level++) {
      tokens.push('(', 'type', 'directory', 'entry', '(', 'name', 'd', 'node');
    }
    rejects(narTokens(...tokens), /nested more than 256 deep/);
  });

  it('visitor errors propagate', () => {
    const parser = new NarParser({
      directory() {},
      file() {
        throw new Error('visitor says no');
      },
      symlink() {},
    });
    assert.throws(() => {
      parser.update(HELLO_NAR);
    }, /visitor says no/);
    assertNixError(
      () => {
        parser.update(HELLO_NAR);
      },
      'NAR_INVALID',
      /already failed/,
    );
  });
});
