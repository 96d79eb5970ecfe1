// Filesystem trees and NARs shared by the NAR tests: a tree with every entry type and every naming
// subtlety (byte-order sorting, unicode, integer-like names), built in a fresh temporary directory.

import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { narTokens } from '../../../src/nix/nar-format.js';

/** A fresh temporary directory, removed after the test (even when Nix made parts of it read-only). */
export function makeTempDir(t: { after(fn: () => void): void }, prefix = 'niche-nix-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      makeWritable(dir);
      rmSync(dir, { recursive: true, force: true });
    }
  });
  return dir;
}

/** Store paths are 0555 directories; without root, their entries cannot be removed until that is undone. */
function makeWritable(path: string): void {
  const stats = lstatSync(path);
  if (!stats.isDirectory()) return;
  chmodSync(path, 0o755);
  for (const name of readdirSync(path)) makeWritable(join(path, name));
}

/** Writes the rich test tree at `root` (which must not exist) and returns `root`. */
export function makeRichTree(root: string): string {
  mkdirSync(join(root, 'bin'), { recursive: true });
  writeFileSync(join(root, 'README'), 'read me\n');
  writeFileSync(join(root, 'bin', 'hi'), '#!/bin/sh\necho hi\n');
  chmodSync(join(root, 'bin', 'hi'), 0o755);
  // Only the owner's execute bit counts.
  writeFileSync(join(root, 'bin', 'group-exec'), 'x');
  chmodSync(join(root, 'bin', 'group-exec'), 0o654);
  writeFileSync(join(root, 'bin', 'owner-exec-only'), 'y');
  chmodSync(join(root, 'bin', 'owner-exec-only'), 0o700);
  symlinkSync('bin/hi', join(root, 'link'));
  symlinkSync('/nix/store/xrabnx1r49hn890prhx86h6iyn19p976-hello.txt', join(root, 'absolute-link'));
  symlinkSync('does/not/exist', join(root, 'dangling'));
  for (const name of [
    'a-b',
    'a.b',
    'Z',
    'a',
    'ab',
    'a b',
    'é',
    'ü-unicode',
    '日本',
    '10',
    '9',
    '__proto__',
  ]) {
    writeFileSync(join(root, name), `contents of ${name}`);
  }
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(root, 'eight-bytes'), '12345678');
  mkdirSync(join(root, 'empty-dir'));
  mkdirSync(join(root, 'deep', 'er', 'est'), { recursive: true });
  writeFileSync(join(root, 'deep', 'er', 'est', 'leaf'), 'leaf\n');
  symlinkSync('../..', join(root, 'deep', 'er', 'up'));
  // Crosses several 1 MiB chunk boundaries, and needs padding.
  const big = Buffer.alloc(2 * 1024 * 1024 + 4099);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
  writeFileSync(join(root, 'big.bin'), big);
  return root;
}

/** The 128-byte NAR of a file containing "Hello, world!\n" (PROTOCOL.md §1.5). */
export const HELLO_NAR = narTokens(
  'nix-archive-1',
  '(',
  'type',
  'regular',
  'contents',
  'Hello, world!\n',
  ')',
);
