// The `<hash>.ls` listing of a local store path (PROTOCOL.md §7.1), built from file metadata alone: the
// offsets of file contents in the NAR follow from the names, sizes and types, so no file is read. The walk
// is the one the NAR writer makes (entries in byte order), and the events feed the same NarListingBuilder
// that listings of uploaded NARs use, so the JSON is byte for byte what Nix writes.
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { NixFormatError } from '../errors.js';
import { NAR_MAGIC, narPadding, narStringSize } from '../nix/nar-format.js';
import { NarListingBuilder } from '../nix/nar-listing.js';

const S_IXUSR = 0o100;
/** How long synchronous metadata calls may hold the event loop before the walk lets other work run. */
const TIME_SLICE_MS = 4;

const size = (token: string): number => narStringSize(Buffer.byteLength(token, 'latin1'));
// NAR bytes before and after the variable parts of each node shape (see nar-writer.ts for the grammar).
const MAGIC = size(NAR_MAGIC);
const NODE_OPEN = size('(') + size('type');
const CLOSE = size(')');
const REGULAR_HEAD = size('regular');
const EXECUTABLE = size('executable') + size('');
const CONTENTS_HEAD = size('contents') + 8; // the keyword, then the contents' length word
const SYMLINK_HEAD = size('symlink') + size('target');
const DIRECTORY_HEAD = size('directory');
const ENTRY_OPEN = size('entry') + size('(') + size('name');
const NODE_KEYWORD = size('node');

interface Frame {
  readonly path: Buffer;
  readonly names: string[];
  readonly entries: Buffer[];
  index: number;
}

/** The listing of the tree at `root`, exactly as Nix 2.8 writes it. */
export async function listPath(root: string): Promise<string> {
  const builder = new NarListingBuilder();
  let offset = MAGIC;
  let sliceStart = performance.now();
  const stack: Frame[] = [];
  const names: string[] = [];
  let current: Buffer | undefined = Buffer.from(root);

  while (current !== undefined) {
    if (performance.now() - sliceStart > TIME_SLICE_MS) {
      await nextMacrotask();
      sliceStart = performance.now();
    }
    const stats = lstatSync(current);
    offset += NODE_OPEN;
    if (stats.isDirectory()) {
      builder.directory([...names]);
      offset += DIRECTORY_HEAD;
      const entries = readdirSync(current, { encoding: 'buffer' }).sort((a, b) => Buffer.compare(a, b));
      stack.push({ path: current, names: entries.map((e) => e.toString('utf8')), entries, index: 0 });
    } else {
      if (stats.isFile()) {
        offset += REGULAR_HEAD + ((stats.mode & S_IXUSR) !== 0 ? EXECUTABLE : 0) + CONTENTS_HEAD;
        builder.file([...names], stats.size, (stats.mode & S_IXUSR) !== 0, offset);
        offset += stats.size + narPadding(stats.size);
      } else if (stats.isSymbolicLink()) {
        const target = readlinkSync(current, { encoding: 'buffer' });
        builder.symlink([...names], target.toString('utf8'));
        offset += SYMLINK_HEAD + narStringSize(target.length);
      } else {
        throw new NixFormatError(
          'NAR_INVALID',
          `cannot list ${current.toString('utf8')}: it is not a regular file, symlink or directory`,
        );
      }
      offset += CLOSE;
      if (names.length > 0) offset += CLOSE; // the entry around it
    }

    // Next: the next entry of the innermost directory with entries left, closing finished directories.
    current = undefined;
    for (let frame = stack.at(-1); frame !== undefined; frame = stack.at(-1)) {
      const entry = frame.entries[frame.index];
      const name = frame.names[frame.index];
      if (entry !== undefined && name !== undefined) {
        frame.index++;
        names.length = stack.length - 1;
        names.push(name);
        offset += ENTRY_OPEN + narStringSize(entry.length) + NODE_KEYWORD;
        current = Buffer.concat([frame.path, Buffer.from('/'), entry]);
        break;
      }
      stack.pop();
      offset += CLOSE;
      if (stack.length > 0) offset += CLOSE; // a directory that is itself an entry closes that too
    }
  }
  return builder.toString();
}
